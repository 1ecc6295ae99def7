"""``peershop export``: every record of a period or a time range, for audits or a fork.

:func:`collect` reads effort records, tool use (usage sessions), consumables and, for
closed periods inside the range, the balances and unit costs their close stored.  It
gives plain dicts with exact values (``Decimal``, aware ``datetime``); the writers turn
them into

* ``json``: one object ``{"range", "effort", "use", "consume", "balances",
  "resource_costs"}``, decimals as strings so nothing is rounded; :func:`load_json`
  reads it back to the same dicts;
* ``csv``: one row per record with a ``record`` column (effort, use, consume, balance,
  resource_cost) over the union of the columns;
* ``valueflows``: a JSON-LD graph of ValueFlows economic events: ``work`` (effort, with
  ``effortQuantity`` in hours), ``use`` (tool use, ``effortQuantity`` hours of use and
  ``resourceQuantity`` one tool), ``consume`` (``resourceQuantity`` in the item's unit),
  each with ``provider``, ``receiver``, ``inScopeOf`` (the project) and its time, and
  the agents, resources and units they name; its ``@context`` maps every term
  (:data:`VF_TERMS`), so JSON-LD processors keep them all (docs/periods.md, Exports).

A record is in the range when it starts in it (an effort's or session's ``start``, a
consumable's ``at``), as the period close counts it.
"""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.errors import ExportError
from hub.store.models import (
    EffortRecord,
    Period,
    PeriodBalance,
    PeriodResourceCost,
    Task,
    Tool,
    UsageRecord,
    UsageSession,
)

FORMATS = ("csv", "json", "valueflows")
KINDS = ("effort", "use", "consume", "balances", "resource_costs")
HOUR = Decimal(3600)
VF_CONTEXT = {
    "vf": "https://w3id.org/valueflows/ont/vf#",
    "om2": "http://www.ontology-of-units-of-measure.org/resource/om-2/",
    "peershop": "urn:peershop:",
}


def _seconds_to_hours(seconds: float) -> Decimal:
    return Decimal(round(seconds * 1000)) / (HOUR * 1000)


def collect(
    session: Session,
    *,
    period_id: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[str, Any]:
    """The records of period ``period_id``, or of ``[since, until)``."""
    if period_id is not None:
        period = session.get(Period, period_id)
        if period is None:
            raise ExportError(f"no period {period_id}")
        since, until = period.start, period.end
    if since is None or until is None or since.tzinfo is None or until.tzinfo is None:
        raise ExportError("give --period, or --since and --until with a time zone")
    tasks = {t.id: t for t in session.execute(select(Task)).scalars()}
    tools = {t.id: t for t in session.execute(select(Tool)).scalars()}
    effort = []
    for e in session.execute(
        select(EffortRecord)
        .where(EffortRecord.start >= since, EffortRecord.start < until)
        .order_by(EffortRecord.start, EffortRecord.key)
    ).scalars():
        task = tasks.get(e.task_id or "")
        weighted = None if e.hours is None or e.weight is None else e.hours * e.weight
        effort.append(
            {
                "key": e.key,
                "member": e.member,
                "task": e.task_id,
                "project": e.project_id or (task.project_id if task else None),
                "resource": task.resource if task else None,
                "start": e.start,
                "end": e.end,
                "hours": e.hours,
                "weight": e.weight,
                "weighted_hours": weighted,
                "source": e.source,
            }
        )
    use = []
    for s in session.execute(
        select(UsageSession)
        .where(UsageSession.start >= since, UsageSession.start < until)
        .order_by(UsageSession.start, UsageSession.key)
    ).scalars():
        tool = tools.get(s.tool_id)
        use.append(
            {
                "key": s.key,
                "member": s.member,
                "tool": s.tool_id,
                "project": tool.project_id if tool else None,
                "start": s.start,
                "end": s.end,
                "hours": None
                if s.end is None
                else _seconds_to_hours((s.end - s.start).total_seconds()),
                "busy_hours": _seconds_to_hours(s.busy_s),
                "wh": Decimal(str(s.wh)),
                "close_reason": s.close_reason,
            }
        )
    consume = []
    for u in session.execute(
        select(UsageRecord)
        .where(UsageRecord.at >= since, UsageRecord.at < until)
        .order_by(UsageRecord.at, UsageRecord.id)
    ).scalars():
        tool = tools.get(u.tool_id or "")
        consume.append(
            {
                "id": u.id,
                "member": u.member,
                "tool": u.tool_id,
                "project": tool.project_id if tool else None,
                "at": u.at,
                "item": u.item,
                "qty": Decimal(str(u.qty)),
                "unit": u.unit,
            }
        )
    closed = list(
        session.execute(
            select(Period.id).where(
                Period.closed_at.is_not(None), Period.start >= since, Period.end <= until
            )
        ).scalars()
    )
    balances = [
        {
            "period": b.period_id,
            "project": b.project_id,
            "member": b.member,
            "credited": b.credited,
            "expected": b.expected,
            "balance": b.balance,
            "running": b.running,
        }
        for b in session.execute(
            select(PeriodBalance)
            .where(PeriodBalance.period_id.in_(closed))
            .order_by(PeriodBalance.period_id, PeriodBalance.project_id, PeriodBalance.member)
        ).scalars()
    ]
    costs = [
        {
            "period": c.period_id,
            "project": c.project_id,
            "resource": c.resource,
            "units": c.units,
            "unit_cost": c.unit_cost,
            "scarce_units": c.scarce_units,
            "scarce_multiplier": c.scarce_multiplier,
        }
        for c in session.execute(
            select(PeriodResourceCost)
            .where(PeriodResourceCost.period_id.in_(closed))
            .order_by(
                PeriodResourceCost.period_id,
                PeriodResourceCost.project_id,
                PeriodResourceCost.resource,
            )
        ).scalars()
    ]
    return {
        "range": {"since": since, "until": until, "period": period_id},
        "effort": effort,
        "use": use,
        "consume": consume,
        "balances": balances,
        "resource_costs": costs,
    }


# ---------------------------------------------------------------------------------------
# writers


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return value


_DECIMALS = {
    "hours",
    "weight",
    "weighted_hours",
    "busy_hours",
    "wh",
    "qty",
    "credited",
    "expected",
    "balance",
    "running",
    "units",
    "unit_cost",
    "scarce_units",
    "scarce_multiplier",
}
_TIMES = {"start", "end", "at", "since", "until"}


def _typed(key: str, value: Any) -> Any:
    if value is None:
        return None
    if key in _DECIMALS:
        return Decimal(value)
    if key in _TIMES:
        return datetime.fromisoformat(value)
    return value


def to_json(data: dict[str, Any]) -> str:
    out = {"range": {k: _plain(v) for k, v in data["range"].items()}}
    for kind in KINDS:
        out[kind] = [{k: _plain(v) for k, v in row.items()} for row in data[kind]]
    return json.dumps(out, indent=1)


def load_json(text: str) -> dict[str, Any]:
    """Read :func:`to_json`'s output back to :func:`collect`'s dicts."""
    raw = json.loads(text)
    data: dict[str, Any] = {"range": {k: _typed(k, v) for k, v in raw["range"].items()}}
    for kind in KINDS:
        data[kind] = [{k: _typed(k, v) for k, v in row.items()} for row in raw[kind]]
    return data


def to_csv(data: dict[str, Any]) -> str:
    names = {"effort": "effort", "use": "use", "consume": "consume"}
    names.update({"balances": "balance", "resource_costs": "resource_cost"})
    columns = ["record"]
    for kind in KINDS:
        for row in data[kind]:
            for key in row:
                if key not in columns:
                    columns.append(key)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns, lineterminator="\n")
    writer.writeheader()
    for kind in KINDS:
        for row in data[kind]:
            writer.writerow(
                {
                    "record": names[kind],
                    **{k: "" if v is None else _plain(v) for k, v in row.items()},
                }
            )
    return buf.getvalue()


