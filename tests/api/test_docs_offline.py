"""/docs works offline (issue 13): Swagger UI's page refers only to assets the service serves
itself, no CDN."""

from __future__ import annotations

import re

import httpx

from estatewatch.service import Service


def test_docs_need_no_internet(service: Service) -> None:
    client = httpx.Client(base_url=service.url)
    page = client.get("/docs")
    assert page.status_code == 200
    refs = re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", page.text)
    refs += re.findall(r"""url:\\s*['"]([^'"]+)['"]""", page.text)
    assert refs and all(r.startswith("/") for r in refs), refs  # nothing from another host
    assert "cdn.jsdelivr.net" not in page.text and "unpkg.com" not in page.text
    for ref in refs:
        got = client.get(ref)
        assert got.status_code == 200 and len(got.content) > 100, ref
    js = client.get("/docs/assets/swagger-ui-bundle.js")
    assert "SwaggerUIBundle" in js.text and js.headers["content-type"].startswith("text/javascript")
    assert client.get("/docs/assets/..%2F..%2Fetc%2Fpasswd").status_code == 404
    assert client.get("/docs/assets/index.html").status_code == 404
