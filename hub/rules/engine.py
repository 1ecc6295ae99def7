"""The shop rules engine: validated events in, decisions, records and messages out.

:class:`ShopEngine` ties the pure rules together (``access``, ``sessions``, ``presence``)
for one shop.  It holds the live state in memory, does no I/O and reads no clock: the
live hub calls it from the MQTT thread and sends what it returns, and ``peershop
rebuild`` feeds it the event log and compares what it returns with what is stored.

A task station's effort is credited at the task's posted weight when it started.  In a
project whose rule (a) runs in ``clock`` mode that weight rises while the task's slots
wait (:func:`hub.peerconomy.economy.weight_at`): the data carries the open period and the slots
taken on the board, and the engine counts the station efforts it made itself, so the
same event log gives the same weights live and in a rebuild.

Badge decisions are the one thing the engine makes up live.  A rebuild passes each
stored decision back in (``decided=``), so a badge revoked since does not rewrite what
happened; everything else (sessions, presence, effort, consumables) is recomputed.

A device back from an outage replays what it buffered (``replay: true``).  Each tool
keeps that replayed past in a state machine of its own, apart from the tool's live one:
a live badge is decided as the tool is now, never against a session that a replay has
open, and the replay's sessions publish no tool state, release nothing and switch no
plug.  A replayed session carries on live once its device's replay has caught up with
a live event of the same boot (every event since the session's badge has arrived): the
member who badged in offline is still at the tool.  Device times are put on the hub's
clock by the offset each boot's birth showed (:class:`ClockReading`), and a replayed
event is never later than its arrival.
"""

from __future__ import annotations

import json
import logging
import uuid
from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from hub.contract.messages import (
    DenyReason,
    DeviceEvent,
    DeviceStatus,
    cmd_topic,
    tool_state_topic,
)
from hub.peerconomy import economy as pc
from hub.plugs.decode import switch_commands
from hub.rules.access import (
    STATION_GRANT_S,
    Deny,
    Grant,
    MemberAccess,
    NoReply,
    PendingInduction,
    Reservation,
    TapOut,
    ToolAccess,
    decide,
    reply_payload,
)
from hub.rules.presence import Presence, PresenceReason, SignedIn, auto_close_time
from hub.rules.records import (
    ClockReading,
    DecisionAction,
    DecisionRec,
    Message,
    OpenEffort,
    Outcome,
    PresenceRec,
    SessionCloseRec,
    SessionOpenRec,
    ShopData,
    StationKind,
    TaskInfo,
    ToolConfig,
    TrainingRec,
    UsageRec,
    finished_rec,
    open_rec,
)
from hub.rules.seen import SeenIndex
from hub.rules.sessions import (
    CLOCK_SKEW,
    ReleaseTool,
    SessionEnded,
    SessionStarted,
    ToolSessionState,
    ToolStateChanged,
)

log = logging.getLogger(__name__)

STATION_TASK_WINDOW = timedelta(minutes=2)  # a task button counts for the next badge


# --- the engine -----------------------------------------------------------------------