# The terms of the ValueFlows export, each mapped to its IRI, so that a JSON-LD processor
# keeps every property (a context of prefixes alone lets it drop them all).  The names are
# those of ValueFlows (https://w3id.org/valueflows/ont/vf#, as its vf-graphql schema
# spells them); quantities are om2 measures, times xsd:dateTime.
VF_TERMS: dict[str, Any] = {
    "EconomicEvent": "vf:EconomicEvent",
    "EconomicResource": "vf:EconomicResource",
    "ResourceSpecification": "vf:ResourceSpecification",
    "Person": "vf:Person",
    "Organization": "vf:Organization",
    "Unit": "om2:Unit",
    "name": "vf:name",
    "note": "vf:note",
    "label": "rdfs:label",
    "action": {"@id": "vf:action", "@type": "@vocab"},
    "work": "vf:work",
    "use": "vf:use",
    "consume": "vf:consume",
    "provider": {"@id": "vf:provider", "@type": "@id"},
    "receiver": {"@id": "vf:receiver", "@type": "@id"},
    "inScopeOf": {"@id": "vf:inScopeOf", "@type": "@id"},
    "resourceInventoriedAs": {"@id": "vf:resourceInventoriedAs", "@type": "@id"},
    "resourceConformsTo": {"@id": "vf:resourceConformsTo", "@type": "@id"},
    "effortQuantity": "vf:effortQuantity",
    "resourceQuantity": "vf:resourceQuantity",
    "hasNumericalValue": "om2:hasNumericalValue",
    "hasUnit": {"@id": "om2:hasUnit", "@type": "@vocab"},
    "hasPointInTime": {"@id": "vf:hasPointInTime", "@type": "xsd:dateTime"},
    "hasBeginning": {"@id": "vf:hasBeginning", "@type": "xsd:dateTime"},
    "hasEnd": {"@id": "vf:hasEnd", "@type": "xsd:dateTime"},
    "peershop:weight": {"@id": "peershop:weight", "@type": "xsd:decimal"},
}
VF_PREFIXES = {
    **VF_CONTEXT,
    "xsd": "http://www.w3.org/2001/XMLSchema#",
    "rdfs": "http://www.w3.org/2000/01/rdf-schema#",
}
# units of om2 for the units peershop records; any other (sheet, spool) is peershop's own
OM2_UNITS = {
    "hour": "om2:hour",
    "one": "om2:one",
    "g": "om2:gram",
    "kg": "om2:kilogram",
    "m": "om2:metre",
    "mm": "om2:millimetre",
    "l": "om2:litre",
    "ml": "om2:millilitre",
    "Wh": "om2:watthour",
    "kWh": "om2:kilowatthour",
}


