"""Ingest: raw device messages in, stored events, device states and dead letters out.

:func:`store_batch` is the one place that writes what devices say.  It runs inside the
caller's transaction, so a batch is stored whole or not at all, and the MQTT adapter
acks the batch only after that transaction commits.  Each event identity
``(device, boot, seq)`` is stored once, however often it arrives; anything that does not
follow docs/device-protocol.md becomes a dead letter with the reason and never stops ingest.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hub.contract.messages import (
    PLAUSIBLE,
    DeviceEvent,
    DeviceStatus,
    PowerRange,
    parse_event,
    parse_status,
    parse_topic,
)
from hub.errors import ContractError
from hub.rules.sessions import CLOCK_SKEW
from hub.store.db import insert_ignore, insert_ignoring_duplicates
from hub.store.models import DeadLetter, Device, DeviceClock, DeviceStatusLog, Event

log = logging.getLogger(__name__)

DEAD_LETTER_KEEP = 1024  # bytes of a rejected payload kept for the coordinator to read


@dataclass(frozen=True, slots=True)
class Inbound:
    """One message as it came off the broker, stamped with the hub's receive time;
    ``retained``: the broker's stored copy, sent at the hub's subscription."""

    topic: str
    payload: bytes
    received_at: datetime
    retained: bool = False


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event newly written to the log (the rules run on these, in ``id`` order)."""

    id: int
    event: DeviceEvent
    received_at: datetime


@dataclass
class BatchResult:
    new_events: list[StoredEvent] = field(default_factory=list)
    duplicates: int = 0
    statuses: list[DeviceStatus] = field(default_factory=list)
    dead_letters: list[tuple[str, str]] = field(default_factory=list)  # (topic, reason)
    new_devices: list[str] = field(default_factory=list)


def _dead_letter(msg: Inbound, device_id: str | None, reason: str) -> dict[str, Any]:
    return {
        "received_at": msg.received_at,
        "topic": msg.topic[:300],
        "device_id": device_id,
        "reason": reason[:500],
        "payload": bytes(msg.payload[:DEAD_LETTER_KEEP]),
        "size": len(msg.payload),
    }


@dataclass(frozen=True, slots=True)
class Parsed:
    """What a message turned out to be: an event, a status, a dead letter, or nothing."""

    device_id: str | None = None
    event: DeviceEvent | None = None
    status: DeviceStatus | None = None
    error: str | None = None


NOTHING = Parsed()


def parse_inbound(msg: Inbound, power: PowerRange = PLAUSIBLE) -> Parsed:
    """Validate one device message against docs/device-protocol.md (pure, never raises); a
    ``power`` reading outside ``power`` is a dead letter."""
    device_id = None
    try:
        device_id, leaf = parse_topic(msg.topic)
        if leaf == "event":
            return Parsed(device_id, event=parse_event(device_id, msg.payload, power))
        if leaf == "status":
            if not msg.payload:
                return NOTHING  # a cleared retained status: nothing was said
            status = parse_status(device_id, msg.payload)
            if msg.retained and status.device_ts is not None:
                # The stored copy of a birth sent at some earlier time: its clock cannot
                # be compared with this receive time, so it teaches no offset.
                status = replace(status, device_ts=None)
            return Parsed(device_id, status=status)
        raise ContractError(f"the hub does not take messages on .../{leaf}")
    except ContractError as exc:
        return Parsed(device_id, error=str(exc))


def store_batch(session: Session, messages: Sequence[Inbound]) -> BatchResult:
    """Validate and store ``messages`` in the caller's transaction, in arrival order."""
    return store_parsed(session, [(m, parse_inbound(m)) for m in messages])


def store_parsed(session: Session, items: Sequence[tuple[Inbound, Parsed]]) -> BatchResult:
    """Store already validated messages in the caller's transaction, in arrival order."""
    result = BatchResult()
    events: list[tuple[DeviceEvent, Inbound]] = []
    statuses: list[tuple[DeviceStatus, Inbound]] = []
    dead: list[dict[str, Any]] = []
    seen_at: dict[str, datetime] = {}
    identities: set[tuple[str, int, int]] = set()

    for msg, parsed in items:
        if parsed.error is not None:
            dead.append(_dead_letter(msg, parsed.device_id, parsed.error))
            result.dead_letters.append((msg.topic, parsed.error))
        elif parsed.event is not None:
            ev = parsed.event
            if ev.identity in identities:
                result.duplicates += 1
            else:
                identities.add(ev.identity)
                events.append((ev, msg))
        elif parsed.status is not None:
            statuses.append((parsed.status, msg))
        if parsed.device_id is not None:
            at = msg.received_at
            seen_at[parsed.device_id] = max(at, seen_at.get(parsed.device_id, at))

    devices = _devices(session, seen_at, result)
    if events:
        _store_events(session, events, devices, result)
    for status, msg in statuses:
        _apply_status(session, devices[status.device_id], status, msg.received_at)
        result.statuses.append(status)
    if dead:
        session.execute(DeadLetter.__table__.insert(), dead)
    return result


