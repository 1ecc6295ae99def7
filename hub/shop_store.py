"""The shop engine's database side: load what it needs, write what it records.

:func:`write_records` is the one place that writes the rules' records.  The hub calls it
inside the same transaction as the events that caused them, so an event and its records
are stored together or not at all.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from hub.access import MemberAccess, WeeklyHours
from hub.config import DEFAULT_SITE
from hub.contract import DeviceEvent
from hub.db import insert_ignore
from hub.models import (
    Badge,
    BadgeDecision,
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
from hub.overrides import unmark_grants
from hub.sessions import OpenSession, ToolRules
from hub.shop import (
    DecisionRec,
    EffortRec,
    OpenEffort,
    Outcome,
    PresenceRec,
    Record,
    SessionCloseRec,
    SessionOpenRec,
    ShopData,
    ShopEngine,
    TaskInfo,
    ToolConfig,
    TrainingRec,
    UsageRec,
    WeightClock,
)

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
    from hub.shopfile import tool_rules as from_columns

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
            trains=frozenset(held) if roles & {"trainer", "coordinator"} else frozenset(),
            keyholder="coordinator" in roles,
        )
        by_id[m.id] = m.handle
    badges = {b.uid: by_id[b.member_id] for b in session.scalars(select(Badge))}
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
        plugs = tuple((b.kind, b.ref) for b in tool.bindings if b.kind in ("tasmota", "shelly"))
        max_s = options.get("max_duration")  # a grant's max_s is the tool's longest session
        tools[tool.id] = ToolConfig(
            id=tool.id,
            name=tool.name,
            rules=tool_rules(tool),
            training=tool.training_id,
            locked=tool.locked,
            hours=weekly,
            scarce=scarce,
            max_s=int(max_s) if max_s else None,
            project=tool.project_id,
            devices=devices,
            plugs=plugs,
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
    from hub.taskboard import slot_takes, weight_rules

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
    rules = {p: r for p, r in weight_rules(session).items() if r.weight_mode == "clock"}
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
                    EffortRecord.source == "station",
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


# --- restoring live state after a restart ---------------------------------------------------


def last_presence_toggles(session: Session) -> dict[str, datetime]:
    """When each member last toggled in or out by badge: the repeat window outlives a restart."""
    rows = session.execute(
        select(PresenceChange.member, func.max(PresenceChange.at))
        .where(PresenceChange.reason == "badge")
        .group_by(PresenceChange.member)
    )
    return {member: at for member, at in rows}


def current_presence(session: Session) -> dict[str, datetime]:
    """Who is signed in, from the last presence change of each member."""
    present: dict[str, datetime] = {}
    rows = session.execute(
        select(PresenceChange.member, PresenceChange.state, PresenceChange.at).order_by(
            PresenceChange.id
        )
    )
    for member, state, at in rows:
        if state == "in":
            present[member] = at
        else:
            present.pop(member, None)
    return present


def restore(session: Session, engine: ShopEngine) -> Outcome:
    """Put open sessions and efforts back into a fresh engine.

    An open session is rebuilt by replaying its tool's events since it started, so the
    busy and idle time and energy it closes with (``hub_restart``) are those it had.
    Returns what replaying produced (a session that timed out meanwhile, say)."""
    out = Outcome()
    device_tool = engine.device_tool
    for row in session.scalars(select(UsageSession).where(UsageSession.end.is_(None))):
        state = engine.tools.get(row.tool_id)
        if state is None:
            continue
        name = engine.data.members[row.member].name if row.member in engine.data.members else None
        devices = [d for d, t in device_tool.items() if t == row.tool_id]
        before = session.scalars(
            select(Event)
            .where(Event.device_id.in_(devices), Event.received_at < row.start)
            .where(Event.type.in_(("power", "running")))
            .order_by(Event.id.desc())
            .limit(1)
        ).first()
        if before is not None:  # the power state the session started in
            state.feed(
                DeviceEvent(
                    before.device_id,
                    before.boot,
                    before.seq,
                    before.type,
                    before.data,
                    before.device_ts,
                    before.replay,
                ),
                before.received_at,
            )
        state.session = OpenSession(row.member, row.start, row.start, name=name)
        engine.session_keys[row.tool_id] = row.key
        events = session.scalars(
            select(Event)
            .where(Event.device_id.in_(devices), Event.received_at >= row.start)
            .where(Event.type.in_(("power", "running", "badge_removed", "button")))
            .order_by(Event.id)
        )
        for ev in events:
            device_event = DeviceEvent(
                ev.device_id, ev.boot, ev.seq, ev.type, ev.data, ev.device_ts, ev.replay
            )
            member = (
                engine.data.badges.get(ev.data.get("uid", ""))
                if ev.type == "badge_removed"
                else None
            )
            out.extend(engine.apply(state.feed(device_event, ev.received_at, member)))
            if state.session is None:  # it ended while replaying (a timeout passed)
                break
    for row in session.scalars(select(EffortRecord).where(EffortRecord.end.is_(None))):
        if row.source != "station" or row.device_id not in engine.data.stations:
            continue  # not from a station, or another site's (its hub restores it)
        engine.restore_effort(
            OpenEffort(
                row.key,
                row.member,
                row.start,
                row.device_id,
                row.task_id,
                row.weight,
                row.project_id,
            )
        )
    return out


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
                {"member": rec.member, "at": rec.at, "state": rec.state, "reason": rec.reason}
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

    A list names its tool inside the signature (CONTRACT.md §2), so two tools never share
    one.  With thousands of members each is hundreds of KB: the stored lists are not read
    back, and each tool's rows are flushed before the next is signed, so one list at a
    time is in memory, not all of them."""
    import hashlib
    import json

    from hub.allowlist import allowlist_payload, build_allowlist, uid_hash
    from hub.contract import allowlist_topic
    from hub.models import AllowlistVersion
    from hub.outbox import enqueue

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
        version = 1 if row is None else row.version + 1
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
