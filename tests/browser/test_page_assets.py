"""The page's message catalog and assets, without a browser: every label the scripts ask for
exists in zh-CN and English with the same placeholders; every code the service can send
(severities, hazards, dead-letter reasons, catalog enum values, roles) has a label; nothing is
fetched from outside the service."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from alerts.plans.model import BUNDLED_PLANS
from alerts.rules.spec import Severity
from alerts.weather.levels import Hazard
from api.users import Role
from protocol.catalog import ValueType, default_catalog
from protocol.messages import Reason

STATIC = Path(__file__).resolve().parents[2] / "api" / "static"
MESSAGES = json.loads((STATIC / "messages.json").read_text(encoding="utf-8"))
ZH, EN = MESSAGES["zh-CN"], MESSAGES["en"]
SCRIPTS = sorted(STATIC.rglob("*.js"))


def source() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in [*SCRIPTS, STATIC / "index.html"])


def test_both_languages_have_the_same_labels_and_placeholders() -> None:
    assert set(ZH) == set(EN)
    for key in ZH:
        assert ZH[key].strip() and EN[key].strip(), key
        assert set(re.findall(r"\{(\w+)\}", ZH[key])) == set(re.findall(r"\{(\w+)\}", EN[key])), key


def test_every_label_the_page_asks_for_exists() -> None:
    text = source()
    literal = set(re.findall(r"""\bt\(\s*["']([a-z0-9_.]+)["']""", text))
    literal |= set(re.findall(r'data-i18n="([^"]+)"', text))
    # t(cond ? "a.b" : "c.d") and similar: every quoted key-shaped string inside a t( ... )
    for call in re.findall(r"\bt\(([^()]*\?[^()]*)\)", text):
        literal |= set(re.findall(r'"([a-z_]+\.[a-z0-9_.]+)"', call))
    # t("severity." + s): a prefix the code completes; the codes are checked below
    prefixes = {k for k in literal if k.endswith(".")}
    assert not sorted(p for p in prefixes if not any(k.startswith(p) for k in ZH))
    missing = sorted(k for k in literal - prefixes if k not in ZH)
    assert not missing
    assert len(literal) > 150


def test_every_code_the_service_sends_has_a_label() -> None:
    keys = set(ZH)
    cat = default_catalog()
    enum_values = {
        v for k in cat.kinds.values() for m in k.metrics.values() if m.type is ValueType.ENUM
        for v in m.values
    }  # fmt: skip
    task_roles = {
        task["role"]
        for path in BUNDLED_PLANS.glob("*.yaml")
        for level in yaml.safe_load(path.read_text(encoding="utf-8"))["levels"].values()
        for task in level["tasks"]
    }
    wanted = (
        {f"severity.{s.value}" for s in Severity}
        | {f"hazard.{h.value}" for h in Hazard}
        | {f"deadletter.reason.{r.value}" for r in Reason}
        | {f"enum.{v}" for v in enum_values}
        | {f"role.{r.value}" for r in Role}
        | {f"role.{r}" for r in task_roles}
        | {f"weather.level.{c}" for c in ("none", "blue", "yellow", "orange", "red")}
        | {f"chart.res.{r}" for r in ("raw", "1m", "1h")}
    )
    assert sorted(wanted - keys) == []


def test_nothing_is_fetched_from_outside_the_service() -> None:
    svg_namespace = "http://www.w3.org/2000/svg"  # an XML name, never fetched
    for path in [*SCRIPTS, *STATIC.glob("*.html"), *STATIC.glob("*.css")]:
        text = path.read_text(encoding="utf-8").replace(svg_namespace, "")
        assert not re.search(r"https?://|//cdn|@import", text), path.name


def test_every_script_import_and_page_asset_exists() -> None:
    for path in SCRIPTS:
        for target in re.findall(r'from\s+"(\.[^"]+)"', path.read_text(encoding="utf-8")):
            assert (path.parent / target).resolve().is_file(), f"{path.name} imports {target}"
    index = (STATIC / "index.html").read_text(encoding="utf-8")
    for target in re.findall(r'(?:src|href)="/static/([^"]+)"', index):
        assert (STATIC / target).is_file(), target
