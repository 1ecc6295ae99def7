"""Reads of the Admin pages (``/admin/``, ``/admin/trainings``): members, tools,
trainings, API tokens and the readers where an unknown card was tapped.

Devices are :func:`hub.store.record_queries.devices`, training holders
:func:`hub.shopfile.tool_admin.holders`.  Each function takes a :class:`Session` and
returns plain data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hub.store.models import ApiToken, Badge, BadgeDecision, Member, Tool, Training
from hub.store.overrides import tool_overrides


def unknown_card_readers(session: Session, limit: int = 20) -> list[str]:
    """Admin's "assign a badge": readers where a card that belongs to nobody was tapped,
    latest first."""
    last = func.max(BadgeDecision.id)
    rows = session.execute(
        select(BadgeDecision.device_id, last)
        .where(BadgeDecision.member.is_(None))
        .group_by(BadgeDecision.device_id)
        .order_by(last.desc())
        .limit(limit)
    )
    return [device for device, _ in rows]


@dataclass(frozen=True)
class MemberLine:
    handle: str
    name: str
    roles: list[str]
    suspended: bool
    badges: list[str]  # uids


def members(session: Session) -> list[MemberLine]:
    """Admin's member list and its member menus, by handle, with each member's badges."""
    badges: dict[int, list[str]] = {}
    for member_id, uid in session.execute(
        select(Badge.member_id, Badge.uid).order_by(Badge.created_at, Badge.uid)
    ):
        badges.setdefault(member_id, []).append(uid)
    rows = session.execute(
        select(Member.id, Member.handle, Member.name, Member.roles, Member.suspended).order_by(
            Member.handle
        )
    )
    return [
        MemberLine(handle, name, list(roles or []), bool(suspended), badges.get(i, []))
        for i, handle, name, roles, suspended in rows
    ]


@dataclass(frozen=True)
class ToolLine:
    id: str
    name: str
    policy: str
    training_id: str | None
    locked: bool
    overridden: int  # settings set in Admin that a shop-file load keeps


def tools(session: Session) -> list[ToolLine]:
    """Admin's tool list, by id: policy, training, lock and how many settings Admin set."""
    return [
        ToolLine(t.id, t.name, t.policy, t.training_id, bool(t.locked), len(tool_overrides(t)))
        for t in session.scalars(select(Tool).order_by(Tool.id))
    ]


@dataclass(frozen=True)
class TrainingLine:
    id: str
    name: str


def trainings(session: Session) -> list[TrainingLine]:
    """Every training, by id: Admin's list and its training menus."""
    rows = session.execute(select(Training.id, Training.name).order_by(Training.id))
    return [TrainingLine(i, name) for i, name in rows]


@dataclass(frozen=True)
class TokenLine:
    id: int
    name: str
    role: str
    member: str | None
    created_at: datetime
    revoked_at: datetime | None


def tokens(session: Session) -> list[TokenLine]:
    """Admin's API tokens, oldest first (the token itself is never stored)."""
    rows = session.execute(
        select(
            ApiToken.id,
            ApiToken.name,
            ApiToken.role,
            ApiToken.member,
            ApiToken.created_at,
            ApiToken.revoked_at,
        ).order_by(ApiToken.id)
    )
    return [TokenLine(*row) for row in rows]
