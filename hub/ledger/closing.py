"""Closing an accounting period, and reading what a close stored.

Closing a period (:func:`close_period`, :func:`close_due_periods`) runs the rules of
docs/sharing-models.md with :mod:`hub.peerconomy.economy`, per project by the project's ``model``:

* effort: the period's effort records (by ``start``) with a task and a weight; records
  whose task was never chosen are left out and listed in the close report;
* use: hours of tool use from the usage sessions started in the period (an open session
  counts up to the period's end); busy hours instead when the tool's option ``units`` is
  ``busy_hours``.  Hours inside a won reservation of a scarce slot count as scarce units
  at that slot's multiplier (rule (c)); the rest are plain units;
* participants: members who signed in, used a tool or contributed in the period, each
  with their participation factor (:class:`~hub.store.models.ParticipationFactor`, the shop
  file's ``members[].factor``; 1 without one), which weighs their share of what is
  shared flat: all of E under flat_rate, the overhead under production_effort.

It stores every member's credited / expected / balance per project
(:class:`~hub.store.models.PeriodBalance`, with the running balance over all periods), the
unit cost of every resource (:class:`~hub.store.models.PeriodResourceCost`) and the next
weight of every open task by rule (a) (:class:`~hub.store.models.TaskWeightHistory`, and the
task's ``weight`` is set to it).  A closed period is never changed: the session refuses
to flush a change to it or its results; a correction is a new record in the open period.

Two hubs closing at once close each period once: the close first sets ``closed_at`` with
``UPDATE ... WHERE closed_at IS NULL`` (a row lock on PostgreSQL, the write lock on
SQLite), and whoever updates no row leaves the period alone.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import String, case, func, insert, literal, select, type_coerce, update
from sqlalchemy.orm import Session

from hub.errors import PeriodError
from hub.peerconomy import economy as pc
from hub.rules.records import EffortSource
from hub.store.models import (
    EffortRecord,
    Member,
    ParticipationFactor,
    Period,
    PeriodBalance,
    PeriodResourceCost,
    PresenceChange,
    Project,
    ProjectRules,
    SlotReservation,
    Task,
    TaskClaim,
    TaskState,
    TaskWeightHistory,
    Tool,
    UsageRecord,
    UsageSession,
    UTCDateTime,
)

if TYPE_CHECKING:
    from hub.config import Config

from hub.ledger.periods import (
    DEFAULT_PROJECT,
    JSON_PLACES,
    MS_PER_HOUR,
    STORED_PLACES,
    _create,
    _utc,
    current_period,
    open_period,
)
from hub.ledger.reservations import clear_due

# ---------------------------------------------------------------------------------------
# the close


@dataclass(frozen=True)
class ClosedPeriod:
    """What closing a period computed and stored."""

    period_id: int
    start: datetime
    end: datetime
    closed_at: datetime
    allocations: dict[str, pc.Allocation]  # per project
    excluded: list[dict[str, Any]]  # effort records left out (no task or weight)
    weights: dict[str, tuple[Decimal, Decimal]] = field(default_factory=dict)  # (w, w')


def _default_project(projects: dict[str, Project]) -> str:
    if DEFAULT_PROJECT in projects or not projects:
        return DEFAULT_PROJECT
    return min(projects)


def _duration_ms(session: Session, period: Period) -> tuple[Any, Any]:
    """SQL for a session's milliseconds inside the period (an open one runs to its end),
    and for its busy milliseconds."""
    end = literal(period.end, UTCDateTime)
    stop = func.coalesce(UsageSession.end, end)
    busy = func.round(UsageSession.busy_s * 1000)
    if session.get_bind().dialect.name == "sqlite":
        span = func.julianday(func.min(stop, end)) - func.julianday(UsageSession.start)
        return func.max(func.round(span * 86_400_000), 0), busy
    span = func.extract("epoch", func.least(stop, end) - UsageSession.start)
    return func.greatest(func.round(span * 1000), 0), busy


def _use(
    session: Session, period: Period, tools: dict[str, Tool], default: str
) -> tuple[dict[tuple[str, str, str], Decimal], dict[tuple[str, str], list[Decimal]], set[str]]:
    """Units of use per (project, member, tool), scarce hours per (project, tool) as
    [hours, hours x multiplier], and the members who used a tool.

    Summed in whole milliseconds, so the sum does not depend on the order of the rows.
    """
    won: dict[tuple[str, str], list[tuple[datetime, datetime, Decimal]]] = defaultdict(list)
    for r in session.execute(
        select(SlotReservation).where(
            SlotReservation.outcome == "won",
            SlotReservation.end > period.start,
            SlotReservation.start < period.end,
        )
    ).scalars():
        won[(r.member, r.tool_id)].append((r.start, r.end, r.multiplier or Decimal(1)))
    busy_tools = {t.id for t in tools.values() if (t.options or {}).get("units") == "busy_hours"}
    project_of = {t.id: t.project_id or default for t in tools.values()}
    plain_ms: dict[tuple[str, str, str], int] = {}
    scarce: dict[tuple[str, str], list[Decimal]] = {}
    extra: dict[tuple[str, str, str], Decimal] = defaultdict(Decimal)
    members: set[str] = set()
    in_period = (UsageSession.start >= period.start, UsageSession.start < period.end)
    # Summed in the database, per member and tool, in whole milliseconds.
    ms, busy_ms = _duration_ms(session, period)
    for member, tool_id, total, busy in (
        session.connection()
        .execute(
            select(UsageSession.member, UsageSession.tool_id, func.sum(ms), func.sum(busy_ms))
            # an unattended run (no member) is shown, never charged: no one's units
            .where(*in_period, UsageSession.member.is_not(None))
            .group_by(UsageSession.member, UsageSession.tool_id)
        )
        .all()
    ):
        members.add(member)
        key = (project_of.get(tool_id, default), member, tool_id)
        plain_ms[key] = int(busy if tool_id in busy_tools else total)
    # Members who won scarce slots: their sessions one by one, to find the scarce hours.
    for (member, tool_id), slots in sorted(won.items()):
        key = (project_of.get(tool_id, default), member, tool_id)
        plain_ms[key] = 0
        for start, end, busy_s in session.execute(
            select(UsageSession.start, UsageSession.end, UsageSession.busy_s).where(
                *in_period, UsageSession.member == member, UsageSession.tool_id == tool_id
            )
        ).all():
            stop = period.end if end is None else min(end, period.end)
            n = max(round((stop - start).total_seconds() * 1000), 0)
            units_ms = round(busy_s * 1000) if tool_id in busy_tools else n
            for s, e, m in slots:
                overlap = round((min(e, stop) - max(s, start)).total_seconds() * 1000)
                if overlap > 0 and n > 0:
                    part = Decimal(units_ms * overlap) / Decimal(n) / MS_PER_HOUR
                    units_ms -= units_ms * overlap // n
                    extra[key] += part * m
                    acc = scarce.setdefault((key[0], tool_id), [Decimal(0), Decimal(0)])
                    acc[0] += part
                    acc[1] += part * m
            plain_ms[key] += units_ms
    # Hours to 9 places (3.6 microseconds): exact enough, and small denominators keep
    # the engine's exact arithmetic fast.
    units = {k: (Decimal(v) / MS_PER_HOUR).quantize(STORED_PLACES) for k, v in plain_ms.items()}
    for k, v in extra.items():
        units[k] = (units.get(k, Decimal(0)) + v).quantize(STORED_PLACES)
    return units, scarce, members


def _load_period(session: Session, period: Period) -> dict[str, Any]:
    """The period's records, summed per (project, member, resource) for the engine.

    Credit and pools are sums of ``hours x weight``, so one entry per member and resource
    gives :func:`hub.peerconomy.economy.share` exactly what one entry per record would.
    """
    projects = {p.id: p for p in session.execute(select(Project)).scalars()}
    default = _default_project(projects)
    tasks = {t.id: t for t in session.execute(select(Task)).scalars()}
    tools = {t.id: t for t in session.execute(select(Tool)).scalars()}
    pooled = {p.id for p in projects.values() if p.model == pc.Model.PRODUCTION_EFFORT}
    if default not in projects:
        pooled.add(default)
    excluded = []
    participants: set[str] = set()
    weighted: dict[tuple[str, str, str | None], Decimal] = defaultdict(Decimal)
    # Core rows (no ORM loading), hours and weights as their stored text: a shop posts
    # few distinct weights and hours, so each product is computed once.
    rows = (
        session.connection()
        .execute(
            select(
                # the key only where the record is left out, to name it in the report
                case(
                    (
                        EffortRecord.task_id.is_(None)
                        | EffortRecord.hours.is_(None)
                        | EffortRecord.weight.is_(None),
                        EffortRecord.key,
                    )
                ),
                EffortRecord.member,
                EffortRecord.task_id,
                EffortRecord.project_id,
                type_coerce(EffortRecord.hours, String),
                type_coerce(EffortRecord.weight, String),
                EffortRecord.source,
            ).where(EffortRecord.start >= period.start, EffortRecord.start < period.end)
        )
        .all()
    )
    done_off_board: dict[str, int] = defaultdict(int)
    products: dict[tuple[str, str], Decimal] = {}
    # (record's project, task) -> (project, resource) the effort counts for
    targets: dict[tuple[str | None, str], tuple[str, str | None]] = {}
    for key, member, task_id, project_id, hours, weight, source in rows:
        participants.add(member)
        if task_id is None or weight is None or hours is None:
            why = "no task chosen" if task_id is None else "no weight or hours"
            excluded.append({"key": key, "member": member, "task": task_id, "reason": why})
            continue
        target = targets.get((project_id, task_id))
        if target is None:
            task = tasks.get(task_id)
            project = project_id or (task.project_id if task else None) or default
            # Only production_effort has resource pools; the others need one sum per member.
            resource = task.resource if task and project in pooled else None
            target = targets[(project_id, task_id)] = (project, resource)
        wh = products.get((hours, weight))
        if wh is None:
            wh = products[(hours, weight)] = Decimal(hours) * Decimal(weight)
        weighted[(target[0], member, target[1])] += wh
        if source != EffortSource.BOARD:  # board effort is counted by its claim
            done_off_board[task_id] += 1
    # The engine's results do not depend on the order of its entries: none is sorted.
    effort: dict[str, list[pc.EffortEntry]] = defaultdict(list)
    negative = []
    one = Decimal(1)
    for (project, member, resource), wh in weighted.items():
        if wh < 0:
            negative.append((project, member, wh))
            continue
        task_label = resource or "overhead"
        effort[project].append(pc.EffortEntry(member, task_label, wh, one, resource, project))
    for project, member, wh in sorted(negative):
        excluded.append(
            {
                "key": None,
                "member": member,
                "task": None,
                "reason": f"corrections leave {wh} weighted hours in {project}; counted as 0",
            }
        )
    units, scarce, users = _use(session, period, tools, default)
    participants |= users
    use: dict[str, list[pc.UseEntry]] = defaultdict(list)
    for (project, member, tool_id), n in units.items():
        if n > 0:
            use[project].append(pc.UseEntry(member, tool_id, n))
    participants.update(
        session.execute(
            select(PresenceChange.member).where(
                PresenceChange.at >= period.start, PresenceChange.at < period.end
            )
        ).scalars()
    )
    participants.update(
        m
        for m in session.execute(
            select(UsageRecord.member).where(
                UsageRecord.at >= period.start, UsageRecord.at < period.end
            )
        ).scalars()
        if m is not None
    )
    return {
        "projects": projects,
        "tasks": tasks,
        "effort": effort,
        "use": use,
        "excluded": excluded,
        "participants": participants,
        "factors": dict(
            session.execute(
                select(Member.handle, ParticipationFactor.factor).join(
                    Member, Member.id == ParticipationFactor.member_id
                )
            ).all()
        ),
        "done_off_board": done_off_board,
        "scarce_hours": scarce,
    }


def _running(session: Session, period_id: int) -> dict[tuple[str, str], Decimal]:
    last = (
        select(
            PeriodBalance.member,
            PeriodBalance.project_id,
            func.max(PeriodBalance.period_id).label("pid"),
        )
        .where(PeriodBalance.period_id < period_id)
        .group_by(PeriodBalance.member, PeriodBalance.project_id)
        .subquery()
    )
    rows = session.execute(
        select(PeriodBalance.member, PeriodBalance.project_id, PeriodBalance.running).join(
            last,
            (PeriodBalance.member == last.c.member)
            & (PeriodBalance.project_id == last.c.project_id)
            & (PeriodBalance.period_id == last.c.pid),
        )
    ).all()
    return {(m, p): r for m, p, r in rows}


def _next_weights(
    session: Session, period: Period, tasks: dict[str, Task], done_off_board: dict[str, int]
) -> dict[str, tuple[Decimal, Decimal]]:
    claims: dict[str, int] = defaultdict(int)
    for task_id in session.execute(
        select(TaskClaim.task_id).where(TaskClaim.period_id == period.id)
    ).scalars():
        claims[task_id] += 1
    states = {s.task_id: s for s in session.execute(select(TaskState)).scalars()}
    rules = {r.project_id: r for r in session.execute(select(ProjectRules)).scalars()}
    out = {}
    for task in sorted(tasks.values(), key=lambda t: t.id):
        state = states.get(task.id)
        if state is not None and state.status != "open":
            continue
        rule = rules.get(task.project_id or "")
        k, lo, hi = (rule.gain, rule.weight_min, rule.weight_max) if rule else (pc.K, pc.LO, pc.HI)
        pinned = bool(state and state.pinned)
        v = claims[task.id] + done_off_board.get(task.id, 0)
        slots = max(task.slots, 1)
        w = task.weight
        w2 = pc.next_weight(w, slots, v, k, lo, hi, pinned=pinned)
        session.add(
            TaskWeightHistory(
                task_id=task.id,
                period_id=period.id,
                weight=w,
                slots=slots,
                volunteers=v,
                next_weight=w2,
                pinned=pinned,
            )
        )
        task.weight = w2
        out[task.id] = (w, w2)
    return out


def _close(session: Session, cfg: Config, period: Period, now: datetime) -> ClosedPeriod | None:
    """Close one period; None when another hub (or an earlier call) closed it."""
    # Bids for slots in this period that nobody cleared yet close now, at the latest.
    clear_due(session, cfg, period.end, lead=timedelta(0))
    claimed = session.execute(
        update(Period)
        .where(Period.id == period.id, Period.closed_at.is_(None))
        .values(closed_at=now)
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:
        session.expire(period)
        return None
    closing = session.info.setdefault("peershop_closing", set())
    closing.add(period.id)
    try:
        data = _load_period(session, period)
        running = _running(session, period.id)
        allocations: dict[str, pc.Allocation] = {}
        project_ids = sorted(set(data["effort"]) | set(data["use"]) | set(data["projects"]))
        factors = data["factors"]
        participants = [
            pc.Participant(m, factors[m]) if m in factors else m
            for m in sorted(data["participants"])
        ]
        for project_id in project_ids:
            project = data["projects"].get(project_id)
            model = project.model if project else pc.Model.PRODUCTION_EFFORT
            effort = data["effort"].get(project_id, [])
            use = data["use"].get(project_id, [])
            if not effort and not use:
                continue
            alloc = pc.share(model, effort, use, participants=participants)
            allocations[project_id] = alloc
            rows = [
                {
                    "period_id": period.id,
                    "project_id": project_id,
                    "member": member,
                    "credited": s.credited,
                    "expected": s.expected,
                    "balance": s.balance,
                    "running": pc._tidy(running.get((member, project_id), Decimal(0)) + s.balance),
                }
                for member, s in alloc.members.items()
            ]
            if rows:  # one executemany: thousands of members close in a blink
                session.connection().execute(insert(PeriodBalance.__table__), rows)
            for resource, cost in alloc.resources.items():
                raw, weighted = data["scarce_hours"].get((project_id, resource), (0, 0))
                raw, weighted = Decimal(raw), Decimal(weighted)
                session.add(
                    PeriodResourceCost(
                        period_id=period.id,
                        project_id=project_id,
                        resource=resource,
                        units=cost.units,
                        unit_cost=cost.unit_cost,
                        scarce_units=raw.quantize(STORED_PLACES),
                        scarce_multiplier=(weighted / raw).quantize(STORED_PLACES) if raw else None,
                    )
                )
        weights = _next_weights(session, period, data["tasks"], data["done_off_board"])
        period.report = {
            "excluded": data["excluded"],
            "totals": {p: str(a.total) for p, a in allocations.items()},
            "applied": {p: a.applied for p, a in allocations.items()},
            "participants": len(participants),
        }
        session.flush()
    finally:
        closing.discard(period.id)
    session.refresh(period)
    return ClosedPeriod(
        period_id=period.id,
        start=period.start,
        end=period.end,
        closed_at=now,
        allocations=allocations,
        excluded=data["excluded"],
        weights=weights,
    )


def _age(span: timedelta) -> str:
    """A span as people read it: ``3 s``, ``12 min``, ``2 h 5 min``, ``1 d 4 h``."""
    seconds = int(span.total_seconds())
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        hours, minutes = divmod(seconds // 60, 60)
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(seconds // 3600, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def close_due_periods(session: Session, cfg: Config, now: datetime) -> list[ClosedPeriod]:
    """Close every period whose end has passed, oldest first, and open the next ones.

    The hub calls this from its timer; it is idempotent and safe when two hubs call it at
    once (see the module docstring).  The caller owns the transaction and commits.  It
    also clears the scarce slots whose bids have closed
    (:func:`hub.ledger.reservations.clear_due`), so one timer call runs every period job.
    """
    now = _utc(now)
    clear_due(session, cfg, now)
    closed = []
    if session.execute(select(Period.id).limit(1)).first() is None:
        open_period(session, cfg, now)
        return closed
    while True:
        due = session.execute(
            select(Period)
            .where(Period.closed_at.is_(None), Period.end <= now)
            .order_by(Period.start)
            .limit(1)
        ).scalar()
        if due is None:
            last = session.execute(select(Period).order_by(Period.start.desc()).limit(1)).scalar()
            if last is not None and last.end <= now:
                open_period(session, cfg, now)
                continue
            break
        result = _close(session, cfg, due, now)
        if result is not None:
            closed.append(result)
        open_period(session, cfg, due.end)
    return closed


def close_period(
    session: Session, cfg: Config, at: datetime, *, force: bool = False
) -> list[ClosedPeriod]:
    """``peershop period close [--at] [--force]``: close the period running at ``at``
    early, at ``at``.

    Periods whose end has passed by ``at`` are closed first.  The period running at ``at``
    then ends at ``at``; the next one runs from ``at`` to the regular boundary.  Returns
    the periods closed, oldest first.

    A period that began less than ``period.min_length`` before ``at`` is left running
    unless ``force``: a close repeated by mistake (a second command, a second click)
    would make a period of a few seconds, whose balances count almost nothing.  Raises
    :class:`PeriodError` when that leaves nothing closed.
    """
    at = _utc(at)
    closed = close_due_periods(session, cfg, at)
    period = open_period(session, cfg, at)
    if period.start == at:
        if closed:
            return closed
        raise PeriodError(f"the period starting {at.isoformat()} has nothing to close yet")
    if period.closed_at is not None:
        raise PeriodError(f"period {period.id} is closed already")
    minimum: timedelta = cfg.period.min_length
    if not force and at - period.start < minimum:
        if closed:
            return closed
        age = _age(at - period.start)
        raise PeriodError(
            f"period {period.id} began {age} ago ({period.start.isoformat()}), less than "
            f"period.min_length ({_age(minimum)}): closing it now makes a period of {age} "
            "(`peershop period close --force` closes it anyway)"
        )
    regular_end = period.end
    period.end = at
    session.flush()
    result = _close(session, cfg, period, at)
    if result is None:
        raise PeriodError(f"period {period.id} was closed by another hub")
    _create(session, at, regular_end)
    return [*closed, result]


# ---------------------------------------------------------------------------------------
# reading closed periods


def period_summary(session: Session, period: Period) -> dict[str, Any]:
    """A period as docs/http-api.md shows it: members per project and resource unit costs."""
    members: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    for b in session.execute(
        select(PeriodBalance)
        .where(PeriodBalance.period_id == period.id)
        .order_by(PeriodBalance.project_id, PeriodBalance.member)
    ).scalars():
        members[b.project_id][b.member] = {
            "credited": _num(b.credited),
            "expected": _num(b.expected),
            "balance": _num(b.balance),
            "running": _num(b.running),
        }
    resources: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for c in session.execute(
        select(PeriodResourceCost)
        .where(PeriodResourceCost.period_id == period.id)
        .order_by(PeriodResourceCost.project_id, PeriodResourceCost.resource)
    ).scalars():
        resources[c.project_id][c.resource] = {
            "units": _num(c.units),
            "unit_cost": None if c.unit_cost is None else _num(c.unit_cost),
            "scarce_units": _num(c.scarce_units),
        }
    return {
        "id": period.id,
        "start": period.start.isoformat(),
        "end": period.end.isoformat(),
        "closed_at": None if period.closed_at is None else period.closed_at.isoformat(),
        "projects": {
            p: {"members": members.get(p, {}), "resources": resources.get(p, {})}
            for p in sorted(set(members) | set(resources))
        },
        "excluded": (period.report or {}).get("excluded", []),
    }


def _num(d: Decimal) -> float:
    return float(d.quantize(JSON_PLACES))


def recent_periods(session: Session, now: datetime, count: int = 2) -> list[Period]:
    """The period running at ``now`` (if stored) and the last ``count - 1`` closed ones."""
    out = []
    current = current_period(session, now)
    if current is not None:
        out.append(current)
    out += list(
        session.execute(
            select(Period)
            .where(Period.closed_at.is_not(None))
            .order_by(Period.start.desc())
            .limit(count - 1)
        ).scalars()
    )
    return out
