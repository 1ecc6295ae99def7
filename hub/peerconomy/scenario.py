"""Scenario files (docs/scenario-format.md): the peerconomy rules with no database or broker.

``peershop simulate FILE.yaml [--json]`` loads a scenario, checks it, runs the same
functions the hub runs at period close (:mod:`hub.peerconomy.economy`) and prints the result.
A bad scenario raises :class:`~hub.errors.ScenarioError` naming the entry
(``effort[2]: hours must not be negative``) and nothing is printed but the message.

Beyond the rules' inputs, a scenario may carry ``period:`` (a string, default ``"scenario"``): the
period id that seeds the auction lottery, so a tie at the cut can be replayed.  A task
entry may carry ``pinned: true``.  When ``members:`` is given it is the roster, and
effort, use or bids by anyone else are an error (a typo would otherwise invent a member).

>>> result = run_scenario(parse_scenario({
...     "model": "flat_rate", "members": ["A", "B"],
...     "effort": [{"member": "A", "task": "cleaning", "hours": 6, "weight": 1.5}]}))
>>> to_json(result)["members"]["B"]
{'credited': 0.0, 'expected': 4.5, 'balance': -4.5}
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import yaml

from hub import checks
from hub.errors import ScenarioError
from hub.peerconomy import economy as pc

TOP_KEYS = ("model", "period", "members", "effort", "use", "auctions", "tasks")
DEFAULT_PERIOD = "scenario"
JSON_PLACES = Decimal("0.000001")


@dataclass(frozen=True)
class TaskWeight:
    """A task of the scenario whose next weight rule (a) computes."""

    task: str
    weight: Decimal
    slots: int
    volunteers: int
    pinned: bool = False


@dataclass(frozen=True)
class Auction:
    """Requests for the scarce units of one resource."""

    resource: str
    scarce_units: int
    bids: tuple[pc.Bid, ...]


@dataclass(frozen=True)
class Scenario:
    """A checked scenario file."""

    model: pc.Model
    period: str
    participants: tuple[pc.Participant, ...]
    effort: tuple[pc.EffortEntry, ...]
    use: tuple[pc.UseEntry, ...]
    auctions: tuple[Auction, ...]
    tasks: tuple[TaskWeight, ...]


@dataclass(frozen=True)
class SimulationResult:
    """What a scenario gives: the allocation, the cleared auctions and next weights."""

    scenario: Scenario
    allocation: pc.Allocation
    clearings: tuple[pc.Clearing, ...]
    next_weights: dict[str, Decimal]


# ---------------------------------------------------------------------------------------
# checking


def _list(data: dict[str, Any], key: str) -> list[Any]:
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ScenarioError(f"{key}: must be a list")
    return value


def _entry(value: Any, where: str, required: tuple[str, ...], optional: tuple[str, ...]) -> dict:
    if not isinstance(value, dict):
        raise ScenarioError(f"{where}: must be a mapping with {', '.join(required)}")
    for problem in checks.unknown_keys(value, (*required, *optional)):
        raise ScenarioError(f"{where}.{problem.key}: {problem}")
    for key in required:
        if key not in value:
            raise ScenarioError(f"{where}: {key} is missing")
    return value


def _check(value: Any, where: str, key: str, check: Callable[[Any], Any]) -> Any:
    """``check`` (:mod:`hub.checks`); its reason becomes a ScenarioError naming the key."""
    try:
        return check(value)
    except ValueError as exc:
        raise ScenarioError(f"{where}: {key} {exc}") from None


def _name(value: Any, where: str, key: str) -> str:
    return _check(value, where, key, checks.text)


def _whole(value: Any, where: str, key: str, minimum: int) -> int:
    return _check(value, where, key, checks.integer(minimum))


def _build(where: str, make: Callable[[], Any]) -> Any:
    """Run a record constructor; its ValueError becomes a ScenarioError naming the entry."""
    try:
        return make()
    except ValueError as exc:
        raise ScenarioError(f"{where}: {exc}") from None


def parse_scenario(data: Any) -> Scenario:
    """Check a scenario (the parsed YAML) and turn it into records.

    Raises :class:`ScenarioError` whose message starts with the entry, e.g.
    ``auctions[0].bids[1]: max 0.9 is below 1``.
    """
    if not isinstance(data, dict):
        raise ScenarioError("scenario: must be a mapping with at least 'model'")
    for problem in checks.unknown_keys(data, TOP_KEYS):
        raise ScenarioError(f"{problem.key}: {problem}")
    try:
        model = checks.choice(pc.MODELS)(data.get("model"))
    except ValueError as exc:
        raise ScenarioError(f"model: {exc}") from None
    period = data.get("period", DEFAULT_PERIOD)
    if not isinstance(period, str | int) or isinstance(period, bool):
        raise ScenarioError(f"period: must be a string, not {period!r}")
    period = str(period)

    participants: list[pc.Participant] = []
    roster: set[str] | None = None
    if "members" in data:
        roster = set()
        for i, item in enumerate(_list(data, "members")):
            where = f"members[{i}]"
            if isinstance(item, str):
                item = {"id": item}
            entry = _entry(item, where, ("id",), ("factor",))
            member = _name(entry["id"], where, "id")
            if member in roster:
                raise ScenarioError(f"{where}: member {member!r} is listed twice")
            roster.add(member)
            participants.append(
                _build(where, lambda m=member, e=entry: pc.Participant(m, e.get("factor", 1)))
            )

    def known(member: Any, where: str) -> str:
        name = _name(member, where, "member")
        if roster is not None and name not in roster:
            raise ScenarioError(f"{where}: unknown member {name!r}")
        return name

    effort = []
    for i, item in enumerate(_list(data, "effort")):
        where = f"effort[{i}]"
        e = _entry(item, where, ("member", "task", "hours", "weight"), ("resource", "project"))
        member = known(e["member"], where)
        task = _name(e["task"], where, "task")
        resource = None if e.get("resource") is None else _name(e["resource"], where, "resource")
        project = None if e.get("project") is None else _name(e["project"], where, "project")
        record = _build(
            where,
            lambda e=e, m=member, t=task, r=resource, p=project: pc.EffortEntry(
                m, t, e["hours"], e["weight"], resource=r, project=p
            ),
        )
        _build(where, lambda w=record.weight: pc.check_weight(w))
        effort.append(record)

    use = []
    for i, item in enumerate(_list(data, "use")):
        where = f"use[{i}]"
        u = _entry(item, where, ("member", "resource", "units"), ())
        member = known(u["member"], where)
        resource = _name(u["resource"], where, "resource")
        use.append(_build(where, lambda u=u, m=member, r=resource: pc.UseEntry(m, r, u["units"])))

    auctions = []
    seen_resources: set[str] = set()
    for i, item in enumerate(_list(data, "auctions")):
        where = f"auctions[{i}]"
        a = _entry(item, where, ("resource", "scarce_units", "bids"), ())
        resource = _name(a["resource"], where, "resource")
        if resource in seen_resources:
            raise ScenarioError(f"{where}: a second auction for resource {resource!r}")
        seen_resources.add(resource)
        supply = _whole(a["scarce_units"], where, "scarce_units", 0)
        if not isinstance(a["bids"], list):
            raise ScenarioError(f"{where}: bids must be a list")
        bids = []
        for j, bid in enumerate(a["bids"]):
            bwhere = f"{where}.bids[{j}]"
            b = _entry(bid, bwhere, ("member", "max"), ())
            member = known(b["member"], bwhere)
            bids.append(_build(bwhere, lambda b=b, m=member: pc.Bid(m, b["max"])))
        auctions.append(Auction(resource, supply, tuple(bids)))

    tasks = []
    seen_tasks: set[str] = set()
    for i, item in enumerate(_list(data, "tasks")):
        where = f"tasks[{i}]"
        t = _entry(item, where, ("task", "weight", "slots", "volunteers"), ("pinned",))
        task = _name(t["task"], where, "task")
        if task in seen_tasks:
            raise ScenarioError(f"{where}: task {task!r} is listed twice")
        seen_tasks.add(task)
        weight = _build(where, lambda t=t: pc.check_weight(t["weight"]))
        slots = _whole(t["slots"], where, "slots", 1)
        volunteers = _whole(t["volunteers"], where, "volunteers", 0)
        pinned = _check(t.get("pinned", False), where, "pinned", checks.flag)
        tasks.append(TaskWeight(task, weight, slots, volunteers, pinned))

    return Scenario(
        model=pc.Model(model),
        period=period,
        participants=tuple(participants),
        effort=tuple(effort),
        use=tuple(use),
        auctions=tuple(auctions),
        tasks=tuple(tasks),
    )


def load_scenario(path: str | Path) -> Scenario:
    """Read and check a scenario file; any problem is a :class:`ScenarioError`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ScenarioError(f"{path}: not UTF-8 text") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path}: not valid YAML: {exc}") from None
    return parse_scenario(data)


