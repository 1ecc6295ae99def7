"""Who may switch a tool on: the access decision for a badge at a tool's reader.

Pure: plain data about the member, the tool and the reservations, plus ``now``, go in; an
:class:`AccessOutcome` comes out, whose ``reply`` the hub sends on
``peershop/dev/{id}/cmd`` (:func:`reply_payload`).

Deny reasons are those of docs/device-protocol.md, exactly one per deny, the first that applies in
this order (:data:`DENY_ORDER`):

1. ``unknown_badge``: the uid belongs to no member;
2. ``suspended``: the member is suspended;
3. ``not_trained``: no training for the tool, or it has expired;
4. ``locked_out``: the tool is locked (maintenance);
5. ``outside_hours``: the shop is closed now (keyholders are exempt);
6. ``tool_in_use``: someone else has an open session on the tool;
7. ``no_reservation``: now is in one of the tool's scarce slots and the member holds no
   reservation covering now.

Facts about the person come before facts about the tool, and among those the longest
lasting first, so the reader says what the member can act on.

A grant's ``max_s`` is the tool's maximum session length, cut to the end of the member's
reservation when the grant rests on one.  Closing time does not cut a running job.  Every
grant the hub sends has one: devices obey no grant without it (docs/device-protocol.md).

The same member badging again at a ``tap`` tool they hold gets :class:`TapOut` (reply
``release``; the hub calls ``ToolSessionState.tap_out``) whatever else has changed, so a
member can always end their own session.

Two-card induction: a member who may train the tool's training (``trains``) and is
granted opens a :class:`PendingInduction` for that tool.  A member without a valid
training for it who badges at the *same* tool at most :data:`INDUCTION_WINDOW` (30 s,
inclusive, hub time) later is inducted: the outcome carries a :class:`TrainingRecorded`,
and the reply is the trainee's own decision with the training counted, where the
trainer's session does not make the tool "in use" and the trainer's reservation counts
(``handover_from`` tells the hub to end the trainer's session with ``handover`` and start
the trainee's).  A suspended or unknown trainee is not inducted and the window stays open
for the right card; a member who is already trained gets an ordinary decision; the trainer
badging again closes the window.

Replayed badge events (``replay: true``, decided by the device from its allow-list while
the hub was away) get :class:`NoReply`: the decision the hub would have made is inside, for
the record, but no command is sent and no induction happens.

>>> from datetime import UTC, datetime
>>> now = datetime(2026, 11, 26, 18, tzinfo=UTC)
>>> ada = MemberAccess("ada", "Ada L.", trainings={"laser": None})
>>> laser = ToolAccess("laser-1", training="laser", max_s=14400)
>>> out = decide(laser, ada, now)
>>> reply_payload(42, out.reply)
b'{"re":42,"action":"grant","member":"Ada L.","max_s":14400}'
>>> reply_payload(43, decide(laser, MemberAccess("bob", "Bob"), now).reply)
b'{"re":43,"action":"deny","reason":"not_trained"}'
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from hub.contract.messages import DENY_REASONS, DenyReason
from hub.rules.sessions import Policy


class Role(StrEnum):
    """What a member may do beyond using tools (the shop file's ``roles:``, an API token's)."""

    MEMBER = "member"
    TRAINER = "trainer"  # may train others: two-card induction
    COORDINATOR = "coordinator"  # may train, and is a keyholder (not bound by opening hours)


TRAINERS = frozenset({Role.TRAINER, Role.COORDINATOR})
"""The roles that may grant trainings."""

DENY_ORDER = (
    DenyReason.UNKNOWN_BADGE,
    DenyReason.SUSPENDED,
    DenyReason.NOT_TRAINED,
    DenyReason.LOCKED_OUT,
    DenyReason.OUTSIDE_HOURS,
    DenyReason.TOOL_IN_USE,
    DenyReason.NO_RESERVATION,
)
assert sorted(DENY_ORDER) == sorted(DENY_REASONS)

INDUCTION_WINDOW = timedelta(seconds=30)

# A station's grant (signed in at the door, an effort started at a task station) carries
# this max_s like a tool's: a device obeys no grant without one.  A door strike on the
# reader's relay opens this long; the LED shows the grant as long.
STATION_GRANT_S = 5

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WINDOW = re.compile(
    r"\s*(?P<days>[A-Za-z]{3}(?:\s*-\s*[A-Za-z]{3})?(?:\s*,\s*[A-Za-z]{3}(?:\s*-\s*[A-Za-z]{3})?)*)"
    r"\s+(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})\s*"
)


def _minutes(text: str) -> int:
    hours, minutes = (int(part) for part in text.split(":"))
    if minutes > 59 or hours > 24 or (hours == 24 and minutes):
        raise ValueError(f"{text!r} is not a time of day")
    return hours * 60 + minutes


def _days(text: str) -> frozenset[int]:
    days: set[int] = set()
    for part in text.split(","):
        first, _, last = (p.strip().lower() for p in part.partition("-"))
        if first not in _DAYS or (last and last not in _DAYS):
            raise ValueError(f"{part.strip()!r} is not a day or a range of days (Mon-Sun)")
        a, b = _DAYS.index(first), _DAYS.index(last or first)
        days.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
    return frozenset(days)


@dataclass(frozen=True, slots=True)
class WeeklyHours:
    """Weekly windows in local time, as the shop file writes them.

    ``"Mon-Fri 17:00-22:00; Sat 10:00-18:00"``; a window whose end is not after its start
    runs past midnight (``"Fri 20:00-02:00"`` is open in the small hours of Saturday).
    Local wall time decides, so a DST change never moves the hours.

    >>> h = WeeklyHours.parse("Mon-Fri 17:00-22:00", ZoneInfo("Europe/Berlin"))
    >>> h.contains(datetime.fromisoformat("2026-11-26T17:30:00+00:00"))  # 18:30 in Berlin
    True
    """

    windows: tuple[tuple[frozenset[int], int, int], ...]
    tz: ZoneInfo

    @classmethod
    def parse(cls, text: str, tz: ZoneInfo) -> WeeklyHours:
        windows = []
        for chunk in text.split(";"):
            if not chunk.strip():
                continue
            m = _WINDOW.fullmatch(chunk)
            if m is None:
                raise ValueError(f"{chunk.strip()!r} is not like 'Mon-Fri 17:00-22:00'")
            windows.append((_days(m["days"]), _minutes(m["start"]), _minutes(m["end"])))
        if not windows:
            raise ValueError("no opening windows given")
        return cls(tuple(windows), tz)

    def contains(self, now: datetime) -> bool:
        local = now.astimezone(self.tz)
        day, minute = local.weekday(), local.hour * 60 + local.minute
        for days, start, end in self.windows:
            if start < end:
                if day in days and start <= minute < end:
                    return True
            elif (day in days and minute >= start) or ((day - 1) % 7 in days and minute < end):
                return True
        return False


@dataclass(frozen=True, slots=True)
class MemberAccess:
    """What access needs to know about a member.

    ``trainings`` maps a training id to its expiry (None: does not expire); ``trains`` are
    the trainings this member may give; ``keyholder`` members may use tools outside hours.
    """

    handle: str
    name: str
    suspended: bool = False
    trainings: Mapping[str, datetime | None] = field(default_factory=dict)
    trains: frozenset[str] = frozenset()
    keyholder: bool = False

    def trained(self, training: str | None, now: datetime) -> bool:
        if training is None:
            return True
        if training not in self.trainings:
            return False
        expires = self.trainings[training]
        return expires is None or now < expires


@dataclass(frozen=True, slots=True)
class ToolAccess:
    """What access needs to know about a tool right now.

    ``in_use_by`` is the handle of the member with an open session; ``hours`` the shop's
    opening hours (None: always open); ``scarce`` the slots that need a reservation.
    """

    tool: str
    training: str | None = None
    policy: Policy = Policy.TAP
    locked: bool = False
    in_use_by: str | None = None
    hours: WeeklyHours | None = None
    scarce: WeeklyHours | None = None
    max_s: int | None = None


@dataclass(frozen=True, slots=True)
class Reservation:
    """A member's reservation of a tool over ``[start, end)``."""

    member: str
    start: datetime
    end: datetime

    def covers(self, now: datetime) -> bool:
        return self.start <= now < self.end


