"""Estate specs: which devices an estate has, as data (``simulators/specs/*.toml``).

A spec names the estate, its gateway and climate, and counts devices per building group, per
e-bike charging shed and for the estate-wide plant. :func:`load_spec` expands it into device ids;
a mistake raises :class:`SpecError` naming the file and what to change.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol.catalog import Catalog, default_catalog
from protocol.topics import is_valid_id
from simulators.datafile import TableChecker

SPECS_DIR = Path(__file__).with_name("specs")

# Short device-id stems, so ids read like what a site engineer writes on a label.
BUILDING_STEMS = {
    "elevator": "lift",
    "fire_hydrant": "hydrant",
    "sprinkler": "sprinkler",
    "smoke_detector": "smoke",
    "fire_door": "door",
    "water_pressure": "water",
    "room_temp": "room",
    "pipe_temp": "pipe",
    "gas_detector": "gas",
    "ebike_camera": "cam",
    "ebike_charger": "ebc-s",
    "floor_heating": "floorheat",
}
PLANT_STEMS = {
    "fire_panel": "fire-panel",
    "fire_pump": "fire-pump",
    "fire_water_tank": "fire-tank",
    "fire_lane_monitor": "fire-lane",
    "heating_station": "heating",
    "power_meter": "power",
    "water_tank": "water-tank",
    "gas_detector": "gas",
    "telecom_cabinet": "telecom",
    "weather_station": "ws",
    "smoke_detector": "smoke",
}


class SpecError(ValueError):
    """A spec file that cannot be used; the message names the file and the problem."""


_SEASON_RE = re.compile(r"(\d\d)-(\d\d)/(\d\d)-(\d\d)")
_MONTH_STARTS = (0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334)


def _season_days(text: str) -> tuple[int, int]:
    m = _SEASON_RE.fullmatch(text)
    if m is None:
        raise ValueError(f"heating season {text!r}: write it as MM-DD/MM-DD, e.g. 10-15/04-15")
    a, b, c, d = (int(x) for x in m.groups())
    if not (1 <= a <= 12 and 1 <= c <= 12 and 1 <= b <= 31 and 1 <= d <= 31):
        raise ValueError(f"heating season {text!r}: no such date")
    return _MONTH_STARTS[a - 1] + b - 1, _MONTH_STARTS[c - 1] + d - 1


@dataclass(frozen=True)
class Climate:
    """Monthly means of REFERENCE.md §6; the simulator draws a seasonal and a daily cycle.
    ``heating_season``: "MM-DD/MM-DD", the days the estate's heating runs (Hohhot's by
    default; Hailar's runs 09-15/05-15)."""

    january_mean_c: float
    july_mean_c: float = 23.5
    diurnal_range_c: float = 12.0
    heating_season: str = "10-15/04-15"
    # The coldest a cold spell of a cold year reaches (NaN: no cold spells below the cycle).
    cold_spell_min_c: float = math.nan

    def season_days(self) -> tuple[int, int]:
        """The heating season's first and last day of the year (0-based, a common year)."""
        return _season_days(self.heating_season)


@dataclass(frozen=True)
class Device:
    id: str
    kind: str
    building: int = 0  # 0 = estate-wide plant or a charging shed
    floors: int = 1

    def __iter__(self) -> Iterator[str]:
        """``for dev, kind in spec.devices``: the (id, kind) pair most callers need."""
        return iter((self.id, self.kind))


