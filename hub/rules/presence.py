"""Who is in the space: a badge at a ``sign_in`` station toggles the member in and out.

Pure: badges and ``now`` go in, :class:`SignedIn` / :class:`SignedOut` records come out.

* A badge signs the member in, the next one signs them out (reason ``badge``).
* A second badge within ``repeat`` (default 5 s) of the member's last toggle is a reader
  repeating the same tap and is ignored.
* Forgotten sign-outs close at a local time of day (default 04:00, the ``auto_close_at``
  setting), reason ``auto``, at that instant rather than when the job happened to run.
  The cutoff is the first instant *after* the sign-in at which the shop's wall clock
  reads that time: in the autumn hour that occurs twice that is whichever pass comes first
  after the sign-in; in the spring hour that does not exist it is the moment the clock
  jumps past it.  :meth:`Presence.badge` closes a forgotten sign-in before it toggles, so
  a member who forgot yesterday is signed *in* today, not out.
* An out time never lies before its in time, whatever the clocks do.

>>> from datetime import UTC, datetime
>>> p = Presence(ZoneInfo("Europe/Berlin"))
>>> p.badge("ada", datetime(2026, 11, 26, 17, tzinfo=UTC))
[SignedIn(member='ada', at=datetime.datetime(2026, 11, 26, 17, 0, tzinfo=datetime.timezone.utc))]
>>> [out.at.isoformat() for out in p.auto_close(datetime(2026, 11, 27, 12, tzinfo=UTC))]
['2026-11-27T03:00:00+00:00']
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo


class PresenceState(StrEnum):
    """A presence change signs a member in or out (``presence_changes.state``)."""

    IN = "in"
    OUT = "out"


class PresenceReason(StrEnum):
    """Why a presence change happened (``presence_changes.reason``)."""

    BADGE = "badge"  # a badge at a sign_in station
    AUTO = "auto"  # a forgotten sign-out, closed at auto_close_at


@dataclass(frozen=True, slots=True)
class SignedIn:
    member: str
    at: datetime


@dataclass(frozen=True, slots=True)
class SignedOut:
    member: str
    since: datetime
    at: datetime
    reason: PresenceReason


def auto_close_time(since: datetime, at: time, tz: ZoneInfo) -> datetime:
    """The first instant after ``since`` at which the wall clock in ``tz`` reads ``at`` (UTC)."""
    since = since.astimezone(UTC)
    day = since.astimezone(tz).date()
    candidates = []
    for date in (day, day + timedelta(days=1)):
        wall = datetime.combine(date, at.replace(tzinfo=None))
        first, second = (wall.replace(tzinfo=tz, fold=f).astimezone(UTC) for f in (0, 1))
        if _wall(first, tz) == wall:
            candidates.append(first)
            if _wall(second, tz) == wall:  # the autumn hour: a second pass
                candidates.append(second)
        else:
            candidates.append(_jump(second, first, wall, tz))
    return min(c for c in candidates if c > since)


def _wall(instant: datetime, tz: ZoneInfo) -> datetime:
    return instant.astimezone(tz).replace(tzinfo=None)


def _jump(before: datetime, after: datetime, wall: datetime, tz: ZoneInfo) -> datetime:
    """The instant the clock jumps past a ``wall`` time that does not exist (to the second).

    ``before`` reads earlier than ``wall`` and ``after`` later; bisect between them.
    """
    while after - before > timedelta(seconds=1):
        middle = before + (after - before) / 2
        if _wall(middle, tz) >= wall:
            after = middle
        else:
            before = middle
    return (
        after.replace(microsecond=0) if _wall(after.replace(microsecond=0), tz) >= wall else after
    )


def state_from_changes(
    changes: Iterable[tuple[str, datetime, str, str]],
) -> tuple[dict[str, datetime], dict[str, datetime]]:
    """Who is signed in, and each member's last toggle by badge, from presence changes
    ``(member, at, state, reason)`` in the order they were recorded.

    A restarted hub resumes from its stored changes, and a rebuild from the changes it
    has made again up to the same hub start: both call this, so both resume alike."""
    present: dict[str, datetime] = {}
    last_toggle: dict[str, datetime] = {}
    for member, at, state, reason in changes:
        if state == PresenceState.IN:
            present[member] = at
        else:
            present.pop(member, None)
        if reason == PresenceReason.BADGE:
            last_toggle[member] = at
    return present, last_toggle


Stay = tuple[datetime, datetime | None]
"""``[in, out)``: a member signed in at one site; ``None`` while still signed in."""


def stays(changes: Iterable[tuple[datetime, str]]) -> list[Stay]:
    """A member's stays at one site from their presence changes ``(at, state)`` there,
    in the order recorded (a change before the time of interest may come first)."""
    out: list[Stay] = []
    since: datetime | None = None
    for at, state in changes:
        if state == PresenceState.IN:
            since = at if since is None else since
        elif since is not None:
            out.append((since, at))
            since = None
    if since is not None:
        out.append((since, None))
    return out


def met(a: Iterable[Stay], b: Iterable[Stay], start: datetime, end: datetime) -> bool:
    """Whether two members' stays at one site overlap at some instant of ``[start, end]``.

    >>> from datetime import UTC, datetime
    >>> t = [datetime(2026, 11, 26, h, tzinfo=UTC) for h in range(24)]
    >>> ada, bob = [(t[10], t[12])], [(t[11], None)]  # Bob is still in
    >>> met(ada, bob, t[9], t[9]), met(ada, bob, t[9], t[20]), met(ada, bob, t[12], t[20])
    (False, True, False)
    """
    b = list(b)
    for s1, e1 in a:
        for s2, e2 in b:
            at = max(s1, s2, start)  # the first instant both are in, within the window
            if at <= end and (e1 is None or at < e1) and (e2 is None or at < e2):
                return True
    return False


class Presence:
    """The sign-in state of the space.  ``present`` maps member to signed-in time."""

    def __init__(
        self,
        tz: ZoneInfo,
        *,
        auto_close_at: time = time(4, 0),
        repeat: timedelta = timedelta(seconds=5),
        present: Mapping[str, datetime] | None = None,
        last_toggle: Mapping[str, datetime] | None = None,
    ):
        self.tz = tz
        self.auto_close_at = auto_close_at
        self.repeat = repeat
        self.present: dict[str, datetime] = dict(present or {})
        self._last_toggle: dict[str, datetime] = dict(last_toggle or {})

    def badge(self, member: str, now: datetime) -> list[SignedIn | SignedOut]:
        """A badge at a sign-in station: the records it makes (none for a repeat)."""
        last = self._last_toggle.get(member)
        if last is not None and timedelta(0) <= now - last < self.repeat:
            return []
        records: list[SignedIn | SignedOut] = []
        since = self.present.get(member)
        if since is not None and auto_close_time(since, self.auto_close_at, self.tz) <= now:
            records.append(self._close(member, PresenceReason.AUTO))
            since = None
        self._last_toggle[member] = now
        if since is None:
            self.present[member] = now
            return [*records, SignedIn(member, now)]
        del self.present[member]
        return [SignedOut(member, since, max(now, since), PresenceReason.BADGE)]

    def auto_close(self, now: datetime) -> list[SignedOut]:
        """Close every sign-in whose cutoff has passed by ``now`` (run by the scheduler)."""
        due = [
            member
            for member, since in self.present.items()
            if auto_close_time(since, self.auto_close_at, self.tz) <= now
        ]
        return [self._close(member, PresenceReason.AUTO) for member in sorted(due)]

    def _close(self, member: str, reason: PresenceReason) -> SignedOut:
        since = self.present.pop(member)
        return SignedOut(member, since, auto_close_time(since, self.auto_close_at, self.tz), reason)
