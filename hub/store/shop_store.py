"""The shop engine's database side: load what it needs, write what it records.

:func:`write_records` is the one place that writes the rules' records.  The hub calls it
inside the same transaction as the events that caused them, so an event and its records
are stored together or not at all.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from hub.config import DEFAULT_SITE
from hub.contract.allowlist import allowlist_payload, build_allowlist, next_version, uid_hash
from hub.contract.messages import DeviceEvent, allowlist_topic
from hub.peerconomy.economy import WeightMode
from hub.plugs import KINDS as PLUG_KINDS
from hub.rules.access import TRAINERS, MemberAccess, Role, WeeklyHours
from hub.rules.engine import ShopEngine
from hub.rules.presence import PresenceState, state_from_changes
from hub.rules.records import (
    ClockReading,
    DecisionAction,
    DecisionRec,
    EffortRec,
    EffortSource,
    OpenEffort,
    Outcome,
    PlugBinding,
    PresenceRec,
    Record,
    SessionCloseRec,
    SessionOpenRec,
    ShopData,
    TaskInfo,
    ToolConfig,
    TrainingRec,
    UsageRec,
    WeightClock,
)
from hub.rules.seen import SeenIndex
from hub.rules.sessions import ToolRules
from hub.rules.sessions import tool_rules as from_columns
from hub.store.db import insert_ignore
from hub.store.models import (
    AllowlistVersion,
    Badge,
    BadgeDecision,
    Device,
    DeviceClock,
    EffortRecord,
    Event,
    Member,
    Period,
    PresenceChange,
    ShopMeta,
    Station,
    Task,
    TaskState,
    TaskWeightHistory,
    Tool,
    TrainingGrant,
    UsageRecord,
    UsageSession,
)
from hub.store.outbox import enqueue
from hub.store.overrides import unmark_grants
from hub.store.queries import slot_takes, weight_rules

log = logging.getLogger(__name__)

SHOP_VERSION = "shop_version"


# --- the shop's version: other processes bump it, the hub reloads --------------------


def shop_version(session: Session) -> int:
    return session.scalar(select(ShopMeta.value).where(ShopMeta.key == SHOP_VERSION)) or 0


def bump_shop_version(session: Session) -> None:
    """Tell a running hub that members, badges, trainings or tools changed."""
    row = session.get(ShopMeta, SHOP_VERSION)
    if row is None:
        session.add(ShopMeta(key=SHOP_VERSION, value=1))
    else:
        row.value += 1


# --- loading -----------------------------------------------------------------------------


def tool_rules(tool: Tool) -> ToolRules:
    """A tool row's session rules, read as the shop file wrote them."""
    return from_columns(tool.policy, tool.power or {}, tool.options or {})


def load_shop(
    session: Session, tz: ZoneInfo, auto_signout: time = time(4, 0), site: str | None = None
) -> ShopData:
    """Members, badges, trainings, tools, stations and tasks as the rules need them.

    With ``site``, only that site's tools and stations (what its hub runs); members,
    badges, trainings and tasks are the whole shop's, so a training granted at one site
    counts at every other."""
    grants: dict[int, dict[str, datetime | None]] = {}
    for grant in session.scalars(select(TrainingGrant)):
        grants.setdefault(grant.member_id, {})[grant.training_id] = grant.expires_at
    members: dict[str, MemberAccess] = {}
    by_id: dict[int, str] = {}
    for m in session.scalars(select(Member)):
        roles = set(m.roles or [])
        held = grants.get(m.id, {})
        members[m.handle] = MemberAccess(
            handle=m.handle,
            name=m.name,
            suspended=m.suspended,
            trainings=held,
            trains=frozenset(held) if roles & TRAINERS else frozenset(),
            keyholder=Role.COORDINATOR in roles,
        )
        by_id[m.id] = m.handle
    badges = {b.uid: by_id[b.member_id] for b in session.scalars(select(Badge))}
    meters = {d.id for d in session.scalars(select(Device)) if "power" in (d.kind or [])}
    tools = {}
    for tool in session.scalars(select(Tool).where(*_at_site(Tool.site, site))):
        options = tool.options or {}
        hours = options.get("hours")
        try:
            weekly = WeeklyHours.parse(hours, tz) if hours else None
        except ValueError:
            log.error(
                "tool %s: opening hours %r are invalid; treating as always open", tool.id, hours
            )
            weekly = None
        scarce = None
        slots = (tool.scarce or {}).get("slots")
        if slots and options.get("enforce_reservations"):
            try:
                scarce = WeeklyHours.parse(slots, tz)
            except ValueError:
                log.error("tool %s: scarce slots %r are invalid; not enforced", tool.id, slots)
        devices = tuple(b.ref for b in tool.bindings if b.kind == "device")
        plugs = tuple(
            PlugBinding(b.kind, b.ref, b.channel, tuple(sorted((b.options or {}).items())))
            for b in tool.bindings
            if b.kind in PLUG_KINDS
        )
        rules = tool_rules(tool)
        if plugs and not devices:
            # no reader: nobody badges at it, so its runs are recorded with no member
            rules = replace(rules, unattended=True)
        tools[tool.id] = ToolConfig(
            id=tool.id,
            name=tool.name,
            rules=rules,
            training=tool.training_id,
            locked=tool.locked,
            hours=weekly,
            scarce=scarce,
            # A grant's max_s is the tool's longest session (12 h unless set): a device
            # obeys no grant without one, so every grant carries it.
            max_s=int(rules.max_duration.total_seconds()),
            project=tool.project_id,
            devices=devices,
            plugs=plugs,
            metered=bool(plugs) or any(d in meters for d in devices),
        )
    stations = {
        s.device_id: s.kind
        for s in session.scalars(select(Station).where(*_at_site(Station.site, site)))
    }
    return ShopData(
        tz=tz,
        members=members,
        badges=badges,
        tools=tools,
        stations=stations,
        auto_signout=auto_signout,
        site=site,
        **load_tasks(session),
    )


