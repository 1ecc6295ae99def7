"""Period: the current and past accounting periods (docs/periods.md).

Per project, each member's credited, expected and balance (members see their own line
and the totals, coordinators everyone's), what a unit of each resource cost, the scarce
slots' reservations and how they cleared, and charts of tool use per day and effort per
project.  A coordinator may close the running period now.  The numbers come from
:func:`hub.ledger.closing.period_summary`; this module filters and renders them.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from flask import Blueprint, abort, current_app, flash, redirect, render_template, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from markupsafe import Markup
from sqlalchemy import String, func, select, type_coerce
from wtforms import BooleanField
from wtforms.validators import DataRequired

from hub.errors import PeriodError
from hub.ledger.closing import close_period, period_summary, recent_periods
from hub.store.models import EffortRecord, Period, PeriodBalance, SlotReservation, UsageSession
from web.auth import require_role
from web.charts import bars, columns
from web.state import committing

bp = Blueprint("period", __name__)

SIX = Decimal("0.000001")
RECENT = 12  # periods listed on the page
MAX_ID = 2**31 - 1  # periods.id is INTEGER, 32 bits on PostgreSQL: a larger id names nothing


class CloseForm(FlaskForm):
    confirm = BooleanField("Yes, close the running period now", validators=[DataRequired()])


def _state() -> Any:
    return current_app.extensions["peershop"]


def period_or_404(session: Any, period_id: int) -> Period:
    """The period of a URL's id, or a 404 naming it (never a database error for an id
    past INTEGER)."""
    period = session.get(Period, period_id) if 0 <= period_id <= MAX_ID else None
    if period is None:
        abort(404, description=f"no period {period_id}")
    return period


def allocations(session: Any, period: Period, viewer: str | None, everyone: bool) -> dict:
    """:func:`period_summary` with per-project totals; without ``everyone`` only the
    ``viewer``'s own member line is kept (the totals still count everyone)."""
    summary = period_summary(session, period)
    totals: dict[str, dict[str, Decimal]] = defaultdict(
        lambda: {"credited": Decimal(0), "expected": Decimal(0), "balance": Decimal(0)}
    )
    # Exact sums of the stored decimal text, read as Core rows (no ORM object per member).
    rows = session.execute(
        select(
            PeriodBalance.project_id,
            type_coerce(PeriodBalance.credited, String),
            type_coerce(PeriodBalance.expected, String),
            type_coerce(PeriodBalance.balance, String),
        ).where(PeriodBalance.period_id == period.id)
    )
    for project, credited, expected, balance in rows:
        t = totals[project]
        t["credited"] += Decimal(credited)
        t["expected"] += Decimal(expected)
        t["balance"] += Decimal(balance)
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


def unattended_runs(session: Any, period: Period) -> list[dict[str, Any]]:
    """Per tool, the runs started in the period that no one badged for (a printer on a
    smart plug): how many, their hours (an open one so far), busy hours and energy.
    Shown, never charged."""
    rows = session.execute(
        select(
            UsageSession.tool_id,
            UsageSession.start,
            UsageSession.end,
            UsageSession.busy_s,
            UsageSession.wh,
        ).where(
            UsageSession.start >= period.start,
            UsageSession.start < period.end,
            UsageSession.member.is_(None),
        )
    )
    now = datetime.now(UTC)
    sums: dict[str, dict[str, Any]] = {}
    for tool, start, end, busy_s, wh in rows:
        t = sums.setdefault(tool, {"tool": tool, "runs": 0, "hours": 0.0, "busy_hours": 0.0})
        t["runs"] += 1
        t["hours"] += max(((end or now) - start).total_seconds(), 0) / 3600
        t["busy_hours"] += (busy_s or 0) / 3600
        t["kwh"] = t.get("kwh", 0.0) + (wh or 0) / 1000
    return [sums[tool] for tool in sorted(sums)]


def effort_per_project(session: Any, period: Period) -> list[tuple[str, Decimal]]:
    """Weighted hours per project of the effort started in the period."""
    sums: dict[str, Decimal] = defaultdict(Decimal)
    # Counted per distinct (project, hours, weight) in the database: a period has thousands
    # of records but few distinct pairs, and each product is then taken once, exactly.
    hours = type_coerce(EffortRecord.hours, String)
    weight = type_coerce(EffortRecord.weight, String)
    rows = session.execute(
        select(EffortRecord.project_id, hours, weight, func.count())
        .where(
            EffortRecord.start >= period.start,
            EffortRecord.start < period.end,
            EffortRecord.hours.is_not(None),
            EffortRecord.weight.is_not(None),
        )
        .group_by(EffortRecord.project_id, hours, weight)
    )
    for project, h, w, n in rows:
        sums[project or "(no project)"] += Decimal(h) * Decimal(w) * n
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
            "runs": unattended_runs(session, period),
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
