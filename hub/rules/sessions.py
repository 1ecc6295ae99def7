"""Usage sessions of one tool from its events (docs/device-protocol.md), as a pure state machine.

The hub keeps one :class:`ToolSessionState` per tool, calls :meth:`~ToolSessionState.start`
after an access grant, feeds it the tool's events and calls :meth:`~ToolSessionState.tick`
now and then.  Every call takes ``now`` (the hub's receive time) and returns effects:
:class:`SessionStarted`, :class:`SessionEnded`, :class:`ToolStateChanged` and
:class:`ReleaseTool` (send ``release`` to the tool's devices).

Policies:

* ``card_present``: the session lasts while the card is on the reader (``badge_removed``).
* ``tap``: tap on; the same member tapping again (:meth:`~ToolSessionState.tap_out`) or a
  ``release`` ends it.
* ``timeout``: ends after ``idle_timeout`` with no power above ``idle_w`` (or the running
  input off).  ``idle_timeout``, when set, applies to the other policies too: it is how a
  forgotten tap-off ends.

A tool no one badges at (``unattended``: a 3D printer or a compressor on a smart plug
with no reader) records its **runs**: a session with no member opens when its power
reaches ``busy_w`` and ends when it falls below ``off_w`` (``power_off``), or by the
rules below.  Nobody is charged for a run; it shows the tool's use and energy.

Every policy also ends on ``max_duration`` (always set), the device going offline, a lock,
a hub restart, a ``done``/``stop`` button at the tool (``tool_done``) and, for tools with
``end_on_stop``, the running input going off (``tool_stopped``).  Starting a session for a
different member while one is open ends the first with ``handover`` (a two-card induction).

Time.  A session's start and end are on the *record clock*: an event's ``device_ts`` when
it has one, else the hub's receive time.  The rules that keep it sane:

* a live event whose ``device_ts`` is more than ``max_clock_skew`` away from ``now`` is
  treated as if it had none (a device that booted into 1970, or a clock ahead of the hub);
  replayed events keep their ``device_ts``, however old;
* an event without a usable ``device_ts`` is placed at the previous event's record time
  plus the hub time elapsed since it arrived, so one session never mixes two clocks;
* an event older than what was already accounted (out of order, or a clock that jumped
  back) is *late*: a late power sample is ignored (counters are cumulative, so no energy
  is lost), a late start or end is moved forward to the last accounted time;
* timers (``idle_timeout``, ``max_duration``) run on the hub clock, so a wrong device
  clock can neither keep a session open nor close it early.

So durations are never negative, ``busy_s + idle_s <= end - start``, and every session
closes at the latest ``max_duration`` after it started, by hub time.  A ``timeout`` close
ends the session when activity stopped, with the busy/idle/energy counted up to then: a
member is not charged for the time the tool stood idle waiting for the timeout.

>>> from datetime import UTC, datetime, timedelta
>>> rules = ToolRules(policy="tap", off_w=5, busy_w=200)
>>> tool = ToolSessionState("laser-1", rules)
>>> t0 = datetime(2026, 11, 26, 10, tzinfo=UTC)
>>> [type(e).__name__ for e in tool.start("ada", t0, name="Ada L.")]
['SessionStarted', 'ToolStateChanged']
>>> _ = tool.power(900.0, t0 + timedelta(minutes=1))
>>> ended = tool.tap_out("ada", t0 + timedelta(minutes=31))[0]
>>> ended.close_reason.value, ended.busy_s, ended.wh
('badge_out', 1800.0, 450.0)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from hub.contract.messages import DeviceEvent
from hub.rules.power import PowerMeter, PowerThresholds, Segment


class Policy(StrEnum):
    """How a tool's session ends (the shop file's ``policy:``, ``tools.policy``)."""

    CARD_PRESENT = "card_present"  # while the card is on the reader
    TAP = "tap"  # tap on, tap off
    TIMEOUT = "timeout"  # after idle_timeout with no activity


POLICIES = tuple(Policy)


class CloseReason(StrEnum):
    """Why a session ended (``usage_sessions.close_reason``, the exports and the API)."""

    BADGE_OUT = "badge_out"  # tap policy: the member tapped again
    CARD_REMOVED = "card_removed"  # card_present policy: the card left the reader
    RELEASE = "release"  # a `release` from the hub (web, coordinator)
    TIMEOUT = "timeout"  # idle_timeout with no activity
    DEVICE_OFFLINE = "device_offline"  # the tool's device went offline
    HUB_RESTART = "hub_restart"  # the hub restarted with the session open
    MAX_DURATION = "max_duration"  # open longer than the tool allows
    TOOL_DONE = "tool_done"  # a `done` or `stop` button at the tool
    TOOL_STOPPED = "tool_stopped"  # the running input went off (tools with end_on_stop)
    LOCKED = "locked"  # a coordinator locked the tool
    HANDOVER = "handover"  # a session for another member started (two-card induction)
    POWER_OFF = "power_off"  # an unattended run: the tool's power fell below off_w


CLOSE_REASONS = tuple(CloseReason)
# close reasons the device does not know about: the hub must switch the tool off
RELEASING = frozenset({CloseReason.RELEASE, CloseReason.TIMEOUT, CloseReason.MAX_DURATION})
DONE_BUTTONS = frozenset({"done", "stop"})
# How far a device's clock may be from the hub's and still be taken as it is.
CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class ToolRules:
    """A tool's session policy and power thresholds (the shop file's ``power:``).

    ``idle_w`` is the activity threshold of the idle timeout; None means ``off_w``.
    ``unattended``: no one badges at the tool; its runs are sessions with no member.
    """

    policy: Policy = Policy.TAP
    off_w: float = 5.0
    idle_w: float | None = None
    busy_w: float = 50.0
    idle_timeout: timedelta | None = None
    max_duration: timedelta = timedelta(hours=12)
    hysteresis: float = 0.0
    max_clock_skew: timedelta = CLOCK_SKEW
    end_on_stop: bool = False
    unattended: bool = False

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {self.policy!r}")
        object.__setattr__(self, "policy", Policy(self.policy))
        if self.policy == Policy.TIMEOUT and self.idle_timeout is None:
            raise ValueError("policy 'timeout' needs an idle_timeout")
        if self.idle_timeout is not None and self.idle_timeout <= timedelta(0):
            raise ValueError(f"idle_timeout must be positive, got {self.idle_timeout}")
        if self.max_duration <= timedelta(0):
            raise ValueError(f"max_duration must be positive, got {self.max_duration}")
        if self.max_clock_skew < timedelta(0):
            raise ValueError(f"max_clock_skew must not be negative, got {self.max_clock_skew}")
        if self.idle_w is not None and self.idle_w < 0:
            raise ValueError(f"idle_w must not be negative, got {self.idle_w}")
        self.thresholds  # validates off_w, busy_w, hysteresis  # noqa: B018

    @property
    def thresholds(self) -> PowerThresholds:
        return PowerThresholds(self.off_w, self.busy_w, self.hysteresis)

    @property
    def activity_w(self) -> float:
        return self.off_w if self.idle_w is None else self.idle_w


@dataclass(frozen=True, slots=True)
class SessionStarted:
    tool: str
    member: str | None  # None: an unattended run
    start: datetime


@dataclass(frozen=True, slots=True)
class SessionEnded:
    """A closed usage session, as the hub records it (``member`` None: a run)."""

    tool: str
    member: str | None
    start: datetime
    end: datetime
    close_reason: CloseReason
    busy_s: float
    idle_s: float
    wh: float

    @property
    def duration_s(self) -> float:
        return (self.end - self.start).total_seconds()


@dataclass(frozen=True, slots=True)
class ToolStateChanged:
    """The tool's live state changed; ``payload()`` is ``peershop/tool/{tool}/state``."""

    tool: str
    state: str
    member: str | None
    name: str | None
    since: datetime
    w: float | None
    # the energy the tool's meter counted since the hub started (Wh; None: no meter
    # reading yet); it only grows, and starts again from 0 when the hub restarts, as a
    # device's counter does at a reset (Home Assistant's ``total_increasing``)
    wh_total: float | None = None

    def payload(self) -> dict[str, Any]:
        since = self.since.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        body = {"state": self.state, "member": self.name, "since": since, "w": self.w}
        if self.wh_total is not None:
            body["wh_total"] = self.wh_total
        return body


