"""``peershop rebuild``: run the rules over the event log again and compare or replace.

The same :class:`~hub.rules.engine.ShopEngine` the live hub uses is fed the stored events in
log order, each at the time the hub received it, with the badge decisions recorded live
(a decision is a fact, not something to recompute with today's badges), the hub's
restarts at the points where they happened, and the device statuses and the clock
readings of their births as they arrived (so replayed times are corrected alike).
What it produces must equal what the live hub stored: sessions, presence, task-station
effort and consumables.

Each site's hub is replayed by an engine of its own (its tools and stations, the events
its hub stored), restarted at that site's ``hub_starts`` only.  A restart is the hub's
own: :func:`~hub.store.shop_store.resume` from what the records say up to that start and from
the log up to its ``after_event_id``, so the rebuild forgets and recovers exactly what
the hub did, however often it was killed.

Task weights are those of the period each event falls in (:func:`load_tasks` period by
period), so a station effort gets the weight the live hub posted then, risen in a
``clock``-mode project from the period's start and the slots taken before it.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from dataclasses import replace as with_fields
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from hub.admin.sites import other_site_devices
from hub.config import DEFAULT_SITE, Config
from hub.contract.messages import DeviceEvent, DeviceStatus
from hub.rules.engine import ShopEngine
from hub.rules.records import (
    ClockReading,
    DecisionRec,
    EffortRec,
    EffortSource,
    OpenEffort,
    Outcome,
    PresenceRec,
    SessionCloseRec,
    SessionOpenRec,
    ShopData,
    TrainingRec,
    UsageRec,
)
from hub.rules.seen import SeenIndex
from hub.store.models import (
    BadgeDecision,
    DeviceClock,
    DeviceStatusLog,
    EffortRecord,
    Event,
    HubStart,
    Period,
    PresenceChange,
    Station,
    Tool,
    UsageRecord,
    UsageSession,
)
from hub.store.shop_store import Resume, load_shop, load_tasks, resume, write_records

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
    """Events, statuses (with their clock readings) and hub starts merged in the order
    the live hubs saw them.

    Events go by id; a hub start goes before the first event after its
    ``after_event_id``, and a status before the first event received after it.  Between
    two events, starts and statuses go by time: a status received before a start was
    handled by the hub that the start replaced."""
    starts = list(session.scalars(select(HubStart).order_by(HubStart.id)))
    statuses: list[DeviceStatusLog | DeviceClock] = list(
        heapq.merge(
            session.scalars(select(DeviceStatusLog).order_by(DeviceStatusLog.id)),
            session.scalars(select(DeviceClock).order_by(DeviceClock.id)),
            key=lambda row: row.received_at,
        )
    )
    si = 0
    hi = 0
    last_id = 0

    def before(event: Event | None) -> Iterator[tuple[datetime, int, str, Any]]:
        nonlocal si, hi
        while True:
            start = starts[hi] if hi < len(starts) else None
            if start is not None and event is not None and start.after_event_id >= event.id:
                start = None
            status = statuses[si] if si < len(statuses) else None
            if status is not None and event is not None and status.received_at >= event.received_at:
                status = None
            if start is None and status is None:
                return
            if status is None or (start is not None and start.at <= status.received_at):
                yield start.at, 0, "start", start  # type: ignore[union-attr]
                hi += 1
            else:
                kind = "clock" if isinstance(status, DeviceClock) else "status"
                yield status.received_at, 1, kind, status
                si += 1

    while True:
        chunk = session.scalars(
            select(Event).where(Event.id > last_id).order_by(Event.id).limit(CHUNK)
        ).all()
        for ev in chunk:
            yield from before(ev)
            yield ev.received_at, 2, "event", ev
            last_id = ev.id
        if len(chunk) < CHUNK:
            break
    yield from before(None)


class _SiteRules:
    """One site's hub as the rebuild replays it: its engine, fed what that hub heard, and
    the records it made, kept as the hub would find them at its next start."""

    def __init__(
        self, data: ShopData, others: frozenset[str], keys: Iterator[int], seen: SeenIndex
    ):
        self.data = data
        self.others = others  # devices of other sites: that site's hub handles them
        self.key_factory = lambda: f"rebuild-{next(keys)}"
        self.seen = seen  # the log's identities so far, as the hub's index held them
        self.engine = ShopEngine(data, key_factory=self.key_factory, seen=seen)
        self.resume = Resume()
        self._sessions: dict[str, tuple[str, str, str, datetime]] = {}
        self._efforts: dict[str, OpenEffort] = {}

    def hears(self, device_id: str) -> bool:
        return device_id not in self.others

    def set_tasks(self, tasks: dict[str, Any]) -> None:
        self.data = with_fields(self.data, **tasks)
        self.engine.set_data(self.data)

    def restart(self, session: Session, row: HubStart) -> Outcome:
        """What the hub did at this start (``Hub._boot_rules``): the same :func:`resume`
        from the same records and the log up to the same event.

        First the clock runs on to the start: what the stopped hub's own clock closed
        after its last event (a session idle all night before a power cut) has no place
        in the log, and closes here as it did there."""
        out = self.engine.tick(row.at)
        self.keep(out.records)
        takes = tuple(
            (key, task, start)
            for task, started in self.engine.station_takes.items()
            for key, start in started.items()
        )  # the station efforts of the open period, as load_tasks reads them stored
        self.resume.sessions = list(self._sessions.values())
        self.resume.efforts = list(self._efforts.values())
        self.engine, resumed = resume(
            session,
            with_fields(self.data, station_takes=takes),
            self.resume,
            row.at,
            row.after_event_id,
            key_factory=self.key_factory,
            seen=self.seen,
        )
        self.keep(resumed.records)
        out.extend(resumed)
        return out

    def clock(self, reading: ClockReading) -> None:
        """A birth's clock reading, for the engine now and for its next restart."""
        self.engine.on_clock(reading)
        self.resume.clocks.append(reading)

    def keep(self, records: list[Any]) -> None:
        """Note what :class:`Resume` needs of the records, as the database would hold it."""
        for rec in records:
            if isinstance(rec, PresenceRec):
                self.resume.presence.append((rec.member, rec.at, rec.state, rec.reason))
            elif isinstance(rec, SessionOpenRec):
                self._sessions[rec.key] = (rec.key, rec.tool_id, rec.member, rec.start)
            elif isinstance(rec, SessionCloseRec):
                self._sessions.pop(rec.key, None)
            elif isinstance(rec, EffortRec) and rec.source == EffortSource.STATION:
                if rec.end is None:
                    self._efforts[rec.key] = OpenEffort(
                        rec.key, rec.member, rec.start, rec.device_id, rec.task_id,
                        rec.weight, rec.project_id,
                    )  # fmt: skip
                else:
                    self._efforts.pop(rec.key, None)


