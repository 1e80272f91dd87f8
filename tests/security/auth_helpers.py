"""Helpers of the authentication and credential adversary tests (test_auth, test_credentials):
an admin client, users, logins, and a live stream read on a thread of its own."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from estatewatch.service import Service

ADMIN_TOKEN = "test-admin-token-0123456789"  # tests/conftest.py's service_settings
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@contextmanager
def admin(service: Service) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.url, headers=ADMIN, timeout=30) as c:
        yield c


def make_user(
    service: Service, username: str, role: str, estates: list[str], password: str
) -> None:
    with admin(service) as api:
        r = api.post(
            "/api/v1/users",
            json={"username": username, "role": role, "estates": estates, "password": password},
        )
    assert r.status_code == 201, r.text


def login(service: Service, username: str, password: str) -> str:
    r = httpx.post(
        f"{service.url}/api/v1/login",
        json={"username": username, "password": password},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return str(r.json()["token"])


def wait_until(check: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


@dataclass
class Stream:
    status: int = 0
    events: list[str] = field(default_factory=list)
    hello: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)
    response: httpx.Response | None = None


@contextmanager
def open_stream(service: Service, token: str, path: str = "/api/v1/stream") -> Iterator[Stream]:
    """A live stream read on a thread; ``ended`` is set when the service ends it."""
    got = Stream()
    stop = threading.Event()

    def read() -> None:
        try:
            with httpx.stream(
                "GET",
                f"{service.url}{path}",
                headers={"Authorization": f"Bearer {token}"},
                timeout=httpx.Timeout(5, read=60),
            ) as r:
                got.response = r
                got.status = r.status_code
                for line in r.iter_lines():
                    if line.startswith("event: "):
                        got.events.append(line[7:])
                        if line == "event: hello":
                            got.hello.set()
                    if stop.is_set():
                        return
        except httpx.HTTPError:
            pass
        finally:
            got.ended.set()

    t = threading.Thread(target=read, daemon=True)
    t.start()
    assert got.hello.wait(10), f"no stream (status {got.status})"
    try:
        yield got
    finally:
        stop.set()
        if got.response is not None:  # hang up now, not at the next keepalive
            # Closing the response from this thread does not wake the reader blocked in
            # recv(); shutting the socket down does, so the thread ends at once (not after
            # the join's 5 s: that was 5 s per stream).
            network = got.response.extensions.get("network_stream")
            sock = network.get_extra_info("socket") if network is not None else None
            with contextlib.suppress(Exception):
                if sock is not None:
                    sock.shutdown(socket.SHUT_RDWR)
                got.response.close()
        t.join(5)


def as_user(service: Service, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=service.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


def body(r: httpx.Response) -> Any:
    return r.json()
