"""Accounting periods: their boundaries, and corrections to a closed one.

A period is ``[start, end)``.  Its boundaries come from ``period.length`` and
``period.anchor`` counted on the site's wall clock (``site.timezone``), so a week is
seven local days: the week in which clocks go forward has 167 hours, the one in which
they go back 169.  Periods follow each other without gaps; the one containing a given
instant is created when first asked for (:func:`open_period`).

A closed period never changes (hub/store/closed_periods.py guards every session); a
correction is a new record in the open period (:func:`correct_effort`).  The close itself
is hub/ledger/closing.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hub.errors import ClosedPeriodError, PeriodError
from hub.peerconomy import economy as pc
from hub.rules.records import EffortSource
from hub.store.models import (
    EffortRecord,
    Period,
    Task,
)
from hub.store.shop_store import bump_shop_version

if TYPE_CHECKING:
    from hub.config import Config

# Any fixed Monday: periods are counted from it in whole lengths of local wall time.
EPOCH = datetime(2001, 1, 1)
DEFAULT_PROJECT = "commons"  # records naming no project belong to it (or the first project)
JSON_PLACES = Decimal("0.000001")
MS_PER_HOUR = Decimal(3_600_000)
STORED_PLACES = Decimal("0.000000001")  # scarce hours and multipliers as stored


# ---------------------------------------------------------------------------------------
# boundaries


def _local_epoch(cfg: Config) -> datetime:
    weekday, at = cfg.period.anchor
    return EPOCH.replace(hour=at.hour, minute=at.minute) + timedelta(days=weekday)


def _aware(local: datetime, cfg: Config) -> datetime:
    return local.replace(tzinfo=cfg.site.timezone).astimezone(UTC)


def period_bounds(cfg: Config, at: datetime) -> tuple[datetime, datetime]:
    """The regular period ``[start, end)`` (UTC) containing ``at``, from length and anchor.

    >>> from hub.config import load_config
    >>> cfg = load_config(env={}, search=(), overrides={"site": {"timezone": "Europe/Berlin"}})
    >>> s, e = period_bounds(cfg, datetime(2026, 3, 31, 12, tzinfo=UTC))
    >>> s.isoformat(), (e - s).total_seconds() / 3600
    ('2026-03-29T22:00:00+00:00', 168.0)
    """
    if at.tzinfo is None:
        raise ValueError("at must be timezone-aware")
    length: timedelta = cfg.period.length
    epoch = _local_epoch(cfg)
    local = at.astimezone(cfg.site.timezone).replace(tzinfo=None)
    n = (local - epoch) // length
    # A DST change near a boundary can put the wall-clock guess one period off.
    for _ in range(3):
        start, end = _aware(epoch + n * length, cfg), _aware(epoch + (n + 1) * length, cfg)
        if at < start:
            n -= 1
        elif at >= end:
            n += 1
        else:
            return start, end
    raise PeriodError(f"no period contains {at.isoformat()}")  # pragma: no cover


def _utc(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise ValueError("a naive datetime given where a UTC instant is required")
    return at.astimezone(UTC)


def _create(session: Session, start: datetime, end: datetime) -> Period:
    """Insert a period, or find the one another hub inserted at the same start."""
    try:
        with session.begin_nested():
            period = Period(start=start, end=end)
            session.add(period)
    except IntegrityError:
        return session.execute(select(Period).where(Period.start == start)).scalar_one()
    # A running hub reloads: its task stations post clock-mode weights from this period.
    bump_shop_version(session)
    return period


def open_period(session: Session, cfg: Config, at: datetime) -> Period:
    """The period containing ``at``, created (with any missing ones before it) if needed.

    Periods follow the last one without a gap; before the first period is created there
    is nothing to follow, so the first one is the regular period containing ``at``.
    """
    at = _utc(at)
    found = session.execute(
        select(Period).where(Period.start <= at, Period.end > at)
    ).scalar_one_or_none()
    if found is not None:
        return found
    last = session.execute(select(Period).order_by(Period.start.desc()).limit(1)).scalar()
    if last is None:
        start, end = period_bounds(cfg, at)
        return _create(session, start, end)
    if at < last.start:
        raise PeriodError(f"{at.isoformat()} is before the first period")
    period = last
    while period.end <= at:
        _, end = period_bounds(cfg, period.end)
        period = _create(session, period.end, end)
    return period


def current_period(session: Session, at: datetime) -> Period | None:
    """The stored period containing ``at``, without creating one."""
    at = _utc(at)
    return session.execute(
        select(Period).where(Period.start <= at, Period.end > at)
    ).scalar_one_or_none()


# ---------------------------------------------------------------------------------------
# a closed period does not change


def correct_effort(
    session: Session,
    cfg: Config,
    member: str,
    task_id: str,
    hours: Any,
    now: datetime,
    *,
    key: str | None = None,
) -> EffortRecord:
    """A coordinator's effort entry (``source`` coordinator), dated ``now``, so it lands
    in the open period; ``hours`` may be negative to take back effort wrongly credited
    in a closed one.  The weight is the task's weight now."""
    task = session.get(Task, task_id)
    if task is None:
        raise PeriodError(f"no task {task_id!r}")
    period = open_period(session, cfg, now)
    if period.closed_at is not None:
        raise ClosedPeriodError(f"period {period.id} is closed")
    record = EffortRecord(
        key=key or f"coord:{period.id}:{member}:{task_id}:{now.timestamp():.6f}"[:40],
        member=member,
        task_id=task.id,
        project_id=task.project_id,
        start=now,
        end=now,
        hours=pc.to_decimal(hours, "hours"),
        weight=task.weight,
        source=EffortSource.COORDINATOR,
    )
    session.add(record)
    session.flush()
    return record