def _sites(session: Session) -> list[str]:
    """Every site with a hub: those of the tools, stations and hub starts."""
    found = set(session.scalars(select(Tool.site).distinct()))
    found |= set(session.scalars(select(Station.site).distinct()))
    found |= set(session.scalars(select(HubStart.site).distinct()))
    return sorted(found) or [DEFAULT_SITE]


def replay(session: Session, cfg: Config, progress: Callable[[int], None] | None = None) -> Rebuilt:
    """Recompute every derived record from the log; nothing is written.

    Each site's hub is replayed by its own engine, with the site's tools and stations and
    the events its hub stored, and is restarted at its own hub starts only."""
    keys = iter(range(1, 1 << 62))
    seen = SeenIndex()
    sites: dict[str, _SiteRules] = {}
    for site in _sites(session):
        # The stored station efforts are what this replay makes again: none are given in.
        data = load_shop(session, cfg.site.timezone, cfg.presence.auto_signout, site)
        data = with_fields(data, station_takes=())
        sites[site] = _SiteRules(data, other_site_devices(session, site), keys, seen)
    decisions = _decisions(session)
    out = Rebuilt()
    last = None
    period: tuple[datetime, datetime] | None = (datetime.max.replace(tzinfo=UTC),) * 2
    for at, _, kind, row in _timeline(session):
        last = at
        if period is None or not period[0] <= at < period[1]:
            # the weights of the period this falls in, as the hub reloaded them then
            tasks = load_tasks(session, at, station_takes=False)
            for rules in sites.values():
                rules.set_tasks(tasks)
            period = tasks["period"] or (at, _next_period_start(session, at))
        if kind == "start":
            out.records.extend(sites[row.site].restart(session, row).records)
            continue
        if kind == "clock":
            reading = ClockReading(row.device_id, row.boot, row.device_ts, row.received_at)
            for rules in sites.values():
                if rules.hears(row.device_id):
                    rules.clock(reading)
            continue
        if kind == "status":
            if row.ignored:
                continue
            status = DeviceStatus(row.device_id, row.state, row.boot, row.fw)
            for rules in sites.values():
                if rules.hears(row.device_id):
                    result = rules.engine.on_status(status, at)
                    rules.keep(result.records)
                    out.records.extend(result.records)
            continue
        ev = DeviceEvent(
            row.device_id, row.boot, row.seq, row.type, row.data, row.device_ts, row.replay
        )
        decided = decisions.get(ev.identity)
        for rules in sites.values():
            result = rules.engine.tick(row.received_at)  # the live hub's clock, at least as often
            if rules.hears(row.device_id):
                result.extend(rules.engine.on_event(ev, row.received_at, decided=decided))
            rules.keep(result.records)
            out.records.extend(result.records)
        out.events += 1
        if progress is not None:
            progress(1)
    if last is not None:
        for rules in sites.values():
            out.records.extend(rules.engine.tick(datetime.now(UTC)).records)
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
            rebuilt_presence.append(
                (rec.member, rec.at, rec.state, rec.reason, rec.site or DEFAULT_SITE)
            )
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
    # by repr: a run's member is None, which does not sort beside a handle
    stored_sessions = sorted(
        (
            _session_view(
                s.start, s.end, s.tool_id, s.member, s.busy_s, s.idle_s, s.wh, s.close_reason
            )
            for s in session.scalars(select(UsageSession))
            if s.end is not None
        ),
        key=repr,
    )
    open_stored = sorted(
        (
            _session_view(s.start, None, s.tool_id, s.member, 0, 0, 0, None)
            for s in session.scalars(select(UsageSession).where(UsageSession.end.is_(None)))
        ),
        key=repr,
    )
    stored_presence = sorted(
        (p.member, p.at, p.state, p.reason, p.site) for p in session.scalars(select(PresenceChange))
    )
    stored_efforts = sorted(
        (
            (e.member, e.task_id, e.start, e.end, e.hours, e.weight)
            for e in session.scalars(
                select(EffortRecord).where(EffortRecord.source == EffortSource.STATION)
            )
        ),
        key=repr,
    )
    stored_usage = sorted(
        (u.device_id, u.boot, u.seq, u.member, u.item, u.qty)
        for u in session.scalars(select(UsageRecord))
    )
    sessions_now = sorted((v for v in rebuilt_sessions.values() if v[3] is not None), key=repr)
    open_now = sorted((v for v in rebuilt_sessions.values() if v[3] is None), key=repr)

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
    session.execute(delete(EffortRecord).where(EffortRecord.source == EffortSource.STATION))
    session.execute(delete(UsageRecord))
    # decisions and trainings are facts recorded live: never written twice
    write_records(session, [r for r in records if not isinstance(r, DecisionRec | TrainingRec)])