# ---------------------------------------------------------------------------------------
# running


def run_scenario(scenario: Scenario) -> SimulationResult:
    """Clear the auctions, share the period's effort and compute next weights.

    An auction's winners each use one scarce unit and its losers one plain unit, on top
    of ``use``; the lottery is seeded from (``period``, resource).
    """
    clearings = tuple(
        pc.clear_auction(a.resource, a.scarce_units, a.bids, seed=scenario.period)
        for a in scenario.auctions
    )
    use = list(scenario.use)
    for c in clearings:
        use.extend(c.use_entries())
    try:
        allocation = pc.share(
            scenario.model,
            scenario.effort,
            use,
            participants=scenario.participants,
            clearings=clearings,
        )
    except ValueError as exc:  # the checks above should leave nothing for the engine
        raise ScenarioError(f"scenario: {exc}") from None
    next_weights = {
        t.task: pc.next_weight(t.weight, t.slots, t.volunteers, pinned=t.pinned)
        for t in scenario.tasks
    }
    return SimulationResult(scenario, allocation, clearings, next_weights)


def _num(d: Decimal | None) -> float | None:
    """A JSON number rounded to 6 places (never -0.0)."""
    if d is None:
        return None
    rounded = d.quantize(JSON_PLACES, rounding=ROUND_HALF_EVEN)
    return 0.0 if rounded == 0 else float(rounded)


