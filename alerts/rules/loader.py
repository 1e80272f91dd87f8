"""Rule files: YAML in, checked :class:`Rule` objects out, or every mistake with file and line.

A rules folder holds ``*.yaml`` files, each with any of three sections::

    rules:            # alarm rules (see the shipped defaults for every kind of the catalog)
      - id: hydrant-pressure-low
        kinds: [fire_hydrant]
        when: {metric: pressure_mpa, below: 0.07, clear: 0.08}
        for: 5m
        severity: major
        summary: {zh: 消火栓静压低于 0.07 MPa, en: Hydrant static pressure below 0.07 MPa}
    chains:           # escalation chains, by id
      default: [{after: 0m, notify: control_room}]
    inhibit:          # what hides what
      - {id: gw-offline, when: {gateway: offline}, hides: {tag: no_data}}

An estate overrides defaults with files in ``<override dir>/<estate>/``: an entry whose ``id``
names a default rule replaces only the keys it gives (``{id: elevator-trapped,
rescue_deadline: 1h}``; ``enabled: false`` switches a rule off); a new id adds a rule for that
estate alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alerts.commands import ACTIONS
from alerts.datafile import DataFileError, Node, format_duration, load_yaml
from alerts.escalation import DEFAULT_CHAIN, Chain, Step, Until
from alerts.inhibit import InhibitRule
from alerts.rules.spec import (
    Composite,
    Condition,
    EventCount,
    EventMatch,
    GatewayOffline,
    NoData,
    Quiet,
    Rule,
    Severity,
    ValueTest,
)
from alerts.rules.thresholds import numeric_test
from alerts.windows import AGGREGATES, Aggregate
from protocol.catalog import Catalog, Metric, ValueType
from protocol.messages import Value

__all__ = ["BUNDLED_RULES", "RuleFileError", "RuleSet", "load_rules"]

BUNDLED_RULES = Path(__file__).with_name("defaults")

_FILE_KEYS = frozenset({"rules", "chains", "inhibit"})
_RULE_KEYS = frozenset({
    "id", "kinds", "when", "for", "severity", "summary", "tags", "escalation",
    "clear_event", "auto_resolve", "rescue_deadline", "enabled", "description", "action",
})  # fmt: skip
_NUMERIC_OPS = ("above", "below", "at_least", "at_most", "outside")
_OPS = (*_NUMERIC_OPS, "equals", "in", "bit")
_TEST_KEYS = frozenset({"metric", "agg", "window", "clear", *_OPS})
_STEP_KEYS = frozenset({"after", "at", "notify", "until"})
_INHIBIT_KEYS = frozenset({"id", "when", "hides"})


class RuleFileError(DataFileError):
    """Rule files with mistakes: ``problems`` lists each as ``file:line: what``."""


@dataclass(frozen=True)
class RuleSet:
    defaults: dict[str, Rule]
    estates: dict[str, dict[str, Rule]] = field(default_factory=dict)
    chains: dict[str, Chain] = field(default_factory=lambda: {"default": DEFAULT_CHAIN})
    inhibit: tuple[InhibitRule, ...] = ()
    files: tuple[str, ...] = ()

    def rules_for(self, estate: str) -> list[Rule]:
        """The rules in force for an estate: defaults, overridden and extended by its own."""
        merged = dict(self.defaults)
        merged.update(self.estates.get(estate, {}))
        return [r for r in merged.values() if r.enabled]

    def chain(self, chain_id: str | None) -> Chain:
        return self.chains.get(chain_id or "default", self.chains.get("default", DEFAULT_CHAIN))


def load_rules(
    catalog: Catalog, rules_dir: Path = BUNDLED_RULES, override_dir: Path | None = None
) -> RuleSet:
    """Load and check every rule file; raises RuleFileError listing all the mistakes found."""
    problems: list[str] = []
    default_docs = _read_dir(rules_dir, problems)
    estate_docs: dict[str, list[Node]] = {}
    if override_dir is not None and override_dir.is_dir():
        for sub in sorted(p for p in override_dir.iterdir() if p.is_dir()):
            estate_docs[sub.name] = _read_dir(sub, problems)

    chains: dict[str, Chain] = {"default": DEFAULT_CHAIN}
    inhibit: list[InhibitRule] = []
    for doc in [*default_docs, *(d for docs in estate_docs.values() for d in docs)]:
        try:
            chains.update(_chains(doc))
            if doc.has("inhibit"):
                for item in doc.child("inhibit").seq():
                    try:
                        inhibit.append(_inhibit_rule(item, catalog))
                    except DataFileError as exc:
                        problems.extend(exc.problems)
        except DataFileError as exc:
            problems.extend(exc.problems)

    build = _RuleBuilder(catalog, chains)
    defaults: dict[str, Rule] = {}
    raw_defaults: dict[str, Node] = {}
    for doc in default_docs:
        for item in _rule_items(doc, problems):
            rule = build.rule(item, None, problems)
            if rule is not None and _once(defaults, rule, item, problems, None):
                raw_defaults[rule.id] = item

    estates: dict[str, dict[str, Rule]] = {}
    for estate, docs in estate_docs.items():
        own: dict[str, Rule] = {}
        for doc in docs:
            for item in _rule_items(doc, problems):
                rid = item.child("id").value
                base = raw_defaults.get(rid) if isinstance(rid, str) else None
                if base is not None and isinstance(item.value, dict):
                    # An override replaces only the keys it names.
                    item = Node({**base.value, **item.value}, item.file, item.line, item.path)
                rule = build.rule(item, estate, problems)
                if rule is not None:
                    _once(own, rule, item, problems, estate)
        estates[estate] = own

    if problems:
        raise RuleFileError(problems)
    files = tuple(d.file for d in default_docs) + tuple(
        d.file for docs in estate_docs.values() for d in docs
    )
    return RuleSet(defaults, estates, chains, tuple(inhibit), files)


def _read_dir(folder: Path, problems: list[str]) -> list[Node]:
    if not folder.is_dir():
        problems.append(f"{folder}:1: not a folder of rule files")
        return []
    docs = []
    for path in sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml")):
        try:
            doc = load_yaml(path)
            if doc.value is None:
                continue
            doc.mapping(_FILE_KEYS)
            docs.append(doc)
        except DataFileError as exc:
            problems.extend(exc.problems)
    return docs


def _once(
    rules: dict[str, Rule], rule: Rule, item: Node, problems: list[str], estate: str | None
) -> bool:
    """Keeps ``rule`` unless its id is taken in the same scope (then a problem)."""
    if rule.id in rules:
        where = (
            f"(first at {rules[rule.id].source})" if estate is None else f"for estate {estate!r}"
        )
        problems.append(f"{item.file}:{item.line}: rule id {rule.id!r} is defined twice {where}")
        return False
    rules[rule.id] = rule
    return True


def _rule_items(doc: Node, problems: list[str]) -> list[Node]:
    if not doc.has("rules"):
        return []
    try:
        return doc.child("rules").seq()
    except DataFileError as exc:
        problems.extend(exc.problems)
        return []


# --- chains and inhibitions -------------------------------------------------------------------


def _chains(doc: Node) -> dict[str, Chain]:
    if not doc.has("chains"):
        return {}
    out = {}
    for chain_id, node in doc.child("chains").items():
        steps = []
        for sn in node.seq():
            sn.mapping(_STEP_KEYS)
            at = sn.child("at")
            if at.value is not None and at.value != "deadline":
                raise at.error("'at' can only be 'deadline'")
            if at.value is not None and sn.has("after"):
                raise sn.error("a step has either 'after' or 'at: deadline', not both")
            until_node = sn.child("until")
            try:
                until = Until(until_node.text("acknowledged"))
            except ValueError:
                raise until_node.error("'until' must be acknowledged or resolved") from None
            steps.append(
                Step(
                    notify=tuple(sn.child("notify").texts()),
                    after_ms=sn.child("after").duration_ms() if sn.has("after") else 0,
                    at_deadline=at.value == "deadline",
                    until=until,
                )
            )
        if not steps:
            raise node.error(f"chain {chain_id!r} has no steps")
        out[chain_id] = Chain(chain_id, tuple(steps))
    return out


def _inhibit_rule(node: Node, catalog: Catalog) -> InhibitRule:
    node.mapping(_INHIBIT_KEYS)
    rid = node.child("id").text()
    hides = node.child("hides").mapping(frozenset({"tag"}))
    tag = hides.child("tag").text()
    when = node.child("when").mapping(frozenset({"gateway", "kind", "metric", "in", "outside"}))
    if when.has("outside"):
        if when.child("outside").value != "heating_season":
            raise when.child("outside").error("only 'outside: heating_season' is known")
        return InhibitRule(rid, tag, outside_heating_season=True)
    if when.has("gateway"):
        if when.child("gateway").value != "offline":
            raise when.child("gateway").error("only 'gateway: offline' is known")
        return InhibitRule(rid, tag, gateway_offline=True)
    kind_name = when.child("kind").text()
    kind = catalog.kinds.get(kind_name)
    if kind is None:
        raise when.child("kind").error(f"unknown kind {kind_name!r}")
    metric = when.child("metric").text()
    if metric not in kind.metrics:
        raise when.child("metric").error(f"kind {kind_name!r} has no metric {metric!r}")
    values = frozenset(n.value for n in when.child("in").seq_or_one())
    return InhibitRule(rid, tag, kind=kind_name, metric=metric, values=values)


# --- rules ------------------------------------------------------------------------------------


class _RuleBuilder:
    def __init__(self, catalog: Catalog, chains: dict[str, Chain]) -> None:
        self.catalog = catalog
        self.chains = chains
        self._test_kinds: frozenset[str] = frozenset()

    def rule(self, node: Node, estate: str | None, problems: list[str]) -> Rule | None:
        try:
            return self._rule(node, estate)
        except DataFileError as exc:
            problems.extend(exc.problems)
            return None

    def _rule(self, node: Node, estate: str | None) -> Rule:
        node.mapping(_RULE_KEYS)
        rid = node.child("id").text()
        if not all(c.isalnum() or c in "-_." for c in rid):
            raise node.child("id").error("a rule id is letters, digits and - _ .")
        when = node.child("when")
        kinds = self._kinds(node, when)
        condition = self._condition(when, kinds)
        sev_node = node.child("severity")
        try:
            severity = Severity(sev_node.text())
        except ValueError:
            raise sev_node.error(
                f"severity must be one of {', '.join(s.value for s in Severity)}"
            ) from None
        summary = node.child("summary")
        if isinstance(summary.value, str):
            zh = en = summary.text()
        else:
            summary.mapping(frozenset({"zh", "en"}))
            zh = summary.child("zh").text()
            en = summary.child("en").text(rid)
        tags = frozenset(node.child("tags").texts()) if node.has("tags") else frozenset()
        if isinstance(condition, NoData):
            tags |= {"no_data"}
        if isinstance(condition, GatewayOffline):
            tags |= {"gateway"}
        escalation = node.child("escalation").text() if node.has("escalation") else None
        if escalation is not None and escalation not in self.chains:
            raise node.child("escalation").error(
                f"unknown escalation chain {escalation!r} (known: {', '.join(sorted(self.chains))})"
            )
        clear_events: frozenset[str] = frozenset()
        if node.has("clear_event"):
            if not isinstance(condition, EventMatch):
                raise node.child("clear_event").error("only event rules are cleared by an event")
            clear_events = frozenset(self._event_types(node.child("clear_event"), kinds))
        event_only = ("clear_event", "auto_resolve", "rescue_deadline")
        for key in event_only[1:]:
            if node.has(key) and not isinstance(condition, EventMatch):
                raise node.child(key).error(f"'{key}' is for event rules")
        deadline = (
            node.child("rescue_deadline").duration_ms() if node.has("rescue_deadline") else None
        )
        for_ms = node.child("for").duration_ms() if node.has("for") else 0
        if for_ms and isinstance(condition, EventMatch):
            raise node.child("for").error("an event happens at once: 'for' does not apply")
        action = self._action(node, kinds) if node.has("action") else None
        return Rule(
            id=rid,
            condition=condition,
            severity=severity,
            summary_zh=zh,
            summary_en=en,
            kinds=kinds,
            for_ms=for_ms,
            tags=tags,
            escalation=escalation,
            clear_events=clear_events,
            auto_resolve_ms=(
                node.child("auto_resolve").duration_ms() if node.has("auto_resolve") else None
            ),
            deadline_ms=deadline,
            rescue=deadline is not None,
            source=f"{node.file}:{node.line}",
            estate=estate,
            enabled=node.child("enabled").boolean() if node.has("enabled") else True,
            action=action,
        )

    def _action(self, node: Node, kinds: frozenset[str] | None) -> str:
        """A remote command the rule's alarm may send to its device (alerts/remote.py)."""
        an = node.child("action")
        action = an.text()
        wanted = ACTIONS.get(action)
        if wanted is None:
            raise an.error(f"unknown action {action!r} (known: {', '.join(sorted(ACTIONS))})")
        if kinds is None or kinds != {wanted}:
            raise an.error(f"{action} is for {wanted} devices: the rule's kinds must be [{wanted}]")
        return action

    # --- kinds ---------------------------------------------------------------------------------
    def _kinds(self, node: Node, when: Node) -> frozenset[str] | None:
        if when.is_map() and when.has("gateway"):
            if node.has("kinds"):
                raise node.child("kinds").error("a gateway rule is about gateways, not kinds")
            return None
        if not node.has("kinds"):
            if when.is_map() and when.has("event"):
                types = set(when.child("event").texts())
                found = {k.name for k in self.catalog.kinds.values() if k.events & types}
                if found:
                    return frozenset(found)
            raise node.error("'kinds' is missing: say which device kinds the rule is about")
        kn = node.child("kinds")
        if kn.value == "*":
            return None
        names = kn.texts()
        for name in names:
            if name not in self.catalog.kinds:
                raise kn.error(f"unknown kind {name!r}")
        return frozenset(names)

    def _kind_names(self, kinds: frozenset[str] | None) -> list[str]:
        return sorted(kinds) if kinds is not None else sorted(self.catalog.kinds)

    def _event_types(self, node: Node, kinds: frozenset[str] | None) -> list[str]:
        types = node.texts()
        for t in types:
            if t not in self.catalog.event_types:
                raise node.error(f"unknown event type {t!r}")
            for k in self._kind_names(kinds):
                if t not in self.catalog.kinds[k].events:
                    raise node.error(f"kind {k!r} does not send {t!r}")
        return types

    # --- conditions ----------------------------------------------------------------------------
    def _condition(self, when: Node, kinds: frozenset[str] | None) -> Condition:
        when.mapping()
        if when.has("no_data"):
            when.mapping(frozenset({"no_data"}))
            nd = when.child("no_data")
            return NoData(None if nd.value in ("auto", True) else nd.duration_ms())
        if when.has("gateway"):
            when.mapping(frozenset({"gateway"}))
            if when.child("gateway").value != "offline":
                raise when.child("gateway").error("only 'gateway: offline' is known")
            return GatewayOffline()
        if kinds is None:
            raise when.error("'kinds: \"*\"' is only for no-data rules")
        if when.has("event"):
            when.mapping(frozenset({"event", "data"}))
            types = self._event_types(when.child("event"), kinds)
            data: tuple[tuple[str, Any], ...] = ()
            if when.has("data"):
                data = tuple((k, _data_value(n)) for k, n in when.child("data").items())
            return EventMatch(frozenset(types), data)
        if when.has("count"):
            when.mapping(frozenset({"count", "window", *_NUMERIC_OPS, "clear"}))
            (etype,) = self._event_types(when.child("count"), kinds)
            window = when.child("window").duration_ms()
            test = self._test(when, "count", ValueType.INTEGER, (), numeric_only=True)
            return EventCount(etype, window, test)
        for joiner in ("all", "any"):
            if when.has(joiner):
                when.mapping(frozenset({joiner}))
                parts = tuple(self._value_test(n, kinds) for n in when.child(joiner).seq())
                if len(parts) < 2:
                    raise when.child(joiner).error(f"'{joiner}' needs at least two conditions")
                return Composite(parts, all=joiner == "all")
        return self._value_test(when, kinds)

    def _value_test(self, node: Node, kinds: frozenset[str]) -> ValueTest:
        node.mapping(_TEST_KEYS)
        self._test_kinds = kinds  # for status-word bits by name (_bit)
        mnode = node.child("metric")
        name = mnode.text()
        metric: Metric | None = None
        for k in sorted(kinds):
            m = self.catalog.kinds[k].metrics.get(name)
            if m is None:
                raise mnode.error(f"kind {k!r} has no metric {name!r}")
            if metric is not None and m.type is not metric.type:
                raise mnode.error(f"metric {name!r} has different types across the kinds")
            metric = m
        assert metric is not None
        agg: Aggregate | None = None
        if node.has("agg") or node.has("window"):
            fn = node.child("agg").text()
            if fn not in AGGREGATES:
                raise node.child("agg").error(
                    f"unknown aggregate {fn!r} (known: {', '.join(sorted(AGGREGATES))})"
                )
            if metric.type not in (ValueType.NUMBER, ValueType.INTEGER):
                raise node.child("agg").error(f"{name!r} is not a number, it cannot be aggregated")
            agg = Aggregate(fn, node.child("window").duration_ms())
        test = self._test(
            node, name, metric.type, metric.values, numeric_only=agg is not None, metric=metric
        )
        if agg is None:
            return test
        label = f"{fn}({name}, {format_duration(agg.window_ms)})"
        text = test.text.replace(name, label, 1)
        # The quiet values of the test hold for the aggregate as for a value (index.WindowGroup).
        return ValueTest(name, test.hit, test.clear, text, agg, quiet=test.quiet)

    def _test(
        self,
        node: Node,
        name: str,
        vtype: ValueType,
        enum_values: tuple[str, ...],
        numeric_only: bool,
        metric: Metric | None = None,
    ) -> ValueTest:
        ops = [op for op in _OPS if node.has(op)]
        if len(ops) != 1:
            raise node.error(f"give exactly one of {', '.join(_OPS)}")
        op = ops[0]
        arg = node.child(op)
        clear = node.child("clear")
        numeric = numeric_only or vtype in (ValueType.NUMBER, ValueType.INTEGER)
        if op in _NUMERIC_OPS:
            if not numeric:
                raise arg.error(f"{name!r} is a {vtype.value}: use 'equals' or 'in'")
            return numeric_test(name, op, arg, clear)
        if clear.value is not None:
            raise clear.error(f"'clear' goes with {', '.join(_NUMERIC_OPS)}")
        if op == "bit":
            bit = self._bit(arg)
            return ValueTest(
                name,
                lambda v: type(v) is int and (v >> bit) & 1 == 1,
                lambda v: type(v) is int and (v >> bit) & 1 == 0,
                f"{name} bit {arg.value}",
                quiet=Quiet(mask=1 << bit),
            )
        if op == "equals":
            target = _typed_value(arg, vtype, enum_values)
            return ValueTest(
                name,
                lambda v: v == target,
                lambda v: v != target,
                f"{name} = {target}",
                quiet=Quiet(values=frozenset({target})),
            )
        targets = frozenset(_typed_value(n, vtype, enum_values) for n in arg.seq_or_one())
        return ValueTest(
            name,
            lambda v: v in targets,
            lambda v: v not in targets,
            f"{name} in {sorted(map(str, targets))}",
            quiet=Quiet(values=targets),
        )

    def _bit(self, arg: Node) -> int:
        """A bit by number or by name in the status-word table of each of the rule's kinds
        (a component's differs from a system's above bit 7)."""
        if type(arg.value) is int and 0 <= arg.value <= 15:
            return int(arg.value)
        kinds = sorted(self._test_kinds) or [""]
        found: set[int] = set()
        for k in kinds:
            table = self.catalog.status_bits_of(k)
            got = [b.bit for b in table.values() if b.name == arg.value]
            if not got:
                names = ", ".join(b.name for b in table.values())
                where = f" of kind {k!r}" if k else ""
                raise arg.error(f"unknown status-word bit {arg.value!r}{where} (known: {names})")
            found.update(got)
        if len(found) > 1:
            raise arg.error(f"status-word bit {arg.value!r} differs across the rule's kinds")
        return found.pop()


def _data_value(node: Node) -> Any:
    """A plain value, or a list of them: one of (null: the field is absent)."""
    if isinstance(node.value, list):
        return tuple(n.value for n in node.seq() if _scalar(n, "data"))
    _scalar(node, "data")
    return node.value


def _scalar(node: Node, what: str) -> bool:
    if isinstance(node.value, dict | list):
        raise node.error(f"{what} values must be plain values")
    return True


def _typed_value(node: Node, vtype: ValueType, enum_values: tuple[str, ...]) -> Value:
    v = node.value
    if vtype is ValueType.BOOLEAN:
        return node.boolean()
    if vtype is ValueType.ENUM:
        if v not in enum_values:
            raise node.error(f"{v!r} is not one of {', '.join(enum_values)}")
        return str(v)
    if vtype is ValueType.INTEGER:
        return node.integer()
    return node.number()