@dataclass(frozen=True)
class EstateSpec:
    estate: str
    name: str
    region: str
    gateway: str
    climate: Climate
    devices: tuple[Device, ...] = field(default=())
    source: str = "<code>"
    zone: str = ""  # the climate zone the estate names (alerts/zones.yaml), e.g. "hohhot"

    @property
    def january_mean_c(self) -> float:
        return self.climate.january_mean_c

    def kinds(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for d in self.devices:
            out[d.kind] = out.get(d.kind, 0) + 1
        return out


def _building_devices(b: int, floors: int, counts: dict[str, int]) -> list[Device]:
    out: list[Device] = []
    for kind, n in counts.items():
        stem = BUILDING_STEMS[kind]
        for i in range(1, n + 1):
            dev = f"b{b}-{stem}{i:02d}" if kind == "ebike_charger" else f"b{b}-{stem}-{i}"
            out.append(Device(dev, kind, b, floors))
    return out


def _plant_devices(counts: dict[str, int]) -> list[Device]:
    out: list[Device] = []
    for kind, n in counts.items():
        stem = PLANT_STEMS[kind]
        out += [Device(f"{stem}-{i}", kind) for i in range(1, n + 1)]
    return out


def small_estate(
    estate: str,
    name: str,
    region: str,
    january_mean_c: float,
    buildings: int = 3,
    gateway: str = "gw-01",
    zone: str = "",
) -> EstateSpec:
    """About 15 devices a building plus the shared plant: every family is present."""
    plant = {k: 1 for k in PLANT_STEMS if k != "smoke_detector"}
    per_building = {
        "elevator": 1,
        "fire_hydrant": 2,
        "sprinkler": 1,
        "smoke_detector": 1,
        "fire_door": 1,
        "water_pressure": 1,
        "room_temp": 1,
        "pipe_temp": 1,
        "ebike_camera": 1,
        "ebike_charger": 4,
    }
    devices = _plant_devices(plant)
    for b in range(1, buildings + 1):
        devices += _building_devices(b, 6, per_building)
    return EstateSpec(
        estate, name, region, gateway, Climate(january_mean_c), tuple(devices), zone=zone
    )


class _SpecLoader(TableChecker):
    def __init__(self, source: str, catalog: Catalog) -> None:
        self.source = source
        self.catalog = catalog

    def fail(self, where: str, what: str) -> SpecError:
        return SpecError(f"estate spec {self.source}: {where}: {what}")

    def count(self, value: Any, where: str, lo: int = 0, hi: int = 100_000) -> int:
        if type(value) is not int or not lo <= value <= hi:
            raise self.fail(where, f"must be a whole number from {lo} to {hi}, got {value!r}")
        return value

    def groups(
        self, doc: dict[str, Any], name: str, keys: set[str]
    ) -> Iterator[tuple[str, dict[str, Any], int]]:
        """Each table of the array ``[[name]]`` (keys: ``count`` and ``keys``), checked: where
        it stands, the table and its count."""
        groups = doc.get(name, [])
        if not isinstance(groups, list):
            raise self.fail(name, f"must be an array of tables: [[{name}]]")
        for gi, group in enumerate(groups):
            where = f"[[{name}]] #{gi + 1}"
            g = self.table(group, where, {"count"} | keys)
            yield where, g, self.count(g.get("count"), f"{where}.count", 1)

    def counts(self, value: Any, where: str, stems: dict[str, str]) -> dict[str, int]:
        tbl = self.table(value, where, set(stems) | set(self.catalog.kinds))
        out: dict[str, int] = {}
        for kind, n in tbl.items():
            if kind not in stems:
                raise self.fail(
                    f"{where}.{kind}",
                    f"this kind does not belong here (allowed: {', '.join(sorted(stems))})",
                )
            out[kind] = self.count(n, f"{where}.{kind}")
        return out

    def text(self, tbl: dict[str, Any], key: str, where: str) -> str:
        value = tbl.get(key)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(f"{where}.{key}", "must be a non-empty string")
        return value

    def number(self, tbl: dict[str, Any], key: str, where: str, default: float | None) -> float:
        value: Any = tbl.get(key, default)
        if type(value) not in (int, float):
            raise self.fail(f"{where}.{key}", f"must be a number, got {value!r}")
        return float(value)

    def load(self, doc: dict[str, Any]) -> EstateSpec:
        self.table(doc, "top level", {"estate", "climate", "buildings", "sheds", "plant"})
        est = self.table(doc.get("estate"), "[estate]", {"id", "name", "region", "gateway", "zone"})
        estate_id = self.text(est, "id", "estate")
        gateway = est.get("gateway", "gw-01")
        for what, value in (("id", estate_id), ("gateway", gateway)):
            if not isinstance(value, str) or not is_valid_id(value):
                raise self.fail(f"estate.{what}", f"{value!r} must match [a-z0-9][a-z0-9-]{{0,62}}")
        cl = self.table(
            doc.get("climate", {}),
            "[climate]",
            {
                "january_mean_c",
                "july_mean_c",
                "diurnal_range_c",
                "heating_season",
                "cold_spell_min_c",
            },
        )
        season = cl.get("heating_season", "10-15/04-15")
        try:
            _season_days(season if isinstance(season, str) else "")
        except ValueError as exc:
            raise self.fail("climate.heating_season", str(exc)) from None
        climate = Climate(
            self.number(cl, "january_mean_c", "climate", -11.0),
            self.number(cl, "july_mean_c", "climate", 23.5),
            self.number(cl, "diurnal_range_c", "climate", 12.0),
            season,
            self.number(cl, "cold_spell_min_c", "climate", math.nan),
        )
        devices = _plant_devices(self.counts(doc.get("plant", {}), "[plant]", PLANT_STEMS))
        b = 0
        for where, g, n in self.groups(doc, "buildings", {"floors", "devices", "heating"}):
            floors = self.count(g.get("floors", 6), f"{where}.floors", 1, 200)
            counts = self.counts(g.get("devices", {}), f"{where}.devices", BUILDING_STEMS)
            # Floor heating is an attribute of a building: its heat comes through a unit of
            # its own (kind floor_heating), watched with the floor-heating thresholds.
            heating = g.get("heating", "radiator")
            if heating not in ("radiator", "floor"):
                raise self.fail(f"{where}.heating", f"{heating!r}: use radiator or floor")
            if heating == "floor":
                counts.setdefault("floor_heating", 1)
            for _ in range(n):
                b += 1
                devices += _building_devices(b, floors, counts)
        s = 0
        for where, g, n in self.groups(doc, "sheds", {"sockets", "cameras"}):
            sockets = self.count(g.get("sockets"), f"{where}.sockets", 1, 500)
            cameras = self.count(g.get("cameras", 0), f"{where}.cameras", 0, 50)
            for _ in range(n):
                s += 1
                devices += [Device(f"shed{s}-s{i:02d}", "ebike_charger") for i in range(sockets)]
                devices += [Device(f"shed{s}-cam-{i}", "ebike_camera") for i in range(cameras)]
        if not devices:
            raise self.fail(
                "top level", "defines no devices: add [plant], [[buildings]] or [[sheds]]"
            )
        return EstateSpec(
            estate=estate_id,
            name=est.get("name", estate_id),
            region=est.get("region", ""),
            gateway=gateway,
            climate=climate,
            devices=tuple(devices),
            source=self.source,
            zone=est.get("zone", ""),
        )


def resolve(name_or_path: str, folder: Path, what: str) -> Path:
    """A path as given, else a bundled file by name (``small`` → ``specs/small.toml``)."""
    path = Path(name_or_path)
    if path.exists():
        return path
    bundled = folder / f"{name_or_path.removesuffix('.toml')}.toml"
    if bundled.exists():
        return bundled
    known = ", ".join(sorted(p.stem for p in folder.glob("*.toml")))
    raise SpecError(
        f"{what} {name_or_path!r}: no such file and no bundled {what} of that name "
        f"(bundled: {known})"
    )


def load_spec(name_or_path: str | Path, catalog: Catalog | None = None) -> EstateSpec:
    path = resolve(str(name_or_path), SPECS_DIR, "estate spec")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SpecError(f"estate spec {path}: cannot read it as TOML: {exc}") from exc
    return _SpecLoader(str(path), catalog or default_catalog()).load(doc)
