"""A closed period does not change: the guard every session of peershop carries.

:func:`refuse_changes_to_closed_periods` runs before each flush and raises
:class:`~hub.errors.ClosedPeriodError` when the flush would change a closed period or what
its close stored (balances, resource costs, task weights), or add a claim to one.  The
period close (hub/ledger/periods.py) names the period it closes in
``session.info["peershop_closing"]`` while it writes.  :func:`hub.store.db.session_factory`
installs the guard on every session it makes; nothing else needs to import this module.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import inspect, select
from sqlalchemy.orm import Session

from hub.errors import ClosedPeriodError
from hub.store.models import (
    Period,
    PeriodBalance,
    PeriodResourceCost,
    TaskClaim,
    TaskWeightHistory,
)

# What a close stored never changes.  A claim made in a closed period may still be
# marked done (its effort lands in the open period), but no claim is added to one.
_GUARDED = (PeriodBalance, PeriodResourceCost, TaskWeightHistory)


def _closed_ids(session: Session, ids: set[int]) -> set[int]:
    if not ids:
        return set()
    with session.no_autoflush:
        rows = session.execute(select(Period.id, Period.closed_at).where(Period.id.in_(ids))).all()
    allowed = session.info.get("peershop_closing", set())
    return {pid for pid, closed in rows if closed is not None and pid not in allowed}


def _committed_closed_at(period: Period) -> datetime | None:
    hist = inspect(period).attrs.closed_at.history
    if hist.deleted:
        return hist.deleted[0]
    return hist.unchanged[0] if hist.unchanged else None


def refuse_changes_to_closed_periods(session: Session, flush_context: Any, instances: Any) -> None:
    allowed = session.info.get("peershop_closing", set())
    for obj in list(session.dirty) + list(session.deleted):
        if (
            isinstance(obj, Period)
            and obj.id not in allowed
            and _committed_closed_at(obj) is not None
            and (obj in session.deleted or session.is_modified(obj))
        ):
            raise ClosedPeriodError(f"period {obj.id} is closed; record a correction instead")
    touched = {
        obj.period_id
        for obj in list(session.new) + list(session.dirty) + list(session.deleted)
        if isinstance(obj, _GUARDED) and obj.period_id is not None
    }
    touched |= {obj.period_id for obj in session.new if isinstance(obj, TaskClaim)}
    closed = _closed_ids(session, touched)
    if closed:
        raise ClosedPeriodError(
            f"period {min(closed)} is closed; its records cannot change (record a correction)"
        )
