"""Enrolment: give a member "the last unknown badge seen at reader X".

A coordinator asks the new member to tap their card at the desk reader, then assigns
it, instead of typing hex (Tampere Hacklab asked for exactly this).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.errors import EnrolError
from hub.store.models import Badge, BadgeDecision, Member
from hub.store.shop_store import bump_shop_version


@dataclass(frozen=True)
class UnknownBadge:
    uid: str
    device_id: str
    at: datetime


def unknown_badges(session: Session, device_id: str, limit: int = 5) -> list[UnknownBadge]:
    """The latest taps at ``device_id`` by cards that belong to nobody now, newest first."""
    known = set(session.scalars(select(Badge.uid)))
    seen: list[UnknownBadge] = []
    rows = session.execute(
        select(BadgeDecision.uid, BadgeDecision.at)
        .where(BadgeDecision.device_id == device_id, BadgeDecision.member.is_(None))
        .order_by(BadgeDecision.id.desc())
        .limit(200)
    )
    for uid, at in rows:
        if uid in known or any(b.uid == uid for b in seen):
            continue
        seen.append(UnknownBadge(uid, device_id, at))
        if len(seen) == limit:
            break
    return seen


def assign_badge(session: Session, uid: str, handle: str) -> Badge:
    """Give ``uid`` to member ``handle`` (a running hub picks it up within seconds)."""
    member = session.scalar(select(Member).where(Member.handle == handle))
    if member is None:
        raise EnrolError(f"no member with handle {handle!r}")
    existing = session.get(Badge, uid)
    if existing is not None:
        owner = session.get(Member, existing.member_id)
        raise EnrolError(f"badge {uid} already belongs to {owner.handle if owner else '?'}")
    badge = Badge(uid=uid, member_id=member.id)
    session.add(badge)
    bump_shop_version(session)
    session.flush()
    return badge


def enrol_last_unknown(session: Session, device_id: str, handle: str) -> UnknownBadge:
    latest = unknown_badges(session, device_id, limit=1)
    if not latest:
        raise EnrolError(f"no unknown badge has been seen at {device_id}")
    assign_badge(session, latest[0].uid, handle)
    return latest[0]
