"""Reads of the records the JSON API lists (``/devices``, ``/sessions``, ``/effort``)
and the me page shows: devices, usage sessions and effort records as plain data.

Each function takes a :class:`Session`; the caller decides who may see what.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.store.models import Device, EffortRecord, Event, UsageSession


@dataclass(frozen=True)
class LastEvent:
    """The newest event a device sent."""

    id: int
    type: str
    boot: int
    seq: int
    received_at: datetime


@dataclass(frozen=True)
class DeviceRecord:
    id: str
    approval: str
    online: bool
    last_seen: datetime | None
    boot: int | None
    fw: str | None
    kind: list[str]
    last_event: LastEvent | None


def devices(session: Session, *, pending_first: bool = False) -> list[DeviceRecord]:
    """``/api/v1/devices`` and Admin's device list: every device by id (with
    ``pending_first``, those waiting for approval first), with its newest event."""
    order = (Device.approval != "pending", Device.id) if pending_first else (Device.id,)
    rows = list(session.scalars(select(Device).order_by(*order)))
    event_ids = [d.last_event_id for d in rows if d.last_event_id]
    events: dict[int, LastEvent] = {}
    if event_ids:
        query = select(Event.id, Event.type, Event.boot, Event.seq, Event.received_at).where(
            Event.id.in_(event_ids)
        )
        events = {row[0]: LastEvent(*row) for row in session.execute(query)}
    return [
        DeviceRecord(
            d.id,
            d.approval,
            bool(d.online),
            d.last_seen,
            d.boot,
            d.fw,
            list(d.kind or []),
            events.get(d.last_event_id or 0),
        )
        for d in rows
    ]


@dataclass(frozen=True)
class SessionRecord:
    """A usage session; ``member`` is None for a run no one badged for."""

    id: int
    tool_id: str
    member: str | None
    start: datetime
    end: datetime | None
    busy_s: float
    idle_s: float
    wh: float
    close_reason: str | None


_SESSION_COLUMNS = (
    UsageSession.id,
    UsageSession.tool_id,
    UsageSession.member,
    UsageSession.start,
    UsageSession.end,
    UsageSession.busy_s,
    UsageSession.idle_s,
    UsageSession.wh,
    UsageSession.close_reason,
)


def _session_record(row: tuple) -> SessionRecord:
    i, tool, member, start, end, busy, idle, wh, reason = row
    return SessionRecord(i, tool, member, start, end, busy or 0.0, idle or 0.0, wh or 0.0, reason)


def usage_sessions(
    session: Session,
    *,
    limit: int,
    tool: str | None = None,
    member: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[SessionRecord]:
    """``/api/v1/sessions``: sessions overlapping ``[since, until)``, newest record first.

    Newest first by record id: a session row is written when it opens, so id order is
    start order, and the primary key serves it without sorting 100,000 rows.
    """
    query = select(*_SESSION_COLUMNS).order_by(UsageSession.id.desc())
    if tool is not None:
        query = query.where(UsageSession.tool_id == tool)
    if member is not None:
        query = query.where(UsageSession.member == member)
    if since is not None:
        query = query.where((UsageSession.end.is_(None)) | (UsageSession.end >= since))
    if until is not None:
        query = query.where(UsageSession.start < until)
    return [_session_record(row) for row in session.execute(query.limit(limit))]


def sessions_of(session: Session, handle: str, limit: int = 50) -> list[SessionRecord]:
    """The me page's "My sessions": a member's newest sessions by start, open ones included."""
    query = (
        select(*_SESSION_COLUMNS)
        .where(UsageSession.member == handle)
        .order_by(UsageSession.start.desc())
        .limit(limit)
    )
    return [_session_record(row) for row in session.execute(query)]


@dataclass(frozen=True)
class EffortLine:
    """An effort record (``hours`` is None while a task station runs)."""

    id: int
    member: str
    task_id: str | None
    project_id: str | None
    start: datetime
    end: datetime | None
    hours: Decimal | None
    weight: Decimal | None
    source: str


_EFFORT_COLUMNS = (
    EffortRecord.id,
    EffortRecord.member,
    EffortRecord.task_id,
    EffortRecord.project_id,
    EffortRecord.start,
    EffortRecord.end,
    EffortRecord.hours,
    EffortRecord.weight,
    EffortRecord.source,
)


def effort_records(
    session: Session,
    *,
    limit: int,
    member: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[EffortLine]:
    """``/api/v1/effort`` and the me page's "My effort": records started in
    ``[since, until)``, newest first."""
    query = select(*_EFFORT_COLUMNS).order_by(EffortRecord.start.desc(), EffortRecord.id.desc())
    if member is not None:
        query = query.where(EffortRecord.member == member)
    if since is not None:
        query = query.where(EffortRecord.start >= since)
    if until is not None:
        query = query.where(EffortRecord.start < until)
    return [EffortLine(*row) for row in session.execute(query.limit(limit))]
