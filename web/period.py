"""Period: the current and past accounting periods (docs/periods.md).

Per project, each member's credited, expected and balance (members see their own line
and the totals, coordinators everyone's), what a unit of each resource cost, the scarce
slots' reservations and how they cleared, and charts of tool use per day and effort per
project.  A coordinator may close the running period now.  The numbers come from
:func:`hub.ledger.closing.period_summary`; this module filters and renders them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from flask import Blueprint, abort, current_app, flash, redirect, render_template, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from markupsafe import Markup
from wtforms import BooleanField
from wtforms.validators import DataRequired

from hub.errors import PeriodError
from hub.ledger.closing import close_period, period_summary, recent_periods
from hub.ledger.period_queries import (
    balance_totals,
    effort_per_project,
    find_period,
    reservations_in,
    unattended_runs,
    usage_per_tool_day,
)
from web.auth import require_role
from web.charts import bars, columns
from web.state import committing

bp = Blueprint("period", __name__)

SIX = Decimal("0.000001")
RECENT = 12  # periods listed on the page


class CloseForm(FlaskForm):
    confirm = BooleanField("Yes, close the running period now", validators=[DataRequired()])


def _state() -> Any:
    return current_app.extensions["peershop"]


def period_or_404(session: Any, period_id: int) -> Any:
    """The period of a URL's id, or a 404 naming it (never a database error for an id
    past INTEGER)."""
    period = find_period(session, period_id)
    if period is None:
        abort(404, description=f"no period {period_id}")
    return period


def allocations(session: Any, period: Any, viewer: str | None, everyone: bool) -> dict:
    """:func:`period_summary` with per-project totals; without ``everyone`` only the
    ``viewer``'s own member line is kept (the totals still count everyone)."""
    summary = period_summary(session, period)
    totals = balance_totals(session, period.id)
    for project, body in summary["projects"].items():
        if not everyone:
            body["members"] = {h: v for h, v in body["members"].items() if h == viewer}
        t = totals.get(project) or {"credited": Decimal(0), "expected": Decimal(0), "balance": 0}
        body["totals"] = {k: float(Decimal(v).quantize(SIX)) for k, v in t.items()}
    return summary


def _context(period_id: int | None) -> dict[str, Any]:
    session = _state().db()
    now = datetime.now(UTC)
    periods = recent_periods(session, now, count=RECENT)
    if period_id is None:
        period = periods[0] if periods else None
    else:
        period = period_or_404(session, period_id)
    everyone = current_user.is_coordinator
    data: dict[str, Any] = {}
    if period is not None:
        usage = usage_per_tool_day(session, period)
        effort = effort_per_project(session, period)
        data = {
            "summary": allocations(session, period, current_user.handle, everyone),
            "usage_charts": {
                tool: columns(days, label=f"busy hours of {tool} per day", unit=" h")
                for tool, days in usage.items()
            },
            "effort_chart": bars(effort, label="weighted hours per project", unit=" h"),
            "effort": effort,
            "slots": reservations_in(session, period),
            "runs": unattended_runs(session, period, now),
        }
    running = periods[0] if periods and periods[0].closed_at is None else None
    return {
        "period": period,
        "periods": periods,
        "running": running,
        "everyone": everyone,
        "close_form": CloseForm(),
        **data,
    }


def _render(period_id: int | None) -> Any:
    context = _context(period_id)
    # Rendered to a string first, as the tasks page's board is.
    body = Markup(render_template("_period.html", **context))
    # An open page follows the period it shows, also on /periods: when the running
    # period closes, its page shows it closed, with the balances, and links the next one.
    shown = context["period"]
    if shown is None:
        fragment_url = url_for("period.index_fragment")
    else:
        fragment_url = url_for("period.show_fragment", period_id=shown.id)
    return render_template("period.html", body=body, fragment_url=fragment_url)


@bp.get("/periods")
@require_role("member")
def index() -> Any:
    return _render(None)


@bp.get("/periods/<int:period_id>")
@require_role("member")
def show(period_id: int) -> Any:
    return _render(period_id)


@bp.get("/periods/fragment")
@require_role("member")
def index_fragment() -> Any:
    """The running (or last) period's content alone: what an open page fetches on a change."""
    return render_template("_period.html", **_context(None))


@bp.get("/periods/<int:period_id>/fragment")
@require_role("member")
def show_fragment(period_id: int) -> Any:
    return render_template("_period.html", **_context(period_id))


@bp.post("/periods/close")
@require_role("coordinator")
def close_now() -> Any:
    form = CloseForm()
    if not form.validate_on_submit():
        if form.csrf_token.errors:
            abort(400, description="the form expired; reload the page")
        flash("Tick the box to confirm closing the period.", "error")
        return redirect(url_for("period.index"))
    session = _state().db()
    try:
        with committing(session):
            closed = close_period(session, _state().cfg, datetime.now(UTC))
    except PeriodError as exc:
        flash(str(exc), "error")
        return redirect(url_for("period.index"))
    _state().changed()
    flash(f"Closed period {', '.join(str(c.period_id) for c in closed)}.", "ok")
    last = closed[-1].period_id if closed else None
    return redirect(url_for("period.show", period_id=last) if last else url_for("period.index"))