def load_tasks(
    session: Session, at: datetime | None = None, *, station_takes: bool = True
) -> dict[str, Any]:
    """The tasks as a task station posts them, for :class:`ShopData` (``tasks``,
    ``period``, ``station_takes``).

    The period is the open one (the last stored), or the stored one containing ``at``
    (a rebuild, period by period): in a closed period a task's weight is the one it had
    then (``TaskWeightHistory``).  A task of a project in ``clock`` mode carries what
    its rising weight needs (:class:`WeightClock`): the slots taken on the board and by
    coordinators, and, unless ``station_takes`` is False (a rebuild, whose engine makes
    them again), the station efforts stored in the period.
    """
    query = select(Period)
    if at is None:
        query = query.order_by(Period.start.desc()).limit(1)
    else:
        query = query.where(Period.start <= at, Period.end > at)
    period = session.scalars(query).first()
    rows = list(session.scalars(select(Task)))
    weights = {t.id: t.weight for t in rows}
    pinned = {s.task_id: s.pinned for s in session.scalars(select(TaskState))}
    if period is not None and period.closed_at is not None:
        for h in session.scalars(
            select(TaskWeightHistory).where(TaskWeightHistory.period_id == period.id)
        ):
            weights[h.task_id], pinned[h.task_id] = h.weight, h.pinned
    rules = {p: r for p, r in weight_rules(session).items() if r.weight_mode == WeightMode.CLOCK}
    takes = (
        slot_takes(session, period.start, period.end, stations=False) if rules and period else {}
    )
    tasks = {}
    for t in rows:
        rule = rules.get(t.project_id or "") if period is not None else None
        clock = None
        if rule is not None:
            clock = WeightClock(
                rule.gain,
                rule.weight_min,
                rule.weight_max,
                bool(pinned.get(t.id)),
                tuple(takes.get(t.id, ())),
            )
        tasks[t.id] = TaskInfo(t.id, weights[t.id], t.hours, t.project_id, t.slots, clock)
    seeds: tuple[tuple[str, str, datetime], ...] = ()
    clock_tasks = [t.id for t in tasks.values() if t.clock is not None]
    if station_takes and period is not None and clock_tasks:
        seeds = tuple(
            (key, task, start)
            for key, task, start in session.execute(
                select(EffortRecord.key, EffortRecord.task_id, EffortRecord.start).where(
                    EffortRecord.source == EffortSource.STATION,
                    EffortRecord.task_id.in_(clock_tasks),
                    EffortRecord.start >= period.start,
                    EffortRecord.start < period.end,
                )
            ).all()
        )
    return {
        "tasks": tasks,
        "period": None if period is None else (period.start, period.end),
        "station_takes": seeds,
    }


def _at_site(column: Any, site: str | None) -> tuple[Any, ...]:
    return () if site is None else (column == site,)


# --- resuming after a restart ------------------------------------------------------------------


