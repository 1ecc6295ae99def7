"""The floor: every tool's state, who is in, device health, recent events (live)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, current_app, render_template
from flask_login import current_user

from hub.store.floor_queries import device_health, recent_events, recent_runs
from web.auth import can_see_names
from web.views import event_summary, presence

bp = Blueprint("floor", __name__)


def _context() -> dict[str, Any]:
    state = current_app.extensions["peershop"]
    session = state.db()
    now = datetime.now(UTC)
    coordinator = current_user.is_authenticated and current_user.is_coordinator
    events = recent_events(session)
    return {
        "now": now,
        "tools": state.tool_views(session, now),
        "present": presence(state, session),
        "health": device_health(session, now),
        "events": [(ev, event_summary(ev, coordinator=coordinator)) for ev in events],
        "runs": recent_runs(session, now),
        "names": can_see_names(),
        "live": state.feed is not None,
    }


@bp.get("/")
def index() -> Any:
    return render_template("floor.html", **_context())


@bp.get("/floor/panels")
def panels() -> Any:
    """Presence, device health and events as HTML, refetched by floor.js after a batch."""
    return render_template("_panels.html", **_context())
