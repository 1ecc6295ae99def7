"""Reads shared by the pages and the API: presence, device health, recent events."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hub.store.models import DeadLetter, Device, Event, Member, UsageSession
from hub.store.shop_store import current_presence
from web.state import WebState


@dataclass(frozen=True)
class Present:
    handle: str
    name: str
    since: datetime


def presence(state: WebState, session: Session) -> list[Present]:
    """Who is signed in now, at any site: the rules' memory for the hub's own site, the
    records for the others (and for every site without a hub)."""
    if state.hub is not None:
        present = current_presence(session, except_site=state.hub.cfg.site.id)
        for member, since in state.hub.present().items():
            present[member] = min(since, present.get(member, since))
    else:
        present = current_presence(session)
    names: dict[str, str] = {}
    if present:
        query = select(Member.handle, Member.name).where(Member.handle.in_(present))
        names = {handle: name for handle, name in session.execute(query)}
    rows = [Present(h, names.get(h, h), since) for h, since in present.items()]
    return sorted(rows, key=lambda p: p.since)


@dataclass(frozen=True)
class Health:
    offline: list[Device]
    pending: list[Device]
    dead_letters_hour: int
    online: int
    total: int


def device_health(session: Session, now: datetime | None = None) -> Health:
    now = now or datetime.now(UTC)
    devices = list(session.scalars(select(Device).order_by(Device.id)))
    hour_ago = now - timedelta(hours=1)
    dead = session.scalar(
        select(func.count(DeadLetter.id)).where(DeadLetter.received_at >= hour_ago)
    )
    return Health(
        offline=[d for d in devices if d.approval == "approved" and not d.online],
        pending=[d for d in devices if d.approval == "pending"],
        dead_letters_hour=dead or 0,
        online=sum(1 for d in devices if d.online),
        total=len(devices),
    )


def recent_events(session: Session, limit: int = 15) -> list[Event]:
    """The newest events by id (the primary key: fast on a million-row log)."""
    return list(session.scalars(select(Event).order_by(Event.id.desc()).limit(limit)))


def recent_runs(session: Session, now: datetime, limit: int = 8) -> list[UsageSession]:
    """The newest runs no one badged for (tools on a smart plug with no reader) of the
    last day, open ones included: the floor shows them; no one is charged for them."""
    return list(
        session.scalars(
            select(UsageSession)
            .where(UsageSession.member.is_(None), UsageSession.start >= now - timedelta(days=1))
            .order_by(UsageSession.start.desc(), UsageSession.id.desc())
            .limit(limit)
        )
    )


def event_summary(ev: Event, *, coordinator: bool) -> str:
    """One line for the feed; a badge's uid only for coordinators."""
    data: dict[str, Any] = ev.data or {}
    if ev.type == "power":
        return f"{data.get('w', '?')} W"
    if ev.type == "running":
        return "on" if data.get("on") else "off"
    if ev.type in ("badge", "badge_removed"):
        return str(data.get("uid", "")) if coordinator else "card"
    if ev.type == "button":
        return str(data.get("name", ""))
    if ev.type == "consume":
        return f"{data.get('qty', '')} {data.get('unit', '')} {data.get('item', '')}".strip()
    if ev.type == "fault":
        return str(data.get("code", ""))
    return ""