@dataclass
class Resume:
    """What a restarted hub resumes from, as recorded up to its start: its site's presence
    changes ``(member, at, state, reason)`` in order, the open sessions ``(key, tool,
    member, start)``, the open task-station efforts, and the devices' clock readings in
    the order they came (each boot's latest is its clock's offset).

    The live hub reads it from the database (:func:`stored_resume`); ``peershop rebuild``
    keeps it from the records it makes again, and at each ``hub_starts`` row calls
    :func:`resume` with it just as the hub did, so both restart alike by construction."""

    presence: list[tuple[str, datetime, str, str]] = field(default_factory=list)
    sessions: list[tuple[str, str, str, datetime]] = field(default_factory=list)
    efforts: list[OpenEffort] = field(default_factory=list)
    clocks: list[ClockReading] = field(default_factory=list)


def current_presence(session: Session, *, except_site: str | None = None) -> dict[str, datetime]:
    """Who is signed in, and since when, from each member's last presence change at each
    site (each site's hub signs its own doors' members in and out): a member signed in at
    two sites is in, since the earlier sign-in.  ``except_site`` leaves out the site whose
    hub's memory the caller has."""
    pc = PresenceChange
    last = select(func.max(pc.id)).group_by(pc.site, pc.member)
    if except_site is not None:
        last = last.where(pc.site != except_site)
    rows = session.execute(
        select(pc.member, pc.at).where(
            pc.id.in_(last.scalar_subquery()), pc.state == PresenceState.IN
        )
    )
    present: dict[str, datetime] = {}
    for member, at in rows:
        present[member] = min(at, present.get(member, at))
    return present


def stored_resume(session: Session, site: str) -> Resume:
    """The :class:`Resume` of the hub of ``site``, read from the database."""
    pc = PresenceChange
    presence = session.execute(
        select(pc.member, pc.at, pc.state, pc.reason).where(pc.site == site).order_by(pc.id)
    )
    sessions = session.execute(
        select(UsageSession.key, UsageSession.tool_id, UsageSession.member, UsageSession.start)
        .where(UsageSession.end.is_(None))
        .order_by(UsageSession.id)
    )
    efforts = session.scalars(
        select(EffortRecord)
        .where(EffortRecord.end.is_(None), EffortRecord.source == EffortSource.STATION)
        .order_by(EffortRecord.id)
    )
    clocks = session.scalars(select(DeviceClock).order_by(DeviceClock.id))
    return Resume(
        [tuple(row) for row in presence],  # type: ignore[misc]
        [tuple(row) for row in sessions],  # type: ignore[misc]
        [
            OpenEffort(e.key, e.member, e.start, e.device_id, e.task_id, e.weight, e.project_id)
            for e in efforts
        ],
        [ClockReading(c.device_id, c.boot, c.device_ts, c.received_at) for c in clocks],
    )


def resume(
    session: Session,
    data: ShopData,
    stored: Resume,
    now: datetime,
    up_to_event: int,
    *,
    key_factory: Callable[[], str] | None = None,
    seen: SeenIndex | None = None,
) -> tuple[ShopEngine, Outcome]:
    """A fresh engine for a hub starting at ``now``, after event ``up_to_event`` of the
    log: presence, open efforts and the devices' clock offsets resumed, each open session
    of its tools rebuilt from the log, the clock run once, and what is still open closed
    (``hub_restart``), but for the sessions replayed badges opened, which the rest of
    their device's replay ends.  ``seen`` holds the identities of the log up to
    ``up_to_event`` (the hub's index; a rebuild's own), and the engine adds to it.

    Nothing else of the engine's memory survives a restart (a tool's power level, a task
    button waiting for its badge, a two-card induction half done): a rebuild forgets it
    at the same point.  Returns the engine and what it recorded."""
    present, toggles = state_from_changes(stored.presence)
    kwargs = {} if key_factory is None else {"key_factory": key_factory}
    engine = ShopEngine(
        data, present=present, last_toggle=toggles, seen=seen, clocks=stored.clocks, **kwargs
    )
    out = Outcome()
    for key, tool_id, member, start in stored.sessions:
        if tool_id in engine.tools:  # else another site's (its hub resumes it)
            out.extend(_replay_session(session, engine, key, tool_id, member, start, up_to_event))
    for effort in stored.efforts:
        if effort.device_id in data.stations:  # else another site's
            engine.restore_effort(replace(effort))
    # the clock first: what timed out meanwhile closes by its own rule, as it would have
    # had the hub been running (and as a rebuild's engine, running on, closes it)
    out.extend(engine.tick(now))
    out.extend(engine.restart(now))
    return engine, out


