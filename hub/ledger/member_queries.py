"""Reads of a member's own page (``/me``): who they are, their trainings, badges,
balance per period, and the scarce tools they may bid for.

Their sessions and effort are :mod:`hub.store.record_queries`, their bids
:func:`hub.ledger.reservations.reservations_of`.  Each function
takes a :class:`Session` and returns plain data.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.store.models import (
    Badge,
    Member,
    Period,
    PeriodBalance,
    Tool,
    Training,
    TrainingGrant,
)


@dataclass(frozen=True)
class MemberCard:
    """Who a page's heading names."""

    id: int
    handle: str
    name: str


def member_by_handle(session: Session, handle: str | None) -> MemberCard | None:
    """The member a login belongs to, or None (an API token of no member)."""
    if handle is None:
        return None
    row = session.execute(
        select(Member.id, Member.handle, Member.name).where(Member.handle == handle)
    ).first()
    return None if row is None else MemberCard(*row)


@dataclass(frozen=True)
class TrainingLine:
    """A training a member holds: since when, by whom (a name), until when."""

    id: str
    name: str
    granted_at: datetime
    expires_at: datetime | None
    granted_by: str | None


def trainings_of(session: Session, member_id: int) -> list[TrainingLine]:
    """The me page's "Trainings", by training id."""
    rows = session.execute(
        select(
            Training.id,
            Training.name,
            TrainingGrant.granted_at,
            TrainingGrant.expires_at,
            Member.name,
        )
        .join(TrainingGrant, TrainingGrant.training_id == Training.id)
        .outerjoin(Member, Member.id == TrainingGrant.granted_by_id)
        .where(TrainingGrant.member_id == member_id)
        .order_by(Training.id)
    )
    return [TrainingLine(*row) for row in rows]


@dataclass(frozen=True)
class BadgeLine:
    uid: str
    created_at: datetime


def badges_of(session: Session, member_id: int) -> list[BadgeLine]:
    """The me page's "Badges": a member's badges (uid and since when)."""
    rows = session.execute(select(Badge.uid, Badge.created_at).where(Badge.member_id == member_id))
    return [BadgeLine(uid, created_at) for uid, created_at in rows]


def balance_history(session: Session, handle: str, count: int) -> list[dict[str, Any]]:
    """The me page's balance chart and table: a member's credited, expected and balance
    per closed period (all projects summed), for the ``count`` latest periods that
    counted them, oldest first."""
    periods = session.execute(
        select(Period.id, Period.start, Period.end)
        .join(PeriodBalance, PeriodBalance.period_id == Period.id)
        .where(PeriodBalance.member == handle)
        .group_by(Period.id, Period.start, Period.end)
        .order_by(Period.start.desc())
        .limit(count)
    ).all()
    if not periods:
        return []
    sums: dict[int, dict[str, Decimal]] = defaultdict(
        lambda: {"credited": Decimal(0), "expected": Decimal(0), "balance": Decimal(0)}
    )
    for b in session.scalars(
        select(PeriodBalance).where(
            PeriodBalance.member == handle, PeriodBalance.period_id.in_([p.id for p in periods])
        )
    ):
        line = sums[b.period_id]
        line["credited"] += b.credited
        line["expected"] += b.expected
        line["balance"] += b.balance
    return [{"id": p.id, "start": p.start, "end": p.end, **sums[p.id]} for p in reversed(periods)]


@dataclass(frozen=True)
class ScarceTool:
    """A tool with scarce hours: ``scarce`` is the shop file's entry (``slots``,
    ``per_slot``)."""

    id: str
    name: str
    scarce: dict[str, Any]


def scarce_tools(session: Session) -> list[ScarceTool]:
    """The tools a member may bid for a slot of, by id: the me page's reserve form."""
    rows = session.execute(select(Tool.id, Tool.name, Tool.scarce).order_by(Tool.id))
    return [ScarceTool(i, name, scarce) for i, name, scarce in rows if scarce]
