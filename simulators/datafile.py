"""Checks shared by the spec and scenario loaders: a mistake names the file, the place and
what is allowed, so an integrator can fix a data file without reading code."""

from __future__ import annotations

from typing import Any


class TableChecker:
    """A loader of one TOML file; ``fail`` makes the loader's own error type."""

    def fail(self, where: str, what: str) -> ValueError:
        raise NotImplementedError

    def table(self, value: Any, where: str, allowed: set[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, f"must be a table, got {type(value).__name__}")
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise self.fail(
                where,
                f"unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})",
            )
        return value
