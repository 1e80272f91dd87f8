"""The house stays in rooms (issue 14): the engine keeps the stream and the clock only, and no
room of alerts/, ingest/ or api/ grows back into a hall. Sizes are read from the source with
``ast``, so a failure names the file or method to split."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ROOT / "alerts" / "engine.py"
ENGINE_MAX_LINES = 499
ENGINE_MAX_FUNCTION_LINES = 60
ROOM_MAX_LINES = 600
ROOMS = ("alerts", "ingest", "api")
# Code only: api/static/messages.json is the catalog of zh/en labels, data by nature.
CODE = (".py", ".js", ".css", ".html")


def _lines(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def _functions(path: Path) -> list[tuple[str, int]]:
    """(qualified name, lines from ``def`` to its last line), decorators left out."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[str, int]] = []

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}{child.name}"
                found.append((name, (child.end_lineno or child.lineno) - child.lineno + 1))
                walk(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                walk(child, f"{prefix}{child.name}.")

    walk(tree, "")
    return found


def test_engine_keeps_the_stream_and_the_clock_only() -> None:
    assert _lines(ENGINE) <= ENGINE_MAX_LINES, "alerts/engine.py: move a job to its own module"
    long = [(n, k) for n, k in _functions(ENGINE) if k > ENGINE_MAX_FUNCTION_LINES]
    assert not long, f"alerts/engine.py: methods over {ENGINE_MAX_FUNCTION_LINES} lines: {long}"


@pytest.mark.parametrize("room", ROOMS)
def test_no_room_is_a_hall(room: str) -> None:
    files = [p for p in (ROOT / room).rglob("*") if p.suffix in CODE and p.is_file()]
    assert files
    big = {str(p.relative_to(ROOT)): n for p in files if (n := _lines(p)) > ROOM_MAX_LINES}
    assert not big, f"files over {ROOM_MAX_LINES} lines (split along their seams): {big}"


def test_the_measure_sees_a_long_method(tmp_path: Path) -> None:
    body = "\n".join(f"        x = {i}" for i in range(ENGINE_MAX_FUNCTION_LINES))
    src = tmp_path / "hall.py"
    src.write_text(f"class Hall:\n    def walk(self) -> None:\n{body}\n", encoding="utf-8")
    assert _functions(src) == [("Hall.walk", ENGINE_MAX_FUNCTION_LINES + 1)]