class ShopEngine:
    """The live rules for one shop; see the module docstring.

    >>> from hub.rules.sessions import ToolRules
    >>> data = ShopData(
    ...     members={"ada": MemberAccess("ada", "Ada L.")},
    ...     badges={"04A1B2C3": "ada"},
    ...     tools={"saw": ToolConfig("saw", "Saw", ToolRules("tap"), devices=("saw-node",))},
    ... )
    >>> engine = ShopEngine(data)
    >>> ev = DeviceEvent("saw-node", 1, 0, "badge", {"uid": "04A1B2C3"})
    >>> out = engine.on_event(ev, datetime(2026, 11, 26, 10, tzinfo=UTC))
    >>> out.reply.payload
    b'{"re":0,"action":"grant","member":"Ada L."}'
    """

    def __init__(
        self,
        data: ShopData,
        *,
        present: dict[str, datetime] | None = None,
        last_toggle: dict[str, datetime] | None = None,
        key_factory: Callable[[], str] = lambda: uuid.uuid4().hex,
        seen: SeenIndex | None = None,
        clocks: Iterable[ClockReading] = (),
    ):
        self.key_factory = key_factory
        self.presence = Presence(
            data.tz, auto_close_at=data.auto_signout, present=present, last_toggle=last_toggle
        )
        self.tools: dict[str, ToolSessionState] = {}  # each tool as it is now
        self.session_keys: dict[str, str] = {}
        # each tool's replayed past, its session keys, and the identity of the replayed
        # badge that opened its open session (device, boot, seq)
        self.past: dict[str, ToolSessionState] = {}
        self.past_keys: dict[str, str] = {}
        self.past_source: dict[str, tuple[str, int, int]] = {}
        # the identities of the events run on (the hub's own index, which it fills as
        # messages arrive; a rebuild's, across its restarts): how far a replay has come
        self.seen = SeenIndex() if seen is None else seen
        self.clocks: dict[tuple[str, int], ClockReading] = {}  # (device, boot) -> latest
        self._readings: set[tuple[str, int, datetime]] = set()
        self.pending: dict[str, PendingInduction] = {}
        self.efforts: dict[tuple[str, str], OpenEffort] = {}
        self.station_task: dict[str, tuple[str, datetime]] = {}
        self.device_boot: dict[str, int] = {}
        self.published_w: dict[str, tuple[float | None, datetime]] = {}
        self.reservations: dict[str, tuple[Reservation, ...]] = {}
        # task -> {effort key: start} of the station efforts that took one of a clock-mode
        # task's slots in the open period
        self.station_takes: dict[str, dict[str, datetime]] = {}
        self.data = ShopData()
        self.device_tool: dict[str, str] = {}
        self.set_data(data)
        for reading in clocks:
            self.on_clock(reading)

    # -- shop data -------------------------------------------------------------------

    def set_data(self, data: ShopData, now: datetime | None = None) -> Outcome:
        """New members, badges or tools (a reload): live sessions carry on.

        A tool locked since ends its session (``locked``) and its devices are told
        ``lock``; an unlocked one is told ``unlock``."""
        out = Outcome()
        self.data = data
        self._count_station_takes(data)
        self.device_tool = data.device_tool()
        self.presence.tz = data.tz
        self.presence.auto_close_at = data.auto_signout
        for tool_id, cfg in data.tools.items():
            if tool_id in self.past:
                self.past[tool_id].rules = cfg.rules
            state = self.tools.get(tool_id)
            if state is None:
                self.tools[tool_id] = ToolSessionState(tool_id, cfg.rules, locked=cfg.locked)
                continue
            state.rules = cfg.rules
            if cfg.locked == state.locked:
                continue
            if now is None:
                state.locked = cfg.locked
                continue
            out.extend(self._effects(state.lock(now) if cfg.locked else state.unlock(now)))
            action = json.dumps({"action": "lock" if cfg.locked else "unlock"}).encode()
            out.messages.extend(Message(cmd_topic(d), action) for d in cfg.devices)
            if cfg.locked:
                out.messages.extend(self._switch_plugs(cfg, on=False))
        return out

    def _count_station_takes(self, data: ShopData) -> None:
        """Keep the station efforts of the open period only, adding the stored ones."""
        for key, task, start in data.station_takes:
            self.station_takes.setdefault(task, {}).setdefault(key, start)
        if data.period is None:
            self.station_takes.clear()
            return
        first, end = data.period
        kept = {
            task: {k: s for k, s in takes.items() if first <= s < end}
            for task, takes in self.station_takes.items()
        }
        self.station_takes = {task: takes for task, takes in kept.items() if takes}

    def posted_weight(self, task: TaskInfo, at: datetime, key: str | None = None) -> Decimal:
        """The weight a task shows at ``at``: in clock mode, risen by rule (a) for the
        whole days its slots have waited in the open period, with the slots taken before
        ``at`` (board claims and entries before it, station efforts up to it other than
        ``key``); otherwise, or outside the open period, its posted weight."""
        clock, period = task.clock, self.data.period
        if clock is None or period is None or not period[0] <= at < period[1]:
            return task.weight
        taken = bisect_left(clock.taken, at) - bisect_left(clock.taken, period[0])
        stations = self.station_takes.get(task.id, {})
        taken += sum(1 for k, start in stations.items() if start <= at and k != key)
        return pc.weight_at(
            task.weight,
            period[0],
            at,
            slots=max(task.slots, 1),
            taken=taken,
            k=clock.gain,
            lo=clock.lo,
            hi=clock.hi,
            pinned=clock.pinned,
        )

    def set_reservations(self, won: dict[str, list[Reservation]]) -> None:
        """The winning reservations per tool, refreshed by the hub after each clearing."""
        self.reservations = {tool: tuple(rs) for tool, rs in won.items()}

    def restore_session(
        self,
        tool_id: str,
        key: str,
        member: str | None,
        start: datetime,
        name: str | None = None,
        *,
        rx: datetime | None = None,
        replayed: bool = False,
        source: tuple[str, int, int] | None = None,
    ) -> None:
        """Put back a session found open in the database, granted on a badge received at
        ``rx``: live, or replayed (into the tool's replayed past, opened by the badge
        ``source``); then feed it its tool's events since (:meth:`refeed`) and call
        :meth:`restart`."""
        if tool_id not in self.tools:
            return
        self.tool_state(tool_id, replayed=replayed).resume(
            member, start, name=name, rx=rx, replayed=replayed
        )
        if not replayed:
            self.session_keys[tool_id] = key
            return
        self.past_keys[tool_id] = key
        if source is not None:
            self.past_source[tool_id] = source

    def tool_state(self, tool_id: str, *, replayed: bool = False) -> ToolSessionState:
        """A tool's live state machine, or (``replayed``) the one of its replayed past."""
        if not replayed:
            return self.tools[tool_id]
        past = self.past.get(tool_id)
        if past is None:
            past = self.past[tool_id] = ToolSessionState(tool_id, self.tools[tool_id].rules)
        return past

    def refeed(self, tool_id: str, ev: DeviceEvent, now: datetime) -> Outcome:
        """A logged event of the tool (not a badge) fed again to the state machine it
        went to, on the clock :meth:`on_event` put it on: a restart rebuilding a session
        that was open."""
        return self._feed(tool_id, self._corrected(ev, now), now)

    def restore_effort(self, effort: OpenEffort) -> None:
        self.efforts[(effort.device_id, effort.member)] = effort

    # -- inputs ----------------------------------------------------------------------

    def on_event(
        self, ev: DeviceEvent, now: datetime, *, decided: DecisionRec | None = None
    ) -> Outcome:
        """One new event (never a duplicate: the caller deduplicates by identity).

        The tool's own timers run inside its state machine on every call; the shop-wide
        clock (every tool, forgotten sign-outs) is :meth:`tick`, which the hub runs once
        a second rather than per event."""
        self.seen.add(ev.device_id, ev.boot, ev.seq)
        ev = self._corrected(ev, now)
        out = Outcome()
        tool_id = self.device_tool.get(ev.device_id)
        station = self.data.stations.get(ev.device_id)
        if tool_id is not None and not ev.replay:
            out.extend(self._carry_on(tool_id, ev, now))
        if ev.type == "badge":
            if tool_id is not None:
                out.extend(self._badge_at_tool(ev, now, tool_id, decided))
            elif station == StationKind.SIGN_IN:
                out.extend(self._badge_at_door(ev, now, decided))
            elif station == StationKind.TASK_STATION:
                out.extend(self._badge_at_station(ev, now, decided))
            else:
                # A reader bound to nothing: kept, answered with nothing, visible to a
                # coordinator who can enrol the badge or bind the device.
                out.records.append(
                    self._decision(
                        ev, now, None, None, None, DecisionAction.NONE, "unbound_device", decided
                    )
                )
            return out
        if station == StationKind.TASK_STATION and ev.type == "button":
            out.extend(self._station_button(ev, now))
            return out
        if tool_id is None:
            return out
        state = self.tool_state(tool_id, replayed=ev.replay)
        if ev.type == "consume":
            holder = state.session.member if state.session else None
            out.records.append(
                UsageRec(
                    ev.device_id,
                    ev.boot,
                    ev.seq,
                    self._event_time(ev, now),
                    tool_id,
                    holder,
                    ev.data["item"],
                    ev.data["qty"],
                    ev.data["unit"],
                )
            )
            return out
        out.extend(self._feed(tool_id, ev, now))
        return out

    def _feed(self, tool_id: str, ev: DeviceEvent, now: datetime) -> Outcome:
        """A tool's event (not a badge) to its live state machine or its replayed past."""
        state = self.tool_state(tool_id, replayed=ev.replay)
        holder = self.data.badges.get(ev.data["uid"]) if ev.type == "badge_removed" else None
        out = self._effects(state.feed(ev, now, holder), past=ev.replay)
        if not ev.replay:
            out.extend(self._watts(state, now))
        return out

    def on_clock(self, reading: ClockReading) -> None:
        """A birth's clock reading: its boot's events are corrected by the latest one.

        A reading heard before (the same birth delivered again) changes nothing, as the
        stored readings keep the first."""
        identity = (reading.device_id, reading.boot, reading.device_ts)
        if identity in self._readings:
            return
        self._readings.add(identity)
        self.clocks[(reading.device_id, reading.boot)] = reading

    def _corrected(self, ev: DeviceEvent, now: datetime) -> DeviceEvent:
        """``ev`` with its device time on the hub's clock, as far as the hub knows the
        device's: less the offset its boot's latest birth showed, when more than
        :data:`CLOCK_SKEW` (a clock that close is taken as it is); and a replayed event
        no later than its arrival ``now``, since it happened before it was sent.

        Only the boot's own birth says how its clock was set: a reading of a later
        boot (the device restarted, its clock set again) corrects nothing of it."""
        ts = ev.device_ts
        if ts is None:
            return ev
        reading = self.clocks.get((ev.device_id, ev.boot))
        if reading is not None and abs(reading.offset) > CLOCK_SKEW:
            ts -= reading.offset
        if ev.replay and ts > now:
            ts = now
        return ev if ts == ev.device_ts else replace(ev, device_ts=ts)

    def _carry_on(self, tool_id: str, ev: DeviceEvent, now: datetime) -> Outcome:
        """Hand the tool's replayed open session to its live state machine when the
        device whose replay opened it sends live, in the same boot, and every event of
        that boot from the session's badge up to this one has arrived: the replay has
        caught up with the present, so the member who badged in offline is still there.

        Before that, the live event belongs to the tool as it is now; and a tool with a
        live session of its own keeps it (the replayed one ends by its own events or
        timers)."""
        past = self.past.get(tool_id)
        source = self.past_source.get(tool_id)
        live = self.tools[tool_id]
        if past is None or past.session is None or source is None or live.session is not None:
            return Outcome()
        device, boot, seq = source
        if (ev.device_id, ev.boot) != (device, boot) or ev.seq <= seq:
            return Outcome()
        if not self.seen.covers(device, boot, seq, ev.seq - 1):
            return Outcome()
        del self.past_source[tool_id]
        key = self.past_keys.pop(tool_id, None)
        if key is not None:
            self.session_keys[tool_id] = key
        return self._effects(live.carry_on(past, now))

    def on_status(self, status: DeviceStatus, now: datetime) -> Outcome:
        """A birth or will; a will from an older boot than the last birth is stale.

        A birth's clock reading is kept whatever its boot: it is that boot's."""
        out = Outcome()
        if status.state == "online" and status.boot is not None and status.device_ts is not None:
            self.on_clock(ClockReading(status.device_id, status.boot, status.device_ts, now))
        known = self.device_boot.get(status.device_id)
        if status.state == "online":
            if status.boot is not None:
                if known is not None and status.boot < known:
                    return out
                self.device_boot[status.device_id] = status.boot
        elif status.boot is not None and known is not None and status.boot < known:
            return out
        tool_id = self.device_tool.get(status.device_id)
        if tool_id is None:
            return out
        state = self.tools[tool_id]
        if status.state == "online":
            out.extend(self._effects(state.device_online(now)))
        else:
            out.extend(self._effects(state.device_offline(now)))
        return out

    def tick(self, now: datetime) -> Outcome:
        """Timeouts, maximum durations, forgotten sign-outs; cheap, call it often."""
        out = Outcome()
        for state in self.tools.values():
            if state.session is not None:
                out.extend(self._effects(state.tick(now)))
        for state in self.past.values():
            if state.session is not None:
                out.extend(self._effects(state.tick(now), past=True))
        for signed_out in self.presence.auto_close(now):
            out.records.append(PresenceRec.of(signed_out, self.data.site))
            out.extend(self._close_efforts_of(signed_out.member, signed_out.at, auto=True))
        # an effort whose member never signed in at the door ends at the same hour
        for key, effort in list(self.efforts.items()):
            cutoff = auto_close_time(effort.start, self.data.auto_signout, self.data.tz)
            if cutoff <= now:
                del self.efforts[key]
                out.records.append(finished_rec(effort, _auto_end(effort, cutoff, self.data)))
        return out

    def restart(self, now: datetime) -> Outcome:
        """The hub (re)started: close what was open by rule, with reason ``hub_restart``.

        A tool's replayed past is left open: the rest of its device's replay ends it."""
        out = Outcome()
        for state in self.tools.values():
            out.extend(self._effects(state.hub_restart(now)))
        # a task button waiting for its badge lives in memory only: a restart forgets it
        self.station_task.clear()
        return out

    def publish_states(self, now: datetime) -> list[Message]:
        """Every tool's current state, e.g. after a start or a reconnect."""
        return [self._state_message(state.snapshot(now)) for state in self.tools.values()]

    # -- badges ----------------------------------------------------------------------

    def _member(self, uid: str) -> MemberAccess | None:
        handle = self.data.badges.get(uid)
        return None if handle is None else self.data.members.get(handle)

    def _decision(
        self,
        ev: DeviceEvent,
        now: datetime,
        member: str | None,
        tool_id: str | None,
        station: StationKind | None,
        action: DecisionAction,
        reason: str | None,
        decided: DecisionRec | None,
        training: str | None = None,
    ) -> DecisionRec:
        if decided is not None:
            return decided
        return DecisionRec(
            ev.device_id,
            ev.boot,
            ev.seq,
            now,
            ev.data["uid"],
            member,
            tool_id,
            station,
            action,
            reason,
            ev.replay,
            training,
        )

    def _reply(self, ev: DeviceEvent, reply: Grant | Deny | TapOut | NoReply) -> Message | None:
        payload = reply_payload(ev.seq, reply)
        if payload is None or ev.replay:
            return None  # a replayed badge is recorded, never answered
        return Message(cmd_topic(ev.device_id), payload)

    def _badge_at_tool(
        self, ev: DeviceEvent, now: datetime, tool_id: str, decided: DecisionRec | None
    ) -> Outcome:
        out = Outcome()
        cfg = self.data.tools[tool_id]
        state = self.tool_state(tool_id, replayed=ev.replay)
        if decided is not None:
            action, member, training = decided.action, decided.member, decided.training
            name = self.data.members[member].name if member in self.data.members else member
            if action == DecisionAction.GRANT and member:
                out.extend(self._start(state, ev, now, member, name))
            elif action == DecisionAction.RELEASE and member:
                effects = state.tap_out(member, now, ev.device_ts, replay=ev.replay)
                out.extend(self._effects(effects, past=ev.replay))
            out.records.append(decided)
            return out

        member = self._member(ev.data["uid"])
        access = ToolAccess(
            tool=tool_id,
            training=cfg.training,
            policy=cfg.rules.policy,
            locked=self.tools[tool_id].locked,
            in_use_by=state.session.member if state.session else None,
            hours=cfg.hours,
            scarce=cfg.scarce,
            max_s=cfg.max_s,
        )
        result = decide(
            access,
            member,
            now,
            reservations=self.reservations.get(tool_id, ()),
            pending=self.pending.get(tool_id),
            replay=ev.replay,
        )
        if result.pending is None:
            self.pending.pop(tool_id, None)
        else:
            self.pending[tool_id] = result.pending
        reply = result.reply
        effective = reply.decision if isinstance(reply, NoReply) else reply
        handle = member.handle if member else None
        training = None
        if result.training is not None:
            training = result.training.training
            out.records.append(
                TrainingRec(result.training.trainee, result.training.trainer, training, now)
            )
            self.data.members[result.training.trainee] = _with_training(
                self.data.members[result.training.trainee], training
            )
        if isinstance(effective, Grant):
            action, reason = DecisionAction.GRANT, None
            out.extend(self._start(state, ev, now, effective.member, effective.name))
            if not ev.replay:  # a replayed grant was yesterday's: the plug stays as it is
                out.messages.extend(self._switch_plugs(cfg, on=True))
        elif isinstance(effective, TapOut):
            action, reason = DecisionAction.RELEASE, None
            effects = state.tap_out(effective.member, now, ev.device_ts, replay=ev.replay)
            out.extend(self._effects(effects, past=ev.replay))
        else:
            action, reason = DecisionAction.DENY, effective.reason
        out.records.append(
            self._decision(ev, now, handle, tool_id, None, action, reason, None, training)
        )
        out.reply = self._reply(ev, reply)
        return out

    def _start(
        self,
        state: ToolSessionState,
        ev: DeviceEvent,
        now: datetime,
        member: str,
        name: str | None,
    ) -> Outcome:
        """A granted badge opens (or keeps) ``member``'s session; a replayed one in the
        tool's replayed past, which notes the badge that opened it."""
        effects = state.start(member, now, ev.device_ts, replay=ev.replay, name=name)
        if ev.replay and any(isinstance(e, SessionStarted) for e in effects):
            self.past_source[state.tool] = ev.identity
        return self._effects(effects, past=ev.replay)

    def _unknown_badge(
        self, ev: DeviceEvent, now: datetime, station: StationKind, decided: DecisionRec | None
    ) -> Outcome:
        """A badge no member holds, at a station: recorded, and denied."""
        out = Outcome()
        unknown = DenyReason.UNKNOWN_BADGE
        out.records.append(
            self._decision(ev, now, None, None, station, DecisionAction.DENY, unknown, decided)
        )
        out.reply = self._reply(ev, Deny(unknown))
        return out

    def _badge_at_door(
        self, ev: DeviceEvent, now: datetime, decided: DecisionRec | None
    ) -> Outcome:
        out = Outcome()
        handle = decided.member if decided else self.data.badges.get(ev.data["uid"])
        member = self.data.members.get(handle) if handle else None
        at = self._event_time(ev, now)
        if handle is None or (decided is None and member is None):
            return self._unknown_badge(ev, now, StationKind.SIGN_IN, decided)
        changes = self.presence.badge(handle, at)
        action = DecisionAction.NONE
        for change in changes:
            out.records.append(PresenceRec.of(change, self.data.site))
            if isinstance(change, SignedIn):
                action = DecisionAction.SIGN_IN
            elif change.reason == PresenceReason.BADGE:
                action = DecisionAction.SIGN_OUT
                out.extend(self._close_efforts_of(handle, change.at))
        out.records.append(
            self._decision(ev, now, handle, None, StationKind.SIGN_IN, action, None, decided)
        )
        name = member.name if member else handle
        # a second tap within a few seconds changes nothing but is answered all the same
        inside = handle in self.presence.present
        if action == DecisionAction.SIGN_IN or (action == DecisionAction.NONE and inside):
            out.reply = self._reply(ev, Grant(handle, name, STATION_GRANT_S))
        else:
            out.reply = self._reply(ev, TapOut(handle, name))
        return out

    def _badge_at_station(
        self, ev: DeviceEvent, now: datetime, decided: DecisionRec | None
    ) -> Outcome:
        out, station = Outcome(), StationKind.TASK_STATION
        handle = decided.member if decided else self.data.badges.get(ev.data["uid"])
        at = self._event_time(ev, now)
        if handle is None or (decided is None and handle not in self.data.members):
            return self._unknown_badge(ev, now, station, decided)
        name = self.data.members[handle].name if handle in self.data.members else handle

        def decision(action: DecisionAction) -> DecisionRec:
            return self._decision(ev, now, handle, None, station, action, None, decided)

        open_effort = self.efforts.pop((ev.device_id, handle), None)
        if open_effort is not None:
            out.records.append(finished_rec(open_effort, at))
            out.records.append(decision(DecisionAction.EFFORT_END))
            out.reply = self._reply(ev, TapOut(handle, name))
            return out
        effort = OpenEffort(self.key_factory(), handle, at, ev.device_id)
        chosen = self.station_task.get(ev.device_id)
        if chosen is not None and timedelta(0) <= at - chosen[1] <= STATION_TASK_WINDOW:
            self._set_task(effort, chosen[0])
            del self.station_task[ev.device_id]
        self.efforts[(ev.device_id, handle)] = effort
        out.records.append(open_rec(effort))
        out.records.append(decision(DecisionAction.EFFORT_START))
        out.reply = self._reply(ev, Grant(handle, name, STATION_GRANT_S))
        return out

    def _station_button(self, ev: DeviceEvent, now: datetime) -> Outcome:
        """A task button: sets the task of the latest effort at this station that has none,
        or is remembered for the next badge."""
        out = Outcome()
        task = ev.data["name"].removeprefix("task:")
        if task not in self.data.tasks:
            return out
        at = self._event_time(ev, now)
        waiting = [
            e for e in self.efforts.values() if e.device_id == ev.device_id and e.task is None
        ]
        if waiting:
            effort = max(waiting, key=lambda e: e.start)
            self._set_task(effort, task)
            out.records.append(open_rec(effort))
        else:
            self.station_task[ev.device_id] = (task, at)
        return out

    def _set_task(self, effort: OpenEffort, task_id: str) -> None:
        task = self.data.tasks[task_id]
        weight = self.posted_weight(task, effort.start, effort.key)
        effort.task, effort.weight, effort.project = task.id, weight, task.project
        period = self.data.period
        if task.clock is not None and period is not None and period[0] <= effort.start < period[1]:
            self.station_takes.setdefault(task.id, {})[effort.key] = effort.start

    def _close_efforts_of(self, member: str, at: datetime, *, auto: bool = False) -> Outcome:
        """A member leaving the space ends their efforts at task stations.

        On an automatic sign-out (forgotten badge-out) the effort is credited at the task's
        posted hours, capped by the time actually elapsed, rather than all night."""
        out = Outcome()
        for key in [k for k in self.efforts if k[1] == member]:
            effort = self.efforts.pop(key)
            end = _auto_end(effort, at, self.data) if auto else max(at, effort.start)
            out.records.append(finished_rec(effort, end))
        return out

    # -- effects of the session state machine ------------------------------------------

    def _effects(self, effects: Iterable[Any], *, past: bool = False) -> Outcome:
        """Records and messages for the effects of a tool's state machine.  Those of its
        replayed past (``past``) are records only: the tool's state, its devices and its
        plugs are the present's."""
        out = Outcome()
        keys = self.past_keys if past else self.session_keys
        for effect in effects:
            if isinstance(effect, SessionStarted):
                key = self.key_factory()
                keys[effect.tool] = key
                out.records.append(SessionOpenRec(key, effect.tool, effect.member, effect.start))
            elif isinstance(effect, SessionEnded):
                key = keys.pop(effect.tool, None) or self.key_factory()
                out.records.append(
                    SessionCloseRec(
                        key,
                        effect.tool,
                        effect.member,
                        effect.start,
                        effect.end,
                        effect.busy_s,
                        effect.idle_s,
                        effect.wh,
                        effect.close_reason,
                    )
                )
                cfg = self.data.tools.get(effect.tool)
                # a run ends when the tool stops on its own: its plug stays as it is
                if cfg is not None and not past and effect.member is not None:
                    out.messages.extend(self._switch_plugs(cfg, on=False))
            elif past:
                continue
            elif isinstance(effect, ToolStateChanged):
                out.messages.append(self._state_message(effect))
                self.published_w[effect.tool] = (effect.w, effect.since)
            elif isinstance(effect, ReleaseTool):
                cfg = self.data.tools.get(effect.tool)
                if cfg is not None:
                    body = json.dumps({"action": "release", "reason": effect.reason}).encode()
                    out.messages.extend(Message(cmd_topic(d), body) for d in cfg.devices)
        return out

    def _state_message(self, change: ToolStateChanged) -> Message:
        payload = json.dumps(change.payload(), separators=(",", ":"), ensure_ascii=False)
        return Message(tool_state_topic(change.tool), payload.encode(), retain=True)

    def _watts(self, state: ToolSessionState, now: datetime) -> Outcome:
        """Re-publish a tool's state when its power moved by 10 % and 5 s have passed."""
        snap = state.snapshot(now)
        last_w, last_at = self.published_w.get(state.tool, (None, None))
        if snap.w is None or last_at is None:
            return Outcome()
        moved = last_w is None or abs(snap.w - last_w) > max(0.1 * abs(last_w), 1.0)
        if moved and now - last_at >= timedelta(seconds=5):
            self.published_w[state.tool] = (snap.w, now)
            return Outcome(messages=[self._state_message(snap)])
        return Outcome()

    def _switch_plugs(self, cfg: ToolConfig, *, on: bool) -> list[Message]:
        return [
            Message(c.topic, c.payload, qos=c.qos)
            for plug in cfg.plugs
            for c in switch_commands(plug, on=on)
        ]

    @staticmethod
    def _event_time(ev: DeviceEvent, now: datetime) -> datetime:
        """Device time for records when the device has a sane clock, else receive time."""
        if ev.device_ts is not None and (ev.replay or abs(ev.device_ts - now) <= CLOCK_SKEW):
            return ev.device_ts
        return now


def _auto_end(effort: OpenEffort, at: datetime, data: ShopData) -> datetime:
    """A forgotten badge-out: credit at most the task's posted hours, not all night."""
    posted = data.tasks[effort.task].hours if effort.task in data.tasks else 0
    return min(max(at, effort.start), effort.start + timedelta(hours=float(posted)))


def _with_training(member: MemberAccess, training: str) -> MemberAccess:
    return replace(member, trainings={**member.trainings, training: None})
