"""What the shop engine (hub/rules/engine.py) knows about the shop and what it returns.

:class:`ShopData` is loaded from the database by hub/store/shop_store.py; the ``*Rec``
records, :class:`Message` and :class:`Outcome` are the engine's answers, which the store
writes and the service publishes.  Plain frozen data: no clock, no storage."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from enum import StrEnum
from zoneinfo import ZoneInfo

from hub.peerconomy import economy as pc
from hub.plugs.base import PlugBinding
from hub.plugs.base import plug_device_id as plug_device_id  # where the rules had it
from hub.rules.access import (
    MemberAccess,
    WeeklyHours,
)
from hub.rules.presence import PresenceReason, PresenceState, SignedIn, SignedOut
from hub.rules.sessions import (
    CloseReason,
    ToolRules,
)

HOURS_PLACES = Decimal("0.000001")


class DecisionAction(StrEnum):
    """What the hub did with a badge (``badge_decisions.action``)."""

    GRANT = "grant"  # at a tool: a session starts
    DENY = "deny"  # anywhere: the reason says why
    RELEASE = "release"  # at a tap tool its holder tapped again: the session ends
    SIGN_IN = "sign_in"  # at the door
    SIGN_OUT = "sign_out"  # at the door
    EFFORT_START = "effort_start"  # at a task station
    EFFORT_END = "effort_end"  # at a task station
    NONE = "none"  # nothing changed (a repeated tap, a reader bound to nothing)


class EffortSource(StrEnum):
    """Where a member's effort was recorded (``effort_records.source``)."""

    STATION = "station"  # a badge at a task station, by the engine
    BOARD = "board"  # a done on the task board: counted by its claim
    COORDINATOR = "coordinator"  # entered by a coordinator (a correction)


class StationKind(StrEnum):
    """A reader not at a tool (the shop file's ``stations:``, ``stations.kind``)."""

    SIGN_IN = "sign_in"  # the door: a badge signs the member in or out
    TASK_STATION = "task_station"  # a badge starts or ends effort on a task


# --- what the engine knows about the shop (loaded from the database) ----------------


@dataclass(frozen=True)
class ToolConfig:
    id: str
    name: str
    rules: ToolRules
    training: str | None = None
    locked: bool = False
    hours: WeeklyHours | None = None
    scarce: WeeklyHours | None = None  # slots that need a winning reservation (enforced)
    max_s: int | None = None
    project: str | None = None
    devices: tuple[str, ...] = ()  # device ids
    plugs: tuple[PlugBinding, ...] = ()  # plugs and meters (hub.plugs), each channel apart
    # a plug, or a device whose birth lists ``power``: the tool's energy is measured
    metered: bool = False

    def __post_init__(self) -> None:
        # a plain (kind, ref) pair is the whole plug, channel 0
        object.__setattr__(self, "plugs", tuple(PlugBinding(*p) for p in self.plugs))


@dataclass(frozen=True)
class WeightClock:
    """Rule (a)'s ``clock`` mode for one task of the open period: its project's gain and
    bounds, whether the weight is pinned, and when slots were taken other than at a task
    station (board claims, a coordinator's entries), oldest first."""

    gain: Decimal = pc.K
    lo: Decimal = pc.LO
    hi: Decimal = pc.HI
    pinned: bool = False
    taken: tuple[datetime, ...] = ()


@dataclass(frozen=True)
class TaskInfo:
    id: str
    weight: Decimal  # posted at the period's start
    hours: Decimal
    project: str | None = None
    slots: int = 1
    clock: WeightClock | None = None  # None: the weight moves at period close only


@dataclass(frozen=True)
class ShopData:
    """A snapshot of members, badges, tools and stations, as the rules need them."""

    tz: ZoneInfo = UTC  # type: ignore[assignment]
    members: dict[str, MemberAccess] = field(default_factory=dict)
    badges: dict[str, str] = field(default_factory=dict)  # uid -> handle
    tools: dict[str, ToolConfig] = field(default_factory=dict)
    stations: dict[str, str] = field(default_factory=dict)  # device -> a StationKind value
    tasks: dict[str, TaskInfo] = field(default_factory=dict)
    auto_signout: time = time(4, 0)
    period: tuple[datetime, datetime] | None = None  # the open period [start, end)
    # (effort key, task, start) of task-station efforts stored in the open period, for an
    # engine that did not make them itself (after a restart)
    station_takes: tuple[tuple[str, str, datetime], ...] = ()
    # the site whose tools and stations these are (one hub's); None: the whole shop
    site: str | None = None

    def device_tool(self) -> dict[str, str]:
        """Every device id feeding a tool (plugs as ``KIND/TOPIC``: ``tasmota/saw``)."""
        mapping = {}
        for tool in self.tools.values():
            for device in tool.devices:
                mapping[device] = tool.id
            for plug in tool.plugs:
                mapping[plug.device_id] = tool.id
        return mapping

    def allowed_uids(self, tool_id: str, now: datetime) -> list[str]:
        """Badges a tool's device may accept alone while the hub is unreachable."""
        tool = self.tools[tool_id]
        if tool.locked:
            return []
        return sorted(
            uid
            for uid, handle in self.badges.items()
            if (m := self.members.get(handle)) is not None
            and not m.suspended
            and m.trained(tool.training, now)
        )


