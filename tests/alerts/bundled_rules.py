"""The bundled rules on the catalog, and an evaluator over them, for the rules' tests."""

from __future__ import annotations

from alerts.rules.evaluate import Evaluator
from alerts.rules.index import RuleIndex
from alerts.rules.loader import load_rules
from alerts.window_bank import WindowBank
from protocol.catalog import default_catalog

CATALOG = default_catalog()
RULES = load_rules(CATALOG)
INDEX = RuleIndex(RULES.defaults.values(), CATALOG)
MIN = 60_000


def evaluator() -> Evaluator:
    """An evaluator with fresh windows for everything the bundled rules track."""
    bank = WindowBank()
    bank.retrack(INDEX.window_needs())
    return Evaluator(bank, {k.name: k.interval_s * 1000 for k in CATALOG.kinds.values()})