def _replay_session(
    session: Session,
    engine: ShopEngine,
    key: str,
    tool_id: str,
    member: str | None,
    start: datetime,
    up_to_event: int,
) -> Outcome:
    """Rebuild an open session from its tool's events in the log up to ``up_to_event``,
    placed in the log by the badge that granted it (not by time: a session's start is on
    the device's clock, the log's receive times on the hub's): the power state it started
    in (the tool's last reading before that badge), then every event after it, so it
    closes with the busy and idle time and energy it had.

    A session a replayed badge opened goes back into the tool's replayed past, with the
    replayed events only; a live one into its live state, with the live events only."""
    out = Outcome()
    devices = [d for d, t in engine.device_tool.items() if t == tool_id]
    logged = (Event.device_id.in_(devices), Event.id <= up_to_event)
    d = BadgeDecision
    granted = session.execute(
        select(Event.id, Event.received_at, Event.device_id, Event.boot, Event.seq, d.replay)
        .join(d, (d.device_id == Event.device_id) & (d.boot == Event.boot) & (d.seq == Event.seq))
        .where(*logged, d.member == member, d.tool_id == tool_id, d.action == DecisionAction.GRANT)
        .order_by(Event.id.desc())
        .limit(1)
    ).first()
    rx, replayed, source = None, False, None
    if granted is None:  # no badge opened it (a record written by hand): from its start
        place = Event.received_at >= start
        before_place = Event.received_at < start
    else:
        place, before_place = Event.id > granted.id, Event.id < granted.id
        # its timers count from the badge's arrival, as they did; a replayed one stays open
        rx, replayed = granted.received_at, granted.replay
        source = (granted.device_id, granted.boot, granted.seq)
    state = engine.tool_state(tool_id, replayed=replayed)
    own = Event.replay.is_(replayed)
    before = session.scalars(
        select(Event)
        .where(*logged, own, before_place, Event.type.in_(("power", "running")))
        .order_by(Event.id.desc())
        .limit(1)
    ).first()
    if before is not None:
        engine.refeed(tool_id, _device_event(before), before.received_at)
    name = engine.data.members[member].name if member in engine.data.members else None
    engine.restore_session(
        tool_id, key, member, start, name, rx=rx, replayed=replayed, source=source
    )
    events = session.scalars(
        select(Event)
        .where(*logged, own, place)
        .where(Event.type.in_(("power", "running", "badge_removed", "button")))
        .order_by(Event.id)
    )
    for ev in events:
        out.extend(engine.refeed(tool_id, _device_event(ev), ev.received_at))
        if state.session is None:  # it ended while replaying (a timeout passed)
            break
    return out


def _device_event(row: Event) -> DeviceEvent:
    return DeviceEvent(
        row.device_id, row.boot, row.seq, row.type, row.data, row.device_ts, row.replay
    )


# --- writing ----------------------------------------------------------------------------------


def write_records(session: Session, records: Iterable[Record]) -> None:
    """Store the rules' records in the caller's transaction (idempotent where it can be)."""
    decisions, presence, usage = [], [], []
    for rec in records:
        if isinstance(rec, DecisionRec):
            decisions.append(
                {
                    "device_id": rec.device_id,
                    "boot": rec.boot,
                    "seq": rec.seq,
                    "at": rec.at,
                    "uid": rec.uid,
                    "member": rec.member,
                    "tool_id": rec.tool_id,
                    "station": rec.station,
                    "action": rec.action,
                    "reason": rec.reason,
                    "replay": rec.replay,
                    "training": rec.training,
                }
            )
        elif isinstance(rec, SessionOpenRec):
            session.execute(
                insert_ignore(session, UsageSession.__table__),
                [
                    {
                        "key": rec.key,
                        "tool_id": rec.tool_id,
                        "member": rec.member,
                        "start": rec.start,
                        "busy_s": 0.0,
                        "idle_s": 0.0,
                        "wh": 0.0,
                    }
                ],
            )
        elif isinstance(rec, SessionCloseRec):
            _close_session(session, rec)
        elif isinstance(rec, PresenceRec):
            presence.append(
                {
                    "member": rec.member,
                    "at": rec.at,
                    "state": rec.state,
                    "reason": rec.reason,
                    "site": rec.site or DEFAULT_SITE,
                }
            )
        elif isinstance(rec, EffortRec):
            _upsert_effort(session, rec)
        elif isinstance(rec, UsageRec):
            usage.append(
                {
                    "device_id": rec.device_id,
                    "boot": rec.boot,
                    "seq": rec.seq,
                    "at": rec.at,
                    "tool_id": rec.tool_id,
                    "member": rec.member,
                    "item": rec.item,
                    "qty": rec.qty,
                    "unit": rec.unit,
                }
            )
        elif isinstance(rec, TrainingRec):
            _record_training(session, rec)
    if decisions:
        session.execute(insert_ignore(session, BadgeDecision.__table__), decisions)
    if presence:
        session.execute(PresenceChange.__table__.insert(), presence)
    if usage:
        session.execute(UsageRecord.__table__.insert(), usage)