@dataclass(frozen=True, slots=True)
class ClockReading:
    """A device's clock at a birth (docs/device-protocol.md ``ts``): it read ``device_ts``
    when the hub received the birth at ``at``.  ``offset`` is how far that boot's clock
    is ahead of the hub's (negative: behind)."""

    device_id: str
    boot: int
    device_ts: datetime
    at: datetime

    @property
    def offset(self) -> timedelta:
        return self.device_ts - self.at


# --- what the engine returns ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DecisionRec:
    device_id: str
    boot: int
    seq: int
    at: datetime
    uid: str
    member: str | None
    tool_id: str | None
    station: StationKind | None
    action: DecisionAction
    reason: str | None
    replay: bool
    training: str | None = None


@dataclass(frozen=True, slots=True)
class SessionOpenRec:
    key: str
    tool_id: str
    member: str | None  # None: an unattended run (a tool no one badges at)
    start: datetime


@dataclass(frozen=True, slots=True)
class SessionCloseRec:
    key: str
    tool_id: str
    member: str | None
    start: datetime
    end: datetime
    busy_s: float
    idle_s: float
    wh: float
    close_reason: CloseReason


@dataclass(frozen=True, slots=True)
class PresenceRec:
    member: str
    at: datetime
    state: PresenceState
    reason: PresenceReason
    site: str | None = None  # the site of the sign-in station (its hub's)

    @classmethod
    def of(cls, change: SignedIn | SignedOut, site: str | None) -> PresenceRec:
        """The record of a sign-in (always by badge) or a sign-out (by badge or auto)."""
        if isinstance(change, SignedIn):
            return cls(change.member, change.at, PresenceState.IN, PresenceReason.BADGE, site)
        return cls(change.member, change.at, PresenceState.OUT, change.reason, site)


@dataclass(frozen=True, slots=True)
class EffortRec:
    """An effort at a task station; written again (same key) when it ends."""

    key: str
    member: str
    task_id: str | None
    project_id: str | None
    start: datetime
    end: datetime | None
    hours: Decimal | None
    weight: Decimal | None
    device_id: str
    source: EffortSource = EffortSource.STATION


@dataclass(frozen=True, slots=True)
class UsageRec:
    device_id: str
    boot: int
    seq: int
    at: datetime
    tool_id: str | None
    member: str | None
    item: str
    qty: float
    unit: str


@dataclass(frozen=True, slots=True)
class TrainingRec:
    trainee: str
    trainer: str
    training: str
    at: datetime


Record = (
    DecisionRec
    | SessionOpenRec
    | SessionCloseRec
    | PresenceRec
    | EffortRec
    | UsageRec
    | TrainingRec
)


@dataclass(frozen=True, slots=True)
class Message:
    """Something to publish: replies go out at once, never after a disk write."""

    topic: str
    payload: bytes
    retain: bool = False
    qos: int = 1


@dataclass
class Outcome:
    records: list[Record] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    reply: Message | None = None  # the answer to a badge, to send before anything else

    def extend(self, other: Outcome) -> None:
        self.records.extend(other.records)
        self.messages.extend(other.messages)
        if other.reply is not None:
            self.reply = other.reply


@dataclass
class OpenEffort:
    key: str
    member: str
    start: datetime
    device_id: str
    task: str | None = None
    weight: Decimal | None = None
    project: str | None = None


def open_rec(effort: OpenEffort) -> EffortRec:
    return EffortRec(
        effort.key,
        effort.member,
        effort.task,
        effort.project,
        effort.start,
        None,
        None,
        effort.weight,
        effort.device_id,
    )


def finished_rec(effort: OpenEffort, end: datetime) -> EffortRec:
    seconds = Decimal(str(max((end - effort.start).total_seconds(), 0.0)))
    hours = (seconds / Decimal(3600)).quantize(HOURS_PLACES, rounding=ROUND_HALF_EVEN)
    return EffortRec(
        effort.key,
        effort.member,
        effort.task,
        effort.project,
        effort.start,
        end,
        hours,
        effort.weight,
        effort.device_id,
    )