@dataclass(frozen=True, slots=True)
class Grant:
    member: str
    name: str
    max_s: int | None


@dataclass(frozen=True, slots=True)
class Deny:
    reason: DenyReason
    member: str | None = None


@dataclass(frozen=True, slots=True)
class TapOut:
    """The member holding a ``tap`` tool tapped again: end the session, reply ``release``."""

    member: str
    name: str


@dataclass(frozen=True, slots=True)
class NoReply:
    """A replayed badge: recorded, never answered.  ``decision`` is what the hub would say."""

    reason: str
    decision: Grant | Deny | TapOut


@dataclass(frozen=True, slots=True)
class TrainingRecorded:
    trainee: str
    trainer: str
    training: str
    at: datetime


@dataclass(frozen=True, slots=True)
class PendingInduction:
    """A trainer badged at ``tool``; the next untrained member within 30 s is inducted."""

    tool: str
    trainer: str
    training: str
    opened_at: datetime

    def is_open(self, tool: str, now: datetime) -> bool:
        elapsed = now - self.opened_at
        return tool == self.tool and timedelta(0) <= elapsed <= INDUCTION_WINDOW


@dataclass(frozen=True, slots=True)
class AccessOutcome:
    """The reply, the induction window to keep for the tool, and any training recorded."""

    reply: Grant | Deny | TapOut | NoReply
    pending: PendingInduction | None = None
    training: TrainingRecorded | None = None
    handover_from: str | None = None