def to_json(result: SimulationResult) -> dict[str, Any]:
    """The docs/scenario-format.md output: members, resources, next_weights and invariant totals.

    ``unit_cost`` is ``null`` where use does not set a cost (flat_rate; a pool nobody
    used).  A resource with an auction also has ``scarce_multiplier``,
    ``scarce_unit_cost`` and ``winners``.
    """
    alloc = result.allocation
    members = {
        m: {"credited": _num(s.credited), "expected": _num(s.expected), "balance": _num(s.balance)}
        for m, s in alloc.members.items()
    }
    resources: dict[str, dict[str, Any]] = {}
    for r, cost in alloc.resources.items():
        entry: dict[str, Any] = {"unit_cost": _num(cost.unit_cost)}
        if cost.scarce_multiplier is not None:
            entry["scarce_multiplier"] = _num(cost.scarce_multiplier)
            entry["scarce_unit_cost"] = _num(cost.scarce_unit_cost)
            entry["winners"] = list(cost.winners)
        resources[r] = entry
    credited = sum((s.credited for s in alloc.members.values()), Decimal(0))
    expected = sum((s.expected for s in alloc.members.values()), Decimal(0))
    return {
        "members": members,
        "resources": resources,
        "next_weights": {t: _num(w) for t, w in result.next_weights.items()},
        "invariant": {"credited_total": _num(credited), "expected_total": _num(expected)},
    }