def _devices(session: Session, seen_at: dict[str, datetime], result: BatchResult) -> dict:
    if not seen_at:
        return {}
    known = {d.id: d for d in session.scalars(select(Device).where(Device.id.in_(list(seen_at))))}
    for device_id, at in seen_at.items():
        device = known.get(device_id)
        if device is None:
            # An unknown device is kept as pending: a coordinator approves it later, and
            # nothing it said is lost meanwhile.  A plug's id (tasmota/TOPIC,
            # shelly/PREFIX) only reaches ingest when the shop file binds it to a tool,
            # which is the coordinator's approval.
            approval = "approved" if "/" in device_id else "pending"
            device = Device(id=device_id, approval=approval, online=False, kind=[], first_seen=at)
            session.add(device)
            known[device_id] = device
            result.new_devices.append(device_id)
            log.info("device %s: first seen, registered as %s", device_id, approval)
        if device.last_seen is None or at > device.last_seen:
            device.last_seen = at
    session.flush()
    return known


def _store_events(
    session: Session,
    events: list[tuple[DeviceEvent, Inbound]],
    devices: dict[str, Device],
    result: BatchResult,
) -> None:
    rows = [
        {
            "device_id": ev.device_id,
            "boot": ev.boot,
            "seq": ev.seq,
            "type": ev.type,
            "device_ts": ev.device_ts,
            "received_at": msg.received_at,
            "replay": ev.replay,
            "data": ev.data,
        }
        for ev, msg in events
    ]
    table = Event.__table__
    if session.get_bind().dialect.name == "sqlite":
        inserted = _insert_sqlite(session, table, rows)
    else:
        stmt = insert_ignore(session, table).returning(
            table.c.id, table.c.device_id, table.c.boot, table.c.seq, sort_by_parameter_order=True
        )
        inserted = [tuple(row) for row in session.execute(stmt, rows)]
    by_identity = {(ev.device_id, ev.boot, ev.seq): (ev, msg) for ev, msg in events}
    for row in inserted:
        ev, msg = by_identity[(row[1], row[2], row[3])]
        result.new_events.append(StoredEvent(row[0], ev, msg.received_at))
        device = devices[row[1]]
        if device.last_event_id is None or row[0] > device.last_event_id:
            device.last_event_id = row[0]
    result.new_events.sort(key=lambda s: s.id)
    result.duplicates += len(events) - len(inserted)


def _insert_sqlite(session: Session, table: Any, rows: list[dict[str, Any]]) -> list[tuple]:
    """The batch's events through sqlite3's executemany, ids read back cheaply.

    RETURNING through SQLAlchemy costs more than the insert itself.  This transaction
    holds SQLite's write lock, so no other writer adds events meanwhile: rowids are
    handed out as max + 1 in insert order, and with no duplicate in the batch the new
    ids are the next ``len(rows)`` numbers.  Otherwise the new rows are read back."""
    before = session.execute(select(func.max(table.c.id))).scalar() or 0
    count = session.execute(insert_ignore(session, table), rows).rowcount
    if count == len(rows):
        return [
            (before + i + 1, row["device_id"], row["boot"], row["seq"])
            for i, row in enumerate(rows)
        ]
    new = select(table.c.id, table.c.device_id, table.c.boot, table.c.seq).where(
        table.c.id > before
    )
    return [tuple(row) for row in session.execute(new.order_by(table.c.id))]


def _apply_status(session: Session, device: Device, status: DeviceStatus, at: datetime) -> None:
    """Births and wills, in order; a will from an older boot is stale and ignored."""
    stale = (
        status.boot is not None
        and device.boot is not None
        and status.boot < device.boot
        and (status.state == "offline" or device.online)
    )
    if not stale:
        device.online = status.state == "online"
        device.status_at = at
        if status.boot is not None:
            device.boot = status.boot
        if status.state == "online":
            device.fw = status.fw
            device.kind = list(status.kind)
    else:
        log.info(
            "device %s: ignored stale %s of boot %s (current boot %s)",
            device.id,
            status.state,
            status.boot,
            device.boot,
        )
    if status.state == "online" and status.boot is not None and status.device_ts is not None:
        _record_clock(session, device.id, status.boot, status.device_ts, at)
    insert_ignoring_duplicates(
        session,
        DeviceStatusLog.__table__,
        [
            {
                "device_id": device.id,
                "boot": status.boot,
                "state": status.state,
                "fw": status.fw,
                "received_at": at,
                "ignored": stale,
            }
        ],
    )


def _record_clock(
    session: Session, device_id: str, boot: int, device_ts: datetime, at: datetime
) -> None:
    """Keep what a birth's clock said (once per reading), and tell the coordinator when
    the device's clock is off by more than the hub takes as it is."""
    new = insert_ignoring_duplicates(
        session,
        DeviceClock.__table__,
        [{"device_id": device_id, "boot": boot, "device_ts": device_ts, "received_at": at}],
    )
    offset = device_ts - at
    if new and abs(offset) > CLOCK_SKEW:
        side = "ahead of" if offset > CLOCK_SKEW else "behind"
        log.warning(
            "device %s: its clock is %s %s the hub's (boot %d); its replayed times are "
            "corrected by that",
            device_id,
            abs(offset),
            side,
            boot,
        )