def deny_reasons(
    tool: ToolAccess,
    member: MemberAccess | None,
    now: datetime,
    reservations: Iterable[Reservation] = (),
    *,
    allow_in_use_by: str | None = None,
    reservation_holders: frozenset[str] = frozenset(),
) -> list[DenyReason]:
    """Every deny reason that applies, in :data:`DENY_ORDER`; empty means grant."""
    if member is None:
        return [DenyReason.UNKNOWN_BADGE]
    reasons: list[DenyReason] = []
    if member.suspended:
        reasons.append(DenyReason.SUSPENDED)
    if not member.trained(tool.training, now):
        reasons.append(DenyReason.NOT_TRAINED)
    if tool.locked:
        reasons.append(DenyReason.LOCKED_OUT)
    if tool.hours is not None and not member.keyholder and not tool.hours.contains(now):
        reasons.append(DenyReason.OUTSIDE_HOURS)
    if tool.in_use_by not in (None, member.handle, allow_in_use_by):
        reasons.append(DenyReason.TOOL_IN_USE)
    if tool.scarce is not None and tool.scarce.contains(now):
        holders = reservation_holders | {member.handle}
        if _reservation(reservations, holders, now) is None:
            reasons.append(DenyReason.NO_RESERVATION)
    return reasons


def _reservation(
    reservations: Iterable[Reservation], holders: frozenset[str] | set[str], now: datetime
) -> Reservation | None:
    return next((r for r in reservations if r.member in holders and r.covers(now)), None)


def _decision(
    tool: ToolAccess,
    member: MemberAccess | None,
    now: datetime,
    reservations: tuple[Reservation, ...],
    *,
    allow_in_use_by: str | None = None,
) -> Grant | Deny | TapOut:
    if member is not None and tool.policy == Policy.TAP and tool.in_use_by == member.handle:
        return TapOut(member.handle, member.name)
    holders = frozenset({allow_in_use_by} if allow_in_use_by else set())
    reasons = deny_reasons(
        tool,
        member,
        now,
        reservations,
        allow_in_use_by=allow_in_use_by,
        reservation_holders=holders,
    )
    if reasons:
        return Deny(reasons[0], member.handle if member else None)
    assert member is not None
    max_s = tool.max_s
    if tool.scarce is not None and tool.scarce.contains(now):
        held = _reservation(reservations, holders | {member.handle}, now)
        assert held is not None
        left = int((held.end - now).total_seconds())
        max_s = left if max_s is None else min(max_s, left)
    return Grant(member.handle, member.name, max_s)


def decide(
    tool: ToolAccess,
    member: MemberAccess | None,
    now: datetime,
    *,
    reservations: Iterable[Reservation] = (),
    pending: PendingInduction | None = None,
    replay: bool = False,
) -> AccessOutcome:
    """Decide a badge at ``tool`` by ``member`` (None: the uid is unknown) at ``now``.

    ``pending`` is the tool's open induction window from the previous outcome; keep the
    returned ``outcome.pending`` for the next badge at this tool.
    """
    reservations = tuple(reservations)
    if replay:
        return AccessOutcome(NoReply("replay", _decision(tool, member, now, reservations)), pending)
    if pending is not None and not pending.is_open(tool.tool, now):
        pending = None

    if (
        pending is not None
        and member is not None
        and member.handle != pending.trainer
        and not member.suspended
        and not member.trained(pending.training, now)
    ):
        record = TrainingRecorded(member.handle, pending.trainer, pending.training, now)
        trainee = replace(member, trainings={**member.trainings, pending.training: None})
        reply = _decision(tool, trainee, now, reservations, allow_in_use_by=pending.trainer)
        handover = (
            pending.trainer
            if isinstance(reply, Grant) and tool.in_use_by == pending.trainer
            else None
        )
        return AccessOutcome(reply, None, record, handover)

    reply = _decision(tool, member, now, reservations)
    if pending is not None and member is not None and member.handle == pending.trainer:
        pending = None  # the trainer again: the window closes
    if (
        isinstance(reply, Grant)
        and member is not None
        and tool.training is not None
        and tool.training in member.trains
    ):
        pending = PendingInduction(tool.tool, member.handle, tool.training, now)
    return AccessOutcome(reply, pending)


def reply_payload(seq: int, reply: Grant | Deny | TapOut | NoReply) -> bytes | None:
    """The ``peershop/dev/{id}/cmd`` answer to badge event ``seq``; None for no reply."""
    if isinstance(reply, NoReply):
        return None
    obj: dict[str, object] = {"re": seq}
    if isinstance(reply, Grant):
        obj.update(action="grant", member=reply.name)
        if reply.max_s is not None:
            obj["max_s"] = reply.max_s
    elif isinstance(reply, Deny):
        obj.update(action="deny", reason=reply.reason)
    else:
        obj["action"] = "release"
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
