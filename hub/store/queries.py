"""Read-only query functions shared by the CLI, the web view and the benches."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from hub.rules.records import EffortSource
from hub.rules.seen import SeenIndex
from hub.store.models import (
    DeadLetter,
    Device,
    EffortRecord,
    Event,
    Outbox,
    ProjectRules,
    TaskClaim,
    UsageSession,
)


def gauges(session: Session) -> dict[str, int]:
    """``/metrics``' gauges: what is stored now, counted cheaply (never the event log,
    which may hold millions of rows and is scraped every few seconds)."""

    def count(column, *where) -> int:
        return session.scalar(select(func.count(column)).where(*where)) or 0

    return {
        "dead_letters": count(DeadLetter.id),
        "devices": count(Device.id),
        "devices_online": count(Device.id, Device.online.is_(True)),
        "devices_pending": count(Device.id, Device.approval == "pending"),
        "sessions_open": count(UsageSession.id, UsageSession.end.is_(None)),
        "outbox": count(Outbox.id),
    }


def counts(session: Session) -> dict[str, int]:
    """``peershop stats``: what the hub has stored so far (docs/configuration.md)."""
    now = gauges(session)
    events = session.scalar(select(func.count(Event.id))) or 0
    keys = ("dead_letters", "devices", "devices_online", "devices_pending", "sessions_open")
    return {"events": events, **{k: now[k] for k in keys}}


def ping(session: Session) -> None:
    """``/healthz``: the database answers a query (raises when it does not)."""
    session.execute(text("SELECT 1"))


def slot_takes(
    session: Session,
    start: datetime,
    end: datetime,
    *,
    stations: bool = True,
    task_id: str | None = None,
) -> dict[str, list[datetime]]:
    """When each task's slots were taken in ``[start, end)``, oldest first.

    A slot is taken by a claim on the board (at ``claimed_at``) or by effort recorded off
    the board, at a task station or by a coordinator (at the record's ``start``); board
    effort is counted by its claim.  This is rule (a)'s V, counted as it grows during the
    period.  ``stations=False`` leaves station effort out: the shop engine counts the
    efforts it makes itself.
    """
    claims = select(TaskClaim.task_id, TaskClaim.claimed_at).where(
        TaskClaim.claimed_at >= start, TaskClaim.claimed_at < end
    )
    sources = (
        (EffortSource.STATION, EffortSource.COORDINATOR)
        if stations
        else (EffortSource.COORDINATOR,)
    )
    efforts = select(EffortRecord.task_id, EffortRecord.start).where(
        EffortRecord.task_id.is_not(None),
        EffortRecord.source.in_(sources),
        EffortRecord.start >= start,
        EffortRecord.start < end,
    )
    if task_id is not None:
        claims = claims.where(TaskClaim.task_id == task_id)
        efforts = efforts.where(EffortRecord.task_id == task_id)
    out: dict[str, list[datetime]] = {}
    for task, at in [*session.execute(claims).all(), *session.execute(efforts).all()]:
        out.setdefault(task, []).append(at)
    for times in out.values():
        times.sort()
    return out


def weight_rules(session: Session) -> dict[str, ProjectRules]:
    """Rule (a)'s settings per project that has a row (others use the defaults)."""
    return {r.project_id: r for r in session.execute(select(ProjectRules)).scalars()}


def load_seen(session: Session) -> SeenIndex:
    """Every identity in the event log, read as runs of consecutive seqs (one row per
    run, not per event: gaps-and-islands with a window function, on both backends)."""
    index = SeenIndex()
    rows = session.execute(
        text(
            "SELECT device_id, boot, MIN(seq) AS lo, MAX(seq) AS hi FROM ("
            " SELECT device_id, boot, seq,"
            " seq - ROW_NUMBER() OVER (PARTITION BY device_id, boot ORDER BY seq) AS run"
            " FROM events) AS numbered"
            " GROUP BY device_id, boot, run"
        )
    )
    for device, boot, lo, hi in rows:
        index.add_interval(device, boot, lo, hi)
    return index
