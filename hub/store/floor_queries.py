"""Reads of the floor page (``/`` and its panels) and of the tool states the API serves.

Each function takes a :class:`Session` and returns plain data (frozen dataclasses,
dicts), so the web view renders what it is given and runs no SQL of its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hub.store.models import DeadLetter, Device, Event, Member, Tool, ToolBinding, UsageSession


@dataclass(frozen=True)
class DeviceLine:
    """A device as the floor's health panel names it."""

    id: str
    last_seen: datetime | None


@dataclass(frozen=True)
class Health:
    offline: list[DeviceLine]  # approved and not online
    pending: list[DeviceLine]  # waiting for a coordinator's approval
    dead_letters_hour: int
    online: int
    total: int


def device_health(session: Session, now: datetime) -> Health:
    """The floor's health panel: devices offline or pending, dead letters of the last hour."""
    rows = session.execute(
        select(Device.id, Device.last_seen, Device.approval, Device.online).order_by(Device.id)
    ).all()
    dead = session.scalar(
        select(func.count(DeadLetter.id)).where(DeadLetter.received_at >= now - timedelta(hours=1))
    )
    return Health(
        offline=[
            DeviceLine(d.id, d.last_seen) for d in rows if d.approval == "approved" and not d.online
        ],
        pending=[DeviceLine(d.id, d.last_seen) for d in rows if d.approval == "pending"],
        dead_letters_hour=dead or 0,
        online=sum(1 for d in rows if d.online),
        total=len(rows),
    )


@dataclass(frozen=True)
class EventLine:
    """One event of the floor's feed."""

    id: int
    device_id: str
    type: str
    received_at: datetime
    data: dict[str, Any]


def recent_events(session: Session, limit: int = 15) -> list[EventLine]:
    """The floor's event feed: the newest events by id (the primary key: fast on a
    million-row log)."""
    rows = session.execute(
        select(Event.id, Event.device_id, Event.type, Event.received_at, Event.data)
        .order_by(Event.id.desc())
        .limit(limit)
    )
    return [EventLine(i, device, kind, at, data or {}) for i, device, kind, at, data in rows]


@dataclass(frozen=True)
class RunLine:
    """A run no one badged for (a tool on a smart plug with no reader)."""

    tool_id: str
    start: datetime
    end: datetime | None
    busy_s: float
    wh: float


def recent_runs(session: Session, now: datetime, limit: int = 8) -> list[RunLine]:
    """The floor's runs panel: the newest runs no one badged for of the last day, open
    ones included (shown; no one is charged for them)."""
    rows = session.execute(
        select(
            UsageSession.tool_id,
            UsageSession.start,
            UsageSession.end,
            UsageSession.busy_s,
            UsageSession.wh,
        )
        .where(UsageSession.member.is_(None), UsageSession.start >= now - timedelta(days=1))
        .order_by(UsageSession.start.desc(), UsageSession.id.desc())
        .limit(limit)
    )
    return [RunLine(t, s, e, busy or 0.0, wh or 0.0) for t, s, e, busy, wh in rows]


def member_names(session: Session, handles: Iterable[str]) -> dict[str, str]:
    """Display names by handle, for who is in and who uses a tool (floor, API)."""
    wanted = sorted(set(handles))
    if not wanted:
        return {}
    rows = session.execute(select(Member.handle, Member.name).where(Member.handle.in_(wanted)))
    return {handle: name for handle, name in rows}


class ToolRow(NamedTuple):
    """A tool as the floor lists it (a tuple: ``for id, name, locked, site in rows``)."""

    id: str
    name: str
    locked: bool
    site: str


def tool_rows(session: Session) -> list[ToolRow]:
    """Every tool of every site, ordered by site then id: the floor's tiles and
    ``/api/v1/tools``."""
    rows = session.execute(
        select(Tool.id, Tool.name, Tool.locked, Tool.site).order_by(Tool.site, Tool.id)
    )
    return [ToolRow(i, name, bool(locked), site) for i, name, locked, site in rows]


@dataclass(frozen=True)
class OpenSession:
    """A tool's open usage session as stored."""

    member: str | None
    start: datetime


def open_sessions(session: Session) -> dict[str, OpenSession]:
    """Each tool's open session, for the tool states of a site no hub here runs."""
    rows = session.execute(
        select(UsageSession.tool_id, UsageSession.member, UsageSession.start).where(
            UsageSession.end.is_(None)
        )
    )
    return {tool: OpenSession(member, start) for tool, member, start in rows}


def devices_online(session: Session) -> dict[str, list[bool]]:
    """Per tool, whether each device bound to it is online (a tool whose devices are all
    offline shows as offline when no hub here runs it)."""
    out: dict[str, list[bool]] = {}
    rows = session.execute(
        select(ToolBinding.tool_id, Device.online)
        .join(Device, Device.id == ToolBinding.ref)
        .where(ToolBinding.kind == "device")
    )
    for tool_id, online in rows:
        out.setdefault(tool_id, []).append(bool(online))
    return out
