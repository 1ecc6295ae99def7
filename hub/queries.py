"""Read-only query functions shared by the CLI, the web view and the benches."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hub.models import DeadLetter, Device, Event, UsageSession


def counts(session: Session) -> dict[str, int]:
    """``peershop stats``: what the hub has stored so far (docs/configuration.md)."""

    def count(column) -> int:
        return session.scalar(select(func.count(column))) or 0

    return {
        "events": count(Event.id),
        "dead_letters": count(DeadLetter.id),
        "devices": count(Device.id),
        "devices_online": session.scalar(
            select(func.count(Device.id)).where(Device.online.is_(True))
        )
        or 0,
        "devices_pending": session.scalar(
            select(func.count(Device.id)).where(Device.approval == "pending")
        )
        or 0,
        "sessions_open": session.scalar(
            select(func.count(UsageSession.id)).where(UsageSession.end.is_(None))
        )
        or 0,
    }
