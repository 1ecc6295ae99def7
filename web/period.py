"""Period: the current and past accounting periods (docs/periods.md).

Per project, each member's credited, expected and balance (members see their own line
and the totals, coordinators everyone's), what a unit of each resource cost, the scarce
slots' reservations and how they cleared, and charts of tool use per day and effort per
project.  A coordinator may close the running period now.  The numbers come from
:func:`hub.periods.period_summary`; this module filters and renders them.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from flask import Blueprint, abort, current_app, flash, redirect, render_template, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import func, select
from wtforms import BooleanField
from wtforms.validators import DataRequired

from hub.models import EffortRecord, Period, PeriodBalance, SlotReservation, UsageSession
from hub.periods import PeriodError, close_period, period_summary, recent_periods
from web.auth import require_role
from web.charts import bars, columns
from web.state import committing

bp = Blueprint("period", __name__)

SIX = Decimal("0.000001")
RECENT = 12  # periods listed on the page
MAX_ID = 2**63 - 1  # a larger id fits no database integer: it names nothing


class CloseForm(FlaskForm):
    confirm = BooleanField("Yes, close the running period now", validators=[DataRequired()])


def _state() -> Any:
    return current_app.extensions["peershop"]


def allocations(session: Any, period: Period, viewer: str | None, everyone: bool) -> dict:
    """:func:`period_summary` with per-project totals; without ``everyone`` only the
    ``viewer``'s own member line is kept (the totals still count everyone)."""
    summary = period_summary(session, period)
    totals: dict[str, dict[str, Decimal]] = defaultdict(
        lambda: {"credited": Decimal(0), "expected": Decimal(0), "balance": Decimal(0)}
    )
    for b in session.scalars(select(PeriodBalance).where(PeriodBalance.period_id == period.id)):
        t = totals[b.project_id]
        t["credited"] += b.credited
        t["expected"] += b.expected
        t["balance"] += b.balance
    for project, body in summary["projects"].items():
        if not everyone:
            body["members"] = {h: v for h, v in body["members"].items() if h == viewer}
        t = totals.get(project) or {"credited": Decimal(0), "expected": Decimal(0), "balance": 0}
        body["totals"] = {k: float(Decimal(v).quantize(SIX)) for k, v in t.items()}
    return summary


def usage_per_tool_day(session: Any, period: Period) -> dict[str, list[tuple[str, float]]]:
    """Busy hours per tool and (UTC) day of the sessions started in the period."""
    day = func.date(UsageSession.start)
    rows = session.execute(
        select(UsageSession.tool_id, day, func.sum(UsageSession.busy_s))
        .where(UsageSession.start >= period.start, UsageSession.start < period.end)
        .group_by(UsageSession.tool_id, day)
        .order_by(UsageSession.tool_id, day)
    )
    out: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for tool, d, busy in rows:
        label = d.isoformat() if isinstance(d, date) else str(d)
        out[tool].append((label, (busy or 0) / 3600))
    return out


def effort_per_project(session: Any, period: Period) -> list[tuple[str, Decimal]]:
    """Weighted hours per project of the effort started in the period."""
    sums: dict[str, Decimal] = defaultdict(Decimal)
    rows = session.execute(
        select(EffortRecord.project_id, EffortRecord.hours, EffortRecord.weight).where(
            EffortRecord.start >= period.start, EffortRecord.start < period.end
        )
    )
    for project, hours, weight in rows:
        if hours is not None and weight is not None:
            sums[project or "(no project)"] += hours * weight
    return sorted(sums.items())


def reservations_in(session: Any, period: Period) -> list[dict[str, Any]]:
    """The scarce slots starting in the period: bids, outcome and multiplier."""
    slots: dict[tuple[str, datetime], dict[str, Any]] = {}
    rows = session.scalars(
        select(SlotReservation)
        .where(SlotReservation.start >= period.start, SlotReservation.start < period.end)
        .order_by(SlotReservation.start, SlotReservation.tool_id, SlotReservation.member)
    )
    for r in rows:
        slot = slots.setdefault(
            (r.tool_id, r.start),
            {
                "tool": r.tool_id,
                "start": r.start,
                "end": r.end,
                "bids": [],
                "winner": None,
                "multiplier": None,
                "cleared_at": r.cleared_at,
            },
        )
        slot["bids"].append(r)
        if r.outcome == "won":
            slot["winner"], slot["multiplier"] = r.member, r.multiplier
    return list(slots.values())


def _render(period_id: int | None) -> Any:
    session = _state().db()
    now = datetime.now(UTC)
    periods = recent_periods(session, now, count=RECENT)
    if period_id is None:
        period = periods[0] if periods else None
    else:
        period = session.get(Period, period_id) if period_id <= MAX_ID else None
        if period is None:
            abort(404, description=f"no period {period_id}")
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
        }
    running = periods[0] if periods and periods[0].closed_at is None else None
    return render_template(
        "period.html",
        period=period,
        periods=periods,
        running=running,
        everyone=everyone,
        close_form=CloseForm(),
        **data,
    )


@bp.get("/periods")
@require_role("member")
def index() -> Any:
    return _render(None)


@bp.get("/periods/<int:period_id>")
@require_role("member")
def show(period_id: int) -> Any:
    return _render(period_id)


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
    flash(f"Closed period {', '.join(str(c.period_id) for c in closed)}.", "ok")
    last = closed[-1].period_id if closed else None
    return redirect(url_for("period.show", period_id=last) if last else url_for("period.index"))
