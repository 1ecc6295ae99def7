"""Reservations of a tool's scarce slots, cleared by preference weighting (rule (c)).

A tool with ``scarce`` in the shop file (``{slots: "Mon-Fri 18:00-21:00", per_slot:
3600}``) has scarce slots: each ``per_slot`` long window starting inside those hours,
counted from the window's start (18:00, 19:00, 20:00).  A member asks for one slot with
their ``max``, the highest multiplier (at least 1) they accept relative to a plain unit
of the tool.  Bids for a slot close :data:`BIDS_CLOSE` (24 h) before it starts; then
:func:`clear_due` settles it with :func:`hub.peerconomy.economy.clear_auction` (one tool: one
unit per slot), seeded from the period and the slot so a tie is drawn the same way on a
replay.  The winner pays ``m`` (the highest losing bid, 1 without competition) per unit
of use inside the slot, which the period close counts as scarce units; losers use the
tool as plain units, in any free time.

:func:`winning_reservations` gives the access rules (:mod:`hub.rules.access`) the won slots,
so that a tool that enforces reservations denies others with ``no_reservation``.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.errors import ReservationError
from hub.ledger.periods import open_period
from hub.peerconomy import economy as pc
from hub.rules.access import Reservation, WeeklyHours
from hub.store.models import Member, SlotReservation, Tool

if TYPE_CHECKING:
    from hub.config import Config

BIDS_CLOSE = timedelta(hours=24)
DEFAULT_PER_SLOT = 3600  # seconds, as the shop file's default


def slot_length(tool: Tool) -> timedelta:
    scarce = tool.scarce or {}
    return timedelta(seconds=int(scarce.get("per_slot") or DEFAULT_PER_SLOT))


def is_slot_start(tool: Tool, cfg: Config, start: datetime) -> bool:
    """Whether ``start`` begins one of the tool's scarce slots (local wall time)."""
    if not tool.scarce:
        return False
    hours = WeeklyHours.parse(tool.scarce["slots"], cfg.site.timezone)
    if not hours.contains(start):
        return False
    length = slot_length(tool)
    # the window's start is the latest instant before ``start`` not in the scarce hours
    local = start.astimezone(cfg.site.timezone)
    minute = local.replace(second=0, microsecond=0)
    if minute != local:
        return False
    probe = start
    step = timedelta(minutes=1)
    while hours.contains(probe - step) and start - probe < timedelta(days=1):
        probe -= step
    return (start - probe) % length == timedelta(0)


def reserve(
    session: Session,
    cfg: Config,
    member: str,
    tool_id: str,
    start: datetime,
    max_multiplier: Any,
    now: datetime,
    *,
    bids_close: timedelta = BIDS_CLOSE,
) -> SlotReservation:
    """Ask for the slot of ``tool_id`` starting at ``start``, accepting up to ``max``.

    Asking again for the same slot changes the bid.  Refused once the slot's bids closed.
    """
    tool = session.get(Tool, tool_id)
    if tool is None or not tool.scarce:
        raise ReservationError(f"tool {tool_id!r} has no scarce slots")
    if session.execute(select(Member.id).where(Member.handle == member)).first() is None:
        raise ReservationError(f"no member {member!r}")
    try:
        bid = pc.Bid(member, max_multiplier)
    except ValueError as exc:
        raise ReservationError(str(exc)) from None
    if not is_slot_start(tool, cfg, start):
        raise ReservationError(f"{start.isoformat()} does not start a scarce slot of {tool_id}")
    if now >= start - bids_close:
        raise ReservationError(
            f"bids for the slot at {start.isoformat()} closed at {(start - bids_close).isoformat()}"
        )
    existing = session.execute(
        select(SlotReservation).where(
            SlotReservation.tool_id == tool_id,
            SlotReservation.start == start,
            SlotReservation.member == member,
        )
    ).scalar_one_or_none()
    if existing is not None:
        existing.max = bid.max
        session.flush()
        return existing
    r = SlotReservation(
        tool_id=tool_id,
        member=member,
        start=start,
        end=start + slot_length(tool),
        max=bid.max,
        created_at=now,
    )
    session.add(r)
    session.flush()
    return r


def cancel(session: Session, reservation_id: int, member: str, now: datetime) -> None:
    """Withdraw a bid before its slot is cleared."""
    r = session.get(SlotReservation, reservation_id)
    if r is None or r.member != member:
        raise ReservationError(f"no reservation {reservation_id} of {member}")
    if r.cleared_at is not None:
        raise ReservationError("the slot is cleared already; the result stands")
    session.delete(r)
    session.flush()


def clear_due(
    session: Session, cfg: Config, now: datetime, *, lead: timedelta = BIDS_CLOSE
) -> list[pc.Clearing]:
    """Clear every slot whose bids have closed (its start is within ``lead`` of ``now``).

    The hub's period jobs call this; the period close calls it with ``lead`` 0 so that
    no bid of the period stays uncleared.  Idempotent: a cleared slot is left alone.
    """
    pending = session.execute(
        select(SlotReservation)
        .where(SlotReservation.cleared_at.is_(None), SlotReservation.start <= now + lead)
        .order_by(SlotReservation.tool_id, SlotReservation.start, SlotReservation.member)
        .with_for_update()
    ).scalars()
    slots: dict[tuple[str, datetime], list[SlotReservation]] = defaultdict(list)
    for r in pending:
        slots[(r.tool_id, r.start)].append(r)
    out = []
    for (tool_id, start), requests in slots.items():
        period = open_period(session, cfg, start)
        clearing = pc.clear_auction(
            tool_id,
            1,
            [pc.Bid(r.member, r.max) for r in requests],
            seed=f"{period.id}@{start.isoformat()}",
        )
        for r in requests:
            won = r.member in clearing.winners
            r.outcome = "won" if won else "lost"
            r.multiplier = clearing.multiplier if won else None
            r.period_id = period.id
            r.cleared_at = now
        out.append(clearing)
    session.flush()
    return out


def winning_reservations(session: Session, tool_id: str, now: datetime) -> list[Reservation]:
    """The won slots of a tool that have not ended by ``now``, for :mod:`hub.rules.access`."""
    rows = session.execute(
        select(SlotReservation)
        .where(
            SlotReservation.tool_id == tool_id,
            SlotReservation.outcome == "won",
            SlotReservation.end > now,
        )
        .order_by(SlotReservation.start)
    ).scalars()
    return [Reservation(r.member, r.start, r.end) for r in rows]


def reservations_of(session: Session, member: str, since: datetime) -> list[SlotReservation]:
    """A member's bids and their outcome, for the web page."""
    return list(
        session.execute(
            select(SlotReservation)
            .where(SlotReservation.member == member, SlotReservation.end > since)
            .order_by(SlotReservation.start)
        ).scalars()
    )
