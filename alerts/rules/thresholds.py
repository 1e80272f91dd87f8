"""Numeric value tests from a rule's ``when``: above / below / at_least / at_most a level, or
outside a band, each with its clear level (hysteresis) and the range in which it is quiet."""

from __future__ import annotations

import math
from typing import Any

from alerts.datafile import Node
from alerts.rules.spec import Quiet, ValueTest

__all__ = ["numeric_test"]

# Float sums (0.1 mm forty times) land a hair off the threshold; thresholds are not that exact.
_EPS = 1e-9


def numeric_test(name: str, op: str, arg: Node, clear: Node) -> ValueTest:
    # Values reaching a numeric test are numbers: the catalog checked them at decode.
    if op == "outside":
        lo, hi = _band(arg)
        clo, chi = _band(clear) if clear.value is not None else (lo, hi)
        if not lo <= clo <= chi <= hi:
            raise clear.error("the clear band must lie inside the alarm band")

        def out_hit(v: Any) -> bool:
            return bool(v < lo or v > hi)

        def out_clear(v: Any) -> bool:
            return bool(clo <= v <= chi)

        text = f"{name} outside {_num(lo)}..{_num(hi)}"
        return ValueTest(name, out_hit, out_clear, text, quiet=Quiet(lo, hi))
    x = arg.number()
    c = clear.number() if clear.value is not None else x
    if not math.isfinite(x) or not math.isfinite(c):
        raise arg.error("thresholds must be finite")
    tol = _EPS * max(1.0, abs(x))
    upward = op in ("above", "at_least")
    if upward and c > x:
        raise clear.error(f"for '{op}' the clear level must not be above {_num(x)}")
    if not upward and c < x:
        raise clear.error(f"for '{op}' the clear level must not be below {_num(x)}")
    strict = op in ("above", "below")
    # hit: beyond x; clear: back past c (with c == x, simply "no longer hit").
    if upward:
        lim = x + tol if strict else x - tol

        def hit(v: Any) -> bool:
            return bool(v > lim) if strict else bool(v >= lim)

        def cleared(v: Any) -> bool:
            return bool(v <= c) if (strict or c < x) else bool(v < lim)

        sign = ">" if strict else "≥"
        quiet = Quiet(hi=x if strict else x - tol)
    else:
        lim = x - tol if strict else x + tol

        def hit(v: Any) -> bool:
            return bool(v < lim) if strict else bool(v <= lim)

        def cleared(v: Any) -> bool:
            return bool(v >= c) if (strict or c > x) else bool(v > lim)

        sign = "<" if strict else "≤"
        quiet = Quiet(lo=x if strict else x + tol)
    return ValueTest(name, hit, cleared, f"{name} {sign} {_num(x)}", quiet=quiet)


def _band(node: Node) -> tuple[float, float]:
    items = node.seq()
    if len(items) != 2:
        raise node.error("a band is [low, high]")
    lo, hi = items[0].number(), items[1].number()
    if lo > hi:
        raise node.error(f"band low {lo} is above high {hi}")
    return lo, hi


def _num(x: float) -> str:
    return f"{x:g}"