@dataclass(frozen=True, slots=True)
class ReleaseTool:
    """The hub closed the session on its own: send ``release`` to the tool's devices."""

    tool: str
    reason: CloseReason


Effect = SessionStarted | SessionEnded | ToolStateChanged | ReleaseTool


@dataclass(slots=True)
class _Snapshot:
    at: datetime  # record time
    rx: datetime  # hub time
    busy_s: float
    idle_s: float
    wh: float


@dataclass(slots=True)
class OpenSession:
    """An open session; plain data so the hub can persist it and resume after a restart.

    ``member`` None: an unattended run of the tool."""

    member: str | None
    start: datetime
    started_rx: datetime
    name: str | None = None
    busy_s: float = 0.0
    idle_s: float = 0.0
    wh: float = 0.0
    last_seen: datetime | None = None
    # set while the tool shows no activity: the session as it was when activity stopped
    inactive: _Snapshot | None = field(default=None, repr=False)
    # opened by a replayed badge: its device decided it offline and replays its end
    replayed: bool = False

    def __post_init__(self) -> None:
        if self.last_seen is None:
            self.last_seen = self.start


class ToolSessionState:
    """One tool's session, power level and live state.  See the module docstring."""

    def __init__(
        self,
        tool: str,
        rules: ToolRules,
        *,
        session: OpenSession | None = None,
        locked: bool = False,
        online: bool = True,
    ):
        self.tool = tool
        self.rules = rules
        self.session = session
        self.locked = locked
        self.online = online
        self.meter = PowerMeter(rules.thresholds)
        self.running = False
        self.late_events = 0
        self._has_power = False
        self._metered = False  # a power reading ever arrived: the tool has a meter
        self.energy_wh = 0.0  # counted by the meter since this object was made
        self._cursor_rx: datetime | None = None
        self._shown: tuple[str, str | None] | None = None
        self._since: datetime | None = None

    # --- the live state ------------------------------------------------------------

    @property
    def state(self) -> str:
        if self.locked:
            return "locked"
        if not self.online:
            return "offline"
        level = self._level()
        if level in ("busy", "idle"):
            return level
        return "in_use" if self.session else "free"

    def snapshot(self, now: datetime) -> ToolStateChanged:
        """The current state, e.g. to publish ``w`` between state changes."""
        member = self.session.member if self.session else None
        name = self.session.name if self.session else None
        return ToolStateChanged(
            self.tool, self.state, member, name, self._since or now, self._watts(), self._wh()
        )

    # --- calls from the hub --------------------------------------------------------

    def start(
        self,
        member: str,
        now: datetime,
        device_ts: datetime | None = None,
        *,
        replay: bool = False,
        name: str | None = None,
    ) -> list[Effect]:
        """Open a session for ``member`` after a grant; the badge event's times go in.

        The same member again keeps the session and counts as activity.  Another member
        ends the open session with ``handover``.  A locked tool starts nothing.
        """
        effects = self.tick(now)
        if self.locked:
            return effects
        t = self._accept(now, device_ts, replay)
        self.online = True
        if self.session is not None and self.session.member == member:
            # the member is here again: the idle timer starts over
            self._activity(t, now, active=self._active(), restart=True)
            return effects + self._state_effects(t)
        if self.session is not None:
            effects += self._close(CloseReason.HANDOVER, t, now)
        self.session = OpenSession(member, t, now, name=name, replayed=replay)
        self._activity(t, now, active=self._active())
        effects.append(SessionStarted(self.tool, member, t))
        return effects + self._state_effects(t)

    def resume(
        self,
        member: str | None,
        start: datetime,
        *,
        name: str | None = None,
        rx: datetime | None = None,
        replayed: bool = False,
    ) -> None:
        """Put back a session found open after a restart, as :meth:`start` opened it at
        ``start`` (its record time) on a badge the hub received at ``rx`` (default
        ``start``), replayed or not: the power state before it stays out of it."""
        rx = start if rx is None else rx
        self._account(self.meter.advance(start))  # no session yet: nothing is counted
        self._cursor_rx = rx
        self.session = OpenSession(member, start, rx, name=name, replayed=replayed)
        self._activity(start, rx, active=self._active())

    def carry_on(self, past: ToolSessionState, now: datetime) -> list[Effect]:
        """Take over ``past``'s open session as this tool's live one: a session its
        device opened offline and replayed, which is still going on now.

        The power state the replay left comes along, unless this state machine has
        heard a later reading of the tool.  Nothing is recorded: the session goes on.
        """
        assert past.session is not None and self.session is None
        self.session, past.session = past.session, None
        if past.meter.at is not None and (self.meter.at is None or past.meter.at >= self.meter.at):
            self.meter, past.meter = past.meter, PowerMeter(self.rules.thresholds)
            self.running, self._has_power = past.running, past._has_power
            self._cursor_rx = past._cursor_rx
        return self.tick(now) + self._state_effects(self._record_time(now))

    def tap_out(
        self, member: str, now: datetime, device_ts: datetime | None = None, *, replay=False
    ) -> list[Effect]:
        """The member tapped again at a ``tap`` tool: ends their session (``badge_out``)."""
        effects = self.tick(now)
        if self.rules.policy != Policy.TAP or not self.session or self.session.member != member:
            return effects
        t = self._accept(now, device_ts, replay)
        return effects + self._close(CloseReason.BADGE_OUT, t, now) + self._state_effects(t)

    def badge_removed(
        self,
        member: str | None,
        now: datetime,
        device_ts: datetime | None = None,
        *,
        replay: bool = False,
    ) -> list[Effect]:
        """A card left a ``card_present`` reader; None when the uid maps to no member."""
        effects = self.tick(now)
        if self.rules.policy != Policy.CARD_PRESENT or self.session is None:
            return effects
        if member is not None and member != self.session.member:
            return effects
        t = self._accept(now, device_ts, replay)
        return effects + self._close(CloseReason.CARD_REMOVED, t, now) + self._state_effects(t)

    def power(
        self,
        w: float,
        now: datetime,
        device_ts: datetime | None = None,
        *,
        wh_total: float | None = None,
        replay: bool = False,
    ) -> list[Effect]:
        """A power sample (a ``power`` event, or a Tasmota/Shelly reading)."""
        effects = self.tick(now)
        t, late = self._time(now, device_ts, replay)
        if late:
            self.late_events += 1
            return effects
        self._has_power = self._metered = True
        self._account(self.meter.sample(t, w, wh_total).segment)
        self._cursor_rx = now
        self.online = True
        effects += self._run(t, now)
        if self.session is not None:
            self._activity(t, now, active=self._active())
        return effects + self._state_effects(t)

    def _run(self, t: datetime, now: datetime) -> list[Effect]:
        """An unattended tool's run starts at busy and ends below ``off_w`` (also when
        the tool got a reader meanwhile: the run it had goes on to its end)."""
        level = self.meter.level
        if self.session is not None and self.session.member is None and level == "off":
            return self._close(CloseReason.POWER_OFF, t, now)
        if self.session is None and level == "busy" and self.rules.unattended and not self.locked:
            self.session = OpenSession(None, t, now)
            return [SessionStarted(self.tool, None, t)]
        return []

    def running_changed(
        self, on: bool, now: datetime, device_ts: datetime | None = None, *, replay=False
    ) -> list[Effect]:
        """The tool's digital running input changed."""
        effects = self.tick(now)
        t, late = self._time(now, device_ts, replay)
        if late:
            self.late_events += 1
            return effects
        self._account(self.meter.advance(t))
        self._cursor_rx = now
        was_running, self.running = self.running, on
        if self.session is not None:
            if self.rules.end_on_stop and was_running and not on:
                return (
                    effects + self._close(CloseReason.TOOL_STOPPED, t, now) + self._state_effects(t)
                )
            self._activity(t, now, active=self._active())
        return effects + self._state_effects(t)

    def button(
        self, name: str, now: datetime, device_ts: datetime | None = None, *, replay=False
    ) -> list[Effect]:
        """A button at the tool: ``done`` or ``stop`` ends the session (``tool_done``)."""
        effects = self.tick(now)
        if name not in DONE_BUTTONS or self.session is None:
            return effects
        t = self._accept(now, device_ts, replay)
        return effects + self._close(CloseReason.TOOL_DONE, t, now) + self._state_effects(t)

    def release(self, now: datetime) -> list[Effect]:
        """End the session now from the hub side (web, coordinator); sends ``release``."""
        effects = self.tick(now)
        if self.session is None:
            return effects
        t = self._accept(now, None, False)
        return effects + self._close(CloseReason.RELEASE, t, now) + self._state_effects(t)

    def device_offline(self, now: datetime) -> list[Effect]:
        """The tool's device went offline (last will, or Tasmota/Shelly LWT)."""
        effects = self.tick(now)
        t = self._accept(now, None, False)
        if self.session is not None:
            effects += self._close(CloseReason.DEVICE_OFFLINE, t, now)
        self.online = False
        # what the tool drew before is no longer known: not busy until it says so again
        self.meter.forget_reading()
        self.running = False
        return effects + self._state_effects(t)

    def device_online(self, now: datetime) -> list[Effect]:
        """The tool's device is back (birth message).

        A birth says nothing about the tool's use, so it does not move the accounting
        clock: the events the device replays next are from before it, and must count at
        their own times rather than be squeezed to the moment it reconnected.
        """
        effects = self.tick(now)
        self.online = True
        return effects + self._state_effects(self._record_time(now))

    def lock(self, now: datetime) -> list[Effect]:
        """A coordinator locked the tool (maintenance): ends any session (``locked``)."""
        effects = self.tick(now)
        t = self._accept(now, None, False)
        if self.session is not None:
            effects += self._close(CloseReason.LOCKED, t, now)
        self.locked = True
        return effects + self._state_effects(t)

    def unlock(self, now: datetime) -> list[Effect]:
        effects = self.tick(now)
        t = self._accept(now, None, False)
        self.locked = False
        return effects + self._state_effects(t)

    def hub_restart(self, now: datetime) -> list[Effect]:
        """Close a session that was open when the hub stopped, at its last known event.

        The device is not released: a job that is running keeps running.  A session a
        replayed badge opened stays open: its device decided it while the hub was away,
        and the rest of its replay (or its live events) carries on and ends it; its
        timers still close it if nothing does.
        """
        if self.session is None or self.session.replayed:
            return []
        assert self.session.last_seen is not None
        end = self.session.last_seen
        return self._close(CloseReason.HUB_RESTART, end, now, advance=False) + self._state_effects(
            end
        )

    def tick(self, now: datetime) -> list[Effect]:
        """Close a session whose idle timeout or maximum duration has passed (hub time)."""
        s = self.session
        if s is None:
            return []
        due_max = s.started_rx + self.rules.max_duration
        due_idle = None
        if self.rules.idle_timeout is not None and s.inactive is not None:
            due_idle = s.inactive.rx + self.rules.idle_timeout
        if due_idle is not None and due_idle <= now and due_idle <= due_max:
            snap = s.inactive
            assert snap is not None
            s.busy_s, s.idle_s, s.wh = snap.busy_s, snap.idle_s, snap.wh
            return self._close(
                CloseReason.TIMEOUT, snap.at, now, advance=False
            ) + self._state_effects(self._record_time(now))
        if due_max <= now:
            cursor = self.meter.at or s.start
            end = max(cursor, min(s.start + self.rules.max_duration, self._record_time(now)))
            return self._close(CloseReason.MAX_DURATION, end, now) + self._state_effects(end)
        return []

    def feed(self, event: DeviceEvent, now: datetime, member: str | None = None) -> list[Effect]:
        """Dispatch a device event of the tool; ``member`` is the badge uid's member, if any.

        ``badge`` events are not handled here: the hub decides access first and then calls
        :meth:`start` or :meth:`tap_out`.
        """
        ts, replay, data = event.device_ts, event.replay, event.data
        if event.type == "power":
            return self.power(data["w"], now, ts, wh_total=data.get("wh_total"), replay=replay)
        if event.type == "running":
            return self.running_changed(data["on"], now, ts, replay=replay)
        if event.type == "badge_removed":
            return self.badge_removed(member, now, ts, replay=replay)
        if event.type == "button":
            return self.button(data["name"], now, ts, replay=replay)
        return self.tick(now)

    # --- inside --------------------------------------------------------------------

    def _record_time(self, now: datetime) -> datetime:
        if self.meter.at is None or self._cursor_rx is None:
            return now
        return self.meter.at + max(now - self._cursor_rx, timedelta(0))

    def _time(
        self, now: datetime, device_ts: datetime | None, replay: bool
    ) -> tuple[datetime, bool]:
        if device_ts is not None and (replay or abs(device_ts - now) <= self.rules.max_clock_skew):
            t = device_ts
        else:
            t = self._record_time(now)
        late = self.meter.at is not None and t < self.meter.at
        return t, late

    def _accept(self, now: datetime, device_ts: datetime | None, replay: bool) -> datetime:
        t, late = self._time(now, device_ts, replay)
        if late:
            self.late_events += 1
            assert self.meter.at is not None
            t = self.meter.at
        self._account(self.meter.advance(t))
        self._cursor_rx = now
        return t

    def _account(self, seg: Segment | None) -> None:
        if seg is not None:
            self.energy_wh += max(seg.wh, 0.0)  # with or without a session
        s = self.session
        if s is None or seg is None:
            return
        level = seg.level if self._has_power else ("busy" if self.running else "off")
        if level == "busy":
            s.busy_s += seg.seconds
        elif level == "idle":
            s.idle_s += seg.seconds
        s.wh += seg.wh
        s.last_seen = max(s.last_seen or seg.end, seg.end)

    def _active(self) -> bool:
        return self.running or (self._has_power and self.meter.w > self.rules.activity_w)

    def _activity(self, t: datetime, now: datetime, *, active: bool, restart: bool = False) -> None:
        s = self.session
        assert s is not None
        s.last_seen = max(s.last_seen or t, t)
        if active:
            s.inactive = None
        elif s.inactive is None or restart:
            s.inactive = _Snapshot(t, now, s.busy_s, s.idle_s, s.wh)

    def _close(
        self, reason: CloseReason, end: datetime, now: datetime, *, advance: bool = True
    ) -> list[Effect]:
        s = self.session
        assert s is not None
        if advance:
            self._account(self.meter.advance(end))
            self._cursor_rx = now
        end = max(end, s.start)
        self.session = None
        ended = SessionEnded(
            self.tool, s.member, s.start, end, reason, s.busy_s, s.idle_s, max(s.wh, 0.0)
        )
        effects: list[Effect] = [ended]
        if reason in RELEASING:
            effects.append(ReleaseTool(self.tool, reason))
        return effects

    def _level(self) -> str:
        if self._has_power:
            return self.meter.level
        return "busy" if self.running else "off"

    def _watts(self) -> float | None:
        return self.meter.w if self._has_power else None

    def _wh(self) -> float | None:
        return round(self.energy_wh, 3) if self._metered else None

    def _state_effects(self, at: datetime) -> list[Effect]:
        member = self.session.member if self.session else None
        shown = (self.state, member)
        if shown == self._shown:
            return []
        self._shown = shown
        self._since = at
        name = self.session.name if self.session else None
        return [ToolStateChanged(self.tool, shown[0], member, name, at, self._watts(), self._wh())]


def tool_rules(policy: str, power: dict[str, Any], options: dict[str, Any]) -> ToolRules:
    """:class:`ToolRules` from a tool row's ``policy``, ``power`` and ``options`` columns."""

    defaults = ToolRules()

    def seconds(value: Any) -> timedelta | None:
        return None if value is None else timedelta(seconds=value)

    return ToolRules(
        policy=policy,
        off_w=power.get("off_w", defaults.off_w),
        idle_w=power.get("idle_w"),
        busy_w=power.get("busy_w", defaults.busy_w),
        hysteresis=power.get("hysteresis_w", defaults.hysteresis),
        idle_timeout=seconds(power.get("idle_timeout")),
        max_duration=seconds(options.get("max_duration")) or defaults.max_duration,
        end_on_stop=bool(options.get("end_on_stop", False)),
    )
