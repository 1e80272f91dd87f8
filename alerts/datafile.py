"""Reading the alerts' data files (rules, plans, weather criteria): YAML with line numbers.

Every problem found in a data file is reported as ``file:line: problem`` so that whoever edits
a rule or a plan can find it; the loaders raise :class:`DataFileError` and never half-apply.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "DataFileError",
    "Node",
    "format_duration",
    "load_yaml",
    "parse_duration",
]

_DURATION_RE = re.compile(r"(\d+)(ms|s|m|h|d)")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


class DataFileError(ValueError):
    """A data file with a mistake; ``problems`` are ``file:line: what`` lines."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class _LineDict(dict[str, Any]):
    """A YAML mapping that remembers the line of each key (1-based)."""

    line: int
    key_lines: dict[str, int]


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    pass


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> _LineDict:
    loader.flatten_mapping(node)
    out = _LineDict()
    out.line = node.start_mark.line + 1
    out.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        out[str(key)] = loader.construct_object(value_node, deep=True)
        out.key_lines[str(key)] = key_node.start_mark.line + 1
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class Node:
    """A value read from a data file with where it came from, for error messages."""

    __slots__ = ("file", "line", "path", "value")

    def __init__(self, value: Any, file: str, line: int, path: str) -> None:
        self.value = value
        self.file = file
        self.line = line
        self.path = path

    def error(self, problem: str) -> DataFileError:
        where = f" ({self.path})" if self.path else ""
        return DataFileError([f"{self.file}:{self.line}: {problem}{where}"])

    # --- shape ---------------------------------------------------------------------------------
    def is_map(self) -> bool:
        return isinstance(self.value, dict)

    def mapping(self, allowed: frozenset[str] | None = None) -> Node:
        if not isinstance(self.value, dict):
            raise self.error(f"expected a mapping, got {_type_name(self.value)}")
        if allowed is not None:
            # Strict keys: a typo such as "fro: 5m" must not silently drop the delay.
            for key in self.value:
                if key not in allowed:
                    raise self.child(key).error(
                        f"unknown key {key!r} (allowed: {', '.join(sorted(allowed))})"
                    )
        return self

    def has(self, key: str) -> bool:
        return isinstance(self.value, dict) and key in self.value

    def child(self, key: str) -> Node:
        value = self.value.get(key) if isinstance(self.value, dict) else None
        line = self.line
        if isinstance(self.value, _LineDict):
            line = self.value.key_lines.get(key, self.value.line)
        path = f"{self.path}.{key}" if self.path else key
        return Node(value, self.file, line, path)

    def items(self) -> Iterator[tuple[str, Node]]:
        for key in self.mapping().value:
            yield key, self.child(key)

    def seq(self) -> list[Node]:
        if not isinstance(self.value, list):
            raise self.error(f"expected a list, got {_type_name(self.value)}")
        out = []
        for i, item in enumerate(self.value):
            line = item.line if isinstance(item, _LineDict) else self.line
            out.append(Node(item, self.file, line, f"{self.path}[{i}]"))
        return out

    def seq_or_one(self) -> list[Node]:
        """A list, or a single value standing for a list of one."""
        if isinstance(self.value, list):
            return self.seq()
        return [self]

    # --- scalars -------------------------------------------------------------------------------
    def text(self, default: str | None = None) -> str:
        if self.value is None and default is not None:
            return default
        if not isinstance(self.value, str) or not self.value.strip():
            raise self.error(f"expected a non-empty text, got {_type_name(self.value)}")
        return self.value

    def number(self) -> float:
        if type(self.value) not in (int, float):
            raise self.error(f"expected a number, got {_type_name(self.value)}")
        return float(self.value)

    def integer(self, minimum: int | None = None) -> int:
        if type(self.value) is not int:
            raise self.error(f"expected an integer, got {_type_name(self.value)}")
        if minimum is not None and self.value < minimum:
            raise self.error(f"must be at least {minimum}")
        return int(self.value)

    def boolean(self) -> bool:
        if type(self.value) is not bool:
            raise self.error(f"expected true or false, got {_type_name(self.value)}")
        return bool(self.value)

    def duration_ms(self) -> int:
        try:
            return parse_duration(self.value)
        except ValueError as exc:
            raise self.error(str(exc)) from None

    def texts(self) -> list[str]:
        return [n.text() for n in self.seq_or_one()]


def _type_name(value: Any) -> str:
    if value is None:
        return "nothing"
    return {
        bool: "true/false",
        int: "an integer",
        float: "a number",
        str: "a text",
        list: "a list",
    }.get(type(value), "a mapping" if isinstance(value, dict) else type(value).__name__)


def parse_duration(value: object) -> int:
    """``"5m"`` → 300000 ms. Units: ms, s, m, h, d; several parts add up (``"1h30m"``)."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a duration such as 30s, 5m, 12h or 1d, got {value!r}")
    pos, total = 0, 0
    for match in _DURATION_RE.finditer(value):
        if match.start() != pos:
            break
        total += int(match.group(1)) * _UNIT_MS[match.group(2)]
        pos = match.end()
    if pos != len(value):
        raise ValueError(f"expected a duration such as 30s, 5m, 12h or 1d, got {value!r}")
    return total


def format_duration(ms: int) -> str:
    """The shortest exact text for a duration: 300000 → ``"5m"``."""
    for unit in ("d", "h", "m", "s"):
        size = _UNIT_MS[unit]
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def load_yaml(path: Path) -> Node:
    """Parse one YAML file; a syntax error becomes ``file:line: problem``."""
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataFileError([f"{name}:1: cannot read: {exc}"]) from None
    try:
        value = yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise DataFileError([f"{name}:{line}: not valid YAML: {exc.problem}"]) from None
    except yaml.YAMLError as exc:
        raise DataFileError([f"{name}:1: not valid YAML: {exc}"]) from None
    line = value.line if isinstance(value, _LineDict) else 1
    return Node(value, name, line, "")