def simulate(path: str | Path) -> dict[str, Any]:
    """Load, check and run a scenario file; return the JSON object of docs/scenario-format.md."""
    return to_json(run_scenario(load_scenario(path)))


# ---------------------------------------------------------------------------------------
# the readable report


def _fmt(d: Decimal | None, sign: bool = False) -> str:
    if d is None:
        return "-"
    # quantize always leaves a point, so stripping zeros never eats integer digits
    text = f"{d.quantize(Decimal('0.0001'), rounding=ROUND_HALF_EVEN):f}".rstrip("0").rstrip(".")
    if text in ("-0", "0"):
        return "0"
    return f"+{text}" if sign and not text.startswith("-") else text


def _table(headers: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        parts = [
            c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(cells)
        ]
        return "  " + "  ".join(parts).rstrip()

    return [line(headers), *(line(r) for r in rows)]


def format_report(result: SimulationResult) -> str:
    """A plain-text report to read out at a members' meeting."""
    sc, alloc = result.scenario, result.allocation
    model = sc.model if alloc.applied == sc.model else f"{sc.model} (applied as {alloc.applied})"
    out = [f"Model {model}, period {sc.period}: total weighted effort E = {_fmt(alloc.total)}"]
    if alloc.applied != sc.model:
        out.append("  Nobody used anything, so the effort is shared flat.")
    if sc.effort:
        pools = alloc.applied == pc.Model.PRODUCTION_EFFORT  # only there does a pool matter
        out += ["", "Who did what"]
        rows = [
            [e.member, e.task, _fmt(e.hours), _fmt(e.weight), _fmt(e.weighted_hours)]
            + ([e.resource or "overhead"] if pools else [])
            for e in sorted(sc.effort, key=lambda e: (e.member, e.task))
        ]
        headers = ["member", "task", "hours", "weight", "weighted"] + (["pool"] if pools else [])
        out += _table(headers, rows, right={2, 3, 4})
    if alloc.members:
        out += ["", "Contributions (balance = credited - expected)"]
        rows = [
            [m, _fmt(s.credited), _fmt(s.expected), _fmt(s.balance, sign=True)]
            for m, s in alloc.members.items()
        ]
        out += _table(["member", "credited", "expected", "balance"], rows, right={1, 2, 3})
    else:
        out += ["", "Nobody took part in this period."]
    shown = {r: c for r, c in alloc.resources.items() if c.units or c.scarce_multiplier}
    if shown:
        out += ["", "Resources (cost per unit, in weighted hours of expected contribution)"]
        rows = []
        for r, c in shown.items():
            rows.append(
                [
                    r,
                    _fmt(c.units),
                    _fmt(c.unit_cost),
                    _fmt(c.scarce_multiplier),
                    _fmt(c.scarce_unit_cost),
                    ", ".join(c.winners) if c.winners else "-",
                ]
            )
        out += _table(
            ["resource", "units", "unit cost", "scarce x", "scarce cost", "winners"],
            rows,
            right={1, 2, 3, 4},
        )
        if result.clearings:
            out.append("  (units count a scarce unit won at auction as m plain units)")
        if alloc.applied == pc.Model.FLAT_RATE:
            out.append("  (flat_rate: use does not change what anyone is expected to give)")
    if result.next_weights:
        out += ["", "Next period's task weights"]
        rows = [
            [
                t.task,
                _fmt(t.weight),
                _fmt(result.next_weights[t.task]),
                str(t.slots),
                str(t.volunteers),
                "pinned" if t.pinned else "",
            ]
            for t in sc.tasks
        ]
        out += _table(
            ["task", "weight", "next", "slots", "volunteers", ""], rows, right={1, 2, 3, 4}
        )
    credited = sum((s.credited for s in alloc.members.values()), Decimal(0))
    expected = sum((s.expected for s in alloc.members.values()), Decimal(0))
    out += ["", f"Totals: credited {_fmt(credited)}, expected {_fmt(expected)}; balances sum to 0."]
    return "\n".join(out)
