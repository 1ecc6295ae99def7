"""``peershop rebuild``: run the rules over the event log again and compare or replace.

The same :class:`~hub.shop.ShopEngine` the live hub uses is fed the stored events in
log order, each at the time the hub received it, with the badge decisions recorded live
(a decision is a fact, not something to recompute with today's badges), the hub's
restarts at the points where they happened, and the device statuses as they arrived.
What it produces must equal what the live hub stored: sessions, presence, task-station
effort and consumables.

Task weights are those of the period each event falls in (:func:`load_tasks` period by
period), so a station effort gets the weight the live hub posted then, risen in a
``clock``-mode project from the period's start and the slots taken before it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from dataclasses import replace as with_fields
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from hub.config import Config
from hub.contract import DeviceEvent, DeviceStatus
from hub.models import (
    BadgeDecision,
    DeviceStatusLog,
    EffortRecord,
    Event,
    HubStart,
    Period,
    PresenceChange,
    UsageRecord,
    UsageSession,
)
from hub.shop import (
    DecisionRec,
    EffortRec,
    PresenceRec,
    SessionCloseRec,
    SessionOpenRec,
    ShopEngine,
    TrainingRec,
    UsageRec,
)
from hub.shop_store import load_shop, load_tasks, write_records

CHUNK = 5000


@dataclass
class Rebuilt:
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)  # by key
    presence: list[tuple] = field(default_factory=list)
    efforts: dict[str, tuple] = field(default_factory=dict)
    usage: list[tuple] = field(default_factory=list)
    records: list[Any] = field(default_factory=list)
    events: int = 0


def _decisions(session: Session) -> dict[tuple[str, int, int], DecisionRec]:
    out = {}
    for d in session.scalars(select(BadgeDecision)):
        out[(d.device_id, d.boot, d.seq)] = DecisionRec(
            d.device_id, d.boot, d.seq, d.at, d.uid, d.member, d.tool_id, d.station,
            d.action, d.reason, d.replay, d.training,
        )  # fmt: skip
    return out


def _timeline(session: Session) -> Iterator[tuple[datetime, int, str, Any]]:
    """Events, statuses and hub starts merged in the order the live hub saw them."""
    starts = list(session.scalars(select(HubStart).order_by(HubStart.id)))
    statuses = list(session.scalars(select(DeviceStatusLog).order_by(DeviceStatusLog.id)))
    si = 0
    hi = 0
    last_id = 0
    while True:
        chunk = session.scalars(
            select(Event).where(Event.id > last_id).order_by(Event.id).limit(CHUNK)
        ).all()
        for ev in chunk:
            while hi < len(starts) and starts[hi].after_event_id < ev.id:
                yield starts[hi].at, 0, "start", starts[hi]
                hi += 1
            while si < len(statuses) and statuses[si].received_at < ev.received_at:
                yield statuses[si].received_at, 1, "status", statuses[si]
                si += 1
            yield ev.received_at, 2, "event", ev
            last_id = ev.id
        if len(chunk) < CHUNK:
            break
    for row in starts[hi:]:
        yield row.at, 0, "start", row
    for row in statuses[si:]:
        yield row.received_at, 1, "status", row


def replay(session: Session, cfg: Config, progress: Callable[[int], None] | None = None) -> Rebuilt:
    """Recompute every derived record from the log; nothing is written."""
    # The stored station efforts are what this replay makes again: none are given in.
    data = with_fields(
        load_shop(session, cfg.site.timezone, cfg.presence.auto_signout), station_takes=()
    )
    keys = iter(range(1, 1 << 62))
    engine = ShopEngine(data, key_factory=lambda: f"rebuild-{next(keys)}")
    decisions = _decisions(session)
    out = Rebuilt()
    last = None
    period: tuple[datetime, datetime] | None = (datetime.max.replace(tzinfo=UTC),) * 2
    for at, _, kind, row in _timeline(session):
        last = at
        if period is None or not period[0] <= at < period[1]:
            # the weights of the period this falls in, as the hub reloaded them then
            data = with_fields(data, **load_tasks(session, at, station_takes=False))
            engine.set_data(data)
            period = data.period or (at, _next_period_start(session, at))
        if kind == "start":
            result = engine.restart(row.at)
        elif kind == "status":
            if row.ignored:
                continue
            result = engine.on_status(DeviceStatus(row.device_id, row.state, row.boot, row.fw), at)
        else:
            ev = DeviceEvent(
                row.device_id, row.boot, row.seq, row.type, row.data, row.device_ts, row.replay
            )
            decided = decisions.get(ev.identity)
            result = engine.tick(row.received_at)  # the live hub's clock, at least as often
            result.extend(engine.on_event(ev, row.received_at, decided=decided))
            out.events += 1
            if progress is not None:
                progress(1)
        out.records.extend(result.records)
    if last is not None:
        out.records.extend(engine.tick(datetime.now(UTC)).records)
    return out


def _next_period_start(session: Session, at: datetime) -> datetime:
    """Where the next stored period begins (no period holds ``at``), else the far future."""
    found = session.scalar(select(func.min(Period.start)).where(Period.start > at))
    return found or datetime.max.replace(tzinfo=UTC)


def _session_view(start, end, tool, member, busy, idle, wh, reason) -> tuple:
    return (tool, member, start, end, round(busy, 3), round(idle, 3), round(wh, 3), reason)


def compare(session: Session, records: list[Any]) -> dict[str, tuple[int, int, list]]:
    """Per kind of record: (stored, rebuilt, differences) with a few examples."""
    rebuilt_sessions: dict[str, tuple] = {}
    rebuilt_efforts: dict[str, tuple] = {}
    rebuilt_presence, rebuilt_usage = [], []
    for rec in records:
        if isinstance(rec, SessionOpenRec):
            rebuilt_sessions[rec.key] = _session_view(
                rec.start, None, rec.tool_id, rec.member, 0, 0, 0, None
            )
        elif isinstance(rec, SessionCloseRec):
            rebuilt_sessions[rec.key] = _session_view(
                rec.start,
                rec.end,
                rec.tool_id,
                rec.member,
                rec.busy_s,
                rec.idle_s,
                rec.wh,
                rec.close_reason,
            )
        elif isinstance(rec, PresenceRec):
            rebuilt_presence.append((rec.member, rec.at, rec.state, rec.reason))
        elif isinstance(rec, EffortRec):
            rebuilt_efforts[rec.key] = (
                rec.member,
                rec.task_id,
                rec.start,
                rec.end,
                rec.hours,
                rec.weight,
            )
        elif isinstance(rec, UsageRec):
            rebuilt_usage.append((rec.device_id, rec.boot, rec.seq, rec.member, rec.item, rec.qty))
    stored_sessions = sorted(
        _session_view(s.start, s.end, s.tool_id, s.member, s.busy_s, s.idle_s, s.wh, s.close_reason)
        for s in session.scalars(select(UsageSession))
        if s.end is not None
    )
    open_stored = sorted(
        _session_view(s.start, None, s.tool_id, s.member, 0, 0, 0, None)
        for s in session.scalars(select(UsageSession).where(UsageSession.end.is_(None)))
    )
    stored_presence = sorted(
        (p.member, p.at, p.state, p.reason) for p in session.scalars(select(PresenceChange))
    )
    stored_efforts = sorted(
        (
            (e.member, e.task_id, e.start, e.end, e.hours, e.weight)
            for e in session.scalars(select(EffortRecord).where(EffortRecord.source == "station"))
        ),
        key=repr,
    )
    stored_usage = sorted(
        (u.device_id, u.boot, u.seq, u.member, u.item, u.qty)
        for u in session.scalars(select(UsageRecord))
    )
    sessions_now = sorted(v for v in rebuilt_sessions.values() if v[3] is not None)
    open_now = sorted(v for v in rebuilt_sessions.values() if v[3] is None)

    def diff(a: list, b: list) -> tuple[int, int, list]:
        sa, sb = set(a), set(b)
        return len(a), len(b), sorted(sa ^ sb, key=repr)[:5]

    return {
        "sessions": diff(stored_sessions, sessions_now),
        "open_sessions": diff(open_stored, open_now),
        "presence": diff(stored_presence, sorted(rebuilt_presence)),
        "effort": diff(stored_efforts, sorted(rebuilt_efforts.values(), key=repr)),
        "usage": diff(stored_usage, sorted(rebuilt_usage)),
    }


def replace(session: Session, records: list[Any]) -> None:
    """Swap the stored derived records for the rebuilt ones (hub stopped)."""
    session.execute(delete(UsageSession))
    session.execute(delete(PresenceChange))
    session.execute(delete(EffortRecord).where(EffortRecord.source == "station"))
    session.execute(delete(UsageRecord))
    # decisions and trainings are facts recorded live: never written twice
    write_records(session, [r for r in records if not isinstance(r, DecisionRec | TrainingRec)])
