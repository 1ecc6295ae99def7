"""Reads of the period page (``/periods``) and of a period's allocations in the API.

The numbers of a close are :func:`hub.ledger.closing.period_summary`; these are the
rest of what the page shows: the totals per project, the charts, the runs no one badged
for and the reservations.  Each function takes a :class:`Session` and returns plain
data; a period is the :class:`~hub.store.models.Period` row that
:func:`hub.ledger.closing.recent_periods` and ``period_summary`` use too.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import String, func, select, type_coerce
from sqlalchemy.orm import Session

from hub.store.models import EffortRecord, Period, PeriodBalance, SlotReservation, UsageSession

MAX_ID = 2**31 - 1  # periods.id is INTEGER, 32 bits on PostgreSQL: a larger id names nothing


def find_period(session: Session, period_id: int) -> Period | None:
    """The period a page's or the API's URL names, or None (also for an id past
    INTEGER, which would be a database error, not a missing period)."""
    if not 0 <= period_id <= MAX_ID:
        return None
    return session.get(Period, period_id)


def newest_periods(session: Session, limit: int) -> list[Period]:
    """``/api/v1/periods``: the ``limit`` latest periods, running or closed, newest first."""
    return list(session.scalars(select(Period).order_by(Period.start.desc()).limit(limit)))


def balance_totals(session: Session, period_id: int) -> dict[str, dict[str, Decimal]]:
    """Per project, the sums of every member's credited, expected and balance in the
    period: the totals line of the period page and of the API's allocations."""
    totals: dict[str, dict[str, Decimal]] = defaultdict(
        lambda: {"credited": Decimal(0), "expected": Decimal(0), "balance": Decimal(0)}
    )
    # Exact sums of the stored decimal text, read as Core rows (no ORM object per member).
    rows = session.execute(
        select(
            PeriodBalance.project_id,
            type_coerce(PeriodBalance.credited, String),
            type_coerce(PeriodBalance.expected, String),
            type_coerce(PeriodBalance.balance, String),
        ).where(PeriodBalance.period_id == period_id)
    )
    for project, credited, expected, balance in rows:
        t = totals[project]
        t["credited"] += Decimal(credited)
        t["expected"] += Decimal(expected)
        t["balance"] += Decimal(balance)
    return dict(totals)


@dataclass(frozen=True)
class Bid:
    """One member's bid for a scarce slot."""

    member: str
    max: Decimal
    outcome: str | None
    multiplier: Decimal | None


def usage_per_tool_day(session: Session, period: Period) -> dict[str, list[tuple[str, float]]]:
    """The period page's use charts: busy hours per tool and (UTC) day of the sessions
    started in the period."""
    day = func.date(UsageSession.start)
    rows = session.execute(
        select(UsageSession.tool_id, day, func.sum(UsageSession.busy_s))
        .where(UsageSession.start >= period.start, UsageSession.start < period.end)
        .group_by(UsageSession.tool_id, day)
        .order_by(UsageSession.tool_id, day)
    )
    out: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for tool, d, busy in rows:
        label = d.isoformat() if isinstance(d, date) else str(d)
        out[tool].append((label, (busy or 0) / 3600))
    return out


def unattended_runs(session: Session, period: Period, now: datetime) -> list[dict[str, Any]]:
    """The period page's runs table: per tool, the runs started in the period that no
    one badged for (a printer on a smart plug): how many, their hours (an open one up to
    ``now``), busy hours and energy.  Shown, never charged."""
    rows = session.execute(
        select(
            UsageSession.tool_id,
            UsageSession.start,
            UsageSession.end,
            UsageSession.busy_s,
            UsageSession.wh,
        ).where(
            UsageSession.start >= period.start,
            UsageSession.start < period.end,
            UsageSession.member.is_(None),
        )
    )
    sums: dict[str, dict[str, Any]] = {}
    for tool, start, end, busy_s, wh in rows:
        t = sums.setdefault(tool, {"tool": tool, "runs": 0, "hours": 0.0, "busy_hours": 0.0})
        t["runs"] += 1
        t["hours"] += max(((end or now) - start).total_seconds(), 0) / 3600
        t["busy_hours"] += (busy_s or 0) / 3600
        t["kwh"] = t.get("kwh", 0.0) + (wh or 0) / 1000
    return [sums[tool] for tool in sorted(sums)]


def effort_per_project(session: Session, period: Period) -> list[tuple[str, Decimal]]:
    """The period page's effort chart: weighted hours per project of the effort started
    in the period."""
    sums: dict[str, Decimal] = defaultdict(Decimal)
    # Counted per distinct (project, hours, weight) in the database: a period has thousands
    # of records but few distinct pairs, and each product is then taken once, exactly.
    hours = type_coerce(EffortRecord.hours, String)
    weight = type_coerce(EffortRecord.weight, String)
    rows = session.execute(
        select(EffortRecord.project_id, hours, weight, func.count())
        .where(
            EffortRecord.start >= period.start,
            EffortRecord.start < period.end,
            EffortRecord.hours.is_not(None),
            EffortRecord.weight.is_not(None),
        )
        .group_by(EffortRecord.project_id, hours, weight)
    )
    for project, h, w, n in rows:
        sums[project or "(no project)"] += Decimal(h) * Decimal(w) * n
    return sorted(sums.items())


def reservations_in(session: Session, period: Period) -> list[dict[str, Any]]:
    """The period page's reservations table: the scarce slots starting in the period,
    their bids (:class:`Bid`), outcome and multiplier."""
    slots: dict[tuple[str, datetime], dict[str, Any]] = {}
    rows = session.scalars(
        select(SlotReservation)
        .where(SlotReservation.start >= period.start, SlotReservation.start < period.end)
        .order_by(SlotReservation.start, SlotReservation.tool_id, SlotReservation.member)
    )
    for r in rows:
        slot = slots.setdefault(
            (r.tool_id, r.start),
            {
                "tool": r.tool_id,
                "start": r.start,
                "end": r.end,
                "bids": [],
                "winner": None,
                "multiplier": None,
                "cleared_at": r.cleared_at,
            },
        )
        slot["bids"].append(Bid(r.member, r.max, r.outcome, r.multiplier))
        if r.outcome == "won":
            slot["winner"], slot["multiplier"] = r.member, r.multiplier
    return list(slots.values())