UNIT_TERM = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def _unit_iri(unit: str) -> str:
    return OM2_UNITS.get(unit, _iri("unit", unit))


def _unit_ref(unit: str) -> str:
    """How an event names its unit: the unit itself, a term of the context, unless that
    name is taken or is no plain word; then its IRI."""
    if UNIT_TERM.fullmatch(unit) and unit not in VF_TERMS and unit not in VF_PREFIXES:
        return unit
    return _unit_iri(unit)


def _iri(kind: str, name: str) -> str:
    return f"peershop:{kind}/{quote(name, safe='')}"


def _quantity(value: Decimal, unit: str) -> dict[str, Any]:
    return {"hasNumericalValue": float(value), "hasUnit": unit}


def _when(start: datetime | None, end: datetime | None) -> dict[str, str]:
    if start is not None and (end is None or end == start):
        return {"hasPointInTime": _plain(start)}
    return {"hasBeginning": _plain(start), "hasEnd": _plain(end)}


def _agent(kind: str, name: str | None) -> str | None:
    return None if name is None else _iri(kind, name)


def to_valueflows(data: dict[str, Any]) -> dict[str, Any]:
    """The range's effort, tool use and consumables as ValueFlows economic events, with
    the agents, resources and units they refer to, as linked data (JSON-LD)."""
    graph: list[dict[str, Any]] = []
    people: set[str] = set()
    projects: set[str] = set()
    tools: set[str] = set()
    items: set[str] = set()
    units: set[str] = {"hour"}

    def scope(project: str | None) -> str | None:
        if project is not None:
            projects.add(project)
        return _agent("project", project)

    def person(member: str | None) -> str | None:
        if member is not None:
            people.add(member)
        return _agent("member", member)

    for e in data["effort"]:
        if e["hours"] is None:
            continue
        project = scope(e["project"])
        event = {
            "@id": _iri("effort", e["key"]),
            "@type": "EconomicEvent",
            "action": "work",
            "provider": person(e["member"]),
            "receiver": project,
            "inScopeOf": project,
            "effortQuantity": _quantity(e["hours"], "hour"),
            **_when(e["start"], e["end"]),
        }
        if e["task"] is not None:
            event["note"] = f"task {e['task']}"
        if e["weight"] is not None:
            event["peershop:weight"] = str(e["weight"])
        graph.append(event)
    for u in data["use"]:
        if u["hours"] is None:
            continue
        project = scope(u["project"])
        tools.add(u["tool"])
        units.add("one")
        graph.append(
            {
                "@id": _iri("use", u["key"]),
                "@type": "EconomicEvent",
                "action": "use",
                "provider": project,
                "receiver": person(u["member"]),
                "inScopeOf": project,
                "resourceInventoriedAs": _iri("tool", u["tool"]),
                "effortQuantity": _quantity(u["hours"], "hour"),
                "resourceQuantity": _quantity(Decimal(1), "one"),
                **_when(u["start"], u["end"]),
            }
        )
    for c in data["consume"]:
        project = scope(c["project"])
        items.add(c["item"])
        units.add(c["unit"])
        graph.append(
            {
                "@id": _iri("consume", str(c["id"])),
                "@type": "EconomicEvent",
                "action": "consume",
                "provider": project,
                "receiver": person(c["member"]),
                "inScopeOf": project,
                "resourceConformsTo": _iri("item", c["item"]),
                "resourceQuantity": _quantity(c["qty"], _unit_ref(c["unit"])),
                **_when(c["at"], None),
            }
        )
    declared: list[dict[str, Any]] = []
    declared += [{"@id": _iri("member", m), "@type": "Person", "name": m} for m in sorted(people)]
    declared += [
        {"@id": _iri("project", p), "@type": "Organization", "name": p} for p in sorted(projects)
    ]
    declared += [
        {"@id": _iri("tool", t), "@type": "EconomicResource", "name": t} for t in sorted(tools)
    ]
    declared += [
        {"@id": _iri("item", i), "@type": "ResourceSpecification", "name": i} for i in sorted(items)
    ]
    declared += [{"@id": _unit_iri(u), "@type": "Unit", "label": u} for u in sorted(units)]
    # a unit is a term of its own, so ``"hasUnit": "hour"`` reads as om2:hour
    unit_terms = {u: _unit_iri(u) for u in sorted(units) if _unit_ref(u) == u}
    context = {**VF_PREFIXES, **VF_TERMS, **unit_terms}
    return {"@context": context, "@graph": declared + graph}


def render(data: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        return to_json(data)
    if fmt == "csv":
        return to_csv(data)
    if fmt == "valueflows":
        return json.dumps(to_valueflows(data), indent=1)
    raise ExportError(f"format must be one of {', '.join(FORMATS)}")