def _close_session(session: Session, rec: SessionCloseRec) -> None:
    values = {
        "end": rec.end,
        "busy_s": rec.busy_s,
        "idle_s": rec.idle_s,
        "wh": rec.wh,
        "close_reason": rec.close_reason,
    }
    done = session.execute(
        update(UsageSession).where(UsageSession.key == rec.key).values(**values)
    ).rowcount
    if not done:  # opened and closed in one batch, or opened before a lost record
        session.add(
            UsageSession(
                key=rec.key, tool_id=rec.tool_id, member=rec.member, start=rec.start, **values
            )
        )
        session.flush()


def _upsert_effort(session: Session, rec: EffortRec) -> None:
    row = session.scalar(select(EffortRecord).where(EffortRecord.key == rec.key))
    if row is None:
        row = EffortRecord(key=rec.key)
        session.add(row)
    row.member, row.task_id, row.project_id = rec.member, rec.task_id, rec.project_id
    row.start, row.end, row.hours, row.weight = rec.start, rec.end, rec.hours, rec.weight
    row.source, row.device_id = rec.source, rec.device_id
    session.flush()


def _record_training(session: Session, rec: TrainingRec) -> None:
    rows = session.execute(
        select(Member.handle, Member.id).where(Member.handle.in_([rec.trainee, rec.trainer]))
    ).all()
    ids = {handle: member_id for handle, member_id in rows}
    if rec.trainee not in ids:
        return
    grant = session.scalar(
        select(TrainingGrant).where(
            TrainingGrant.training_id == rec.training, TrainingGrant.member_id == ids[rec.trainee]
        )
    )
    if grant is None:
        session.add(
            TrainingGrant(
                training_id=rec.training,
                member_id=ids[rec.trainee],
                granted_by_id=ids.get(rec.trainer),
                granted_at=rec.at,
            )
        )
    else:
        grant.granted_by_id, grant.granted_at, grant.expires_at = ids.get(rec.trainer), rec.at, None
        unmark_grants(session, [grant.id])  # an induction, not Admin's revoke or renewal, now
    bump_shop_version(session)
    session.flush()


# --- offline allow-lists ----------------------------------------------------------------------

ALLOWLIST_TTL = timedelta(days=7)
ALLOWLIST_RENEW = timedelta(days=1)  # re-issue when a list expires within this


def issue_allowlists(
    session: Session,
    data: ShopData,
    key: Any,
    now: datetime,
    *,
    ttl: timedelta = ALLOWLIST_TTL,
    site: str = DEFAULT_SITE,
) -> list[str]:
    """Sign and queue a new allow-list for each tool whose badges changed or whose list
    expires soon; returns the tools re-issued.  Runs in the caller's transaction, and the
    retained messages go through the outbox, so a crash cannot lose a revocation.

    A list names its tool inside the signature (docs/device-protocol.md), so two tools never share
    one.  With thousands of members each is hundreds of KB: the stored lists are not read
    back, and each tool's rows are flushed before the next is signed, so one list at a
    time is in memory, not all of them."""

    issued = []
    av = AllowlistVersion
    current = {
        row.tool_id: row
        for row in session.execute(select(av.tool_id, av.version, av.digest, av.expires))
    }
    for tool_id, tool in sorted(data.tools.items()):
        if not tool.devices:
            continue  # plugs cannot decide alone
        uids = data.allowed_uids(tool_id, now)
        digest = hashlib.sha256(json.dumps(sorted(uid_hash(u) for u in uids)).encode()).hexdigest()
        row = current.get(tool_id)
        if row is not None and row.digest == digest and row.expires - now > ALLOWLIST_RENEW:
            continue
        version = next_version(None if row is None else row.version, now)
        payload = allowlist_payload(build_allowlist(tool_id, version, uids, now, now + ttl, key))
        values = {
            "version": version,
            "digest": digest,
            "payload": payload,
            "issued": now.replace(microsecond=0),
            "expires": now.replace(microsecond=0) + ttl,
        }
        if row is None:
            session.execute(insert(av).values(tool_id=tool_id, **values))
        else:
            session.execute(update(av).where(av.tool_id == tool_id).values(**values))
        for device in tool.devices:
            enqueue(session, allowlist_topic(device), payload, retain=True, site=site)
        session.flush()  # the outbox rows leave the session's memory for the database
        issued.append(tool_id)
    return issued
