"""Me: my sessions, effort, trainings, badges, balance per period, reservations and bids.

A member asks for a tool's scarce slot here with the highest multiplier they accept
(at least 1), and withdraws a bid before the slot is cleared (:mod:`hub.ledger.reservations`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from flask import Blueprint, abort, current_app, flash, redirect, render_template, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import DateTimeLocalField, DecimalField, SelectChoice, SelectField
from wtforms.validators import DataRequired, NumberRange

from hub.ledger import reservations
from hub.ledger.member_queries import (
    badges_of,
    balance_history,
    member_by_handle,
    scarce_tools,
    trainings_of,
)
from hub.store.record_queries import effort_records, sessions_of
from web.auth import require_role
from web.charts import bars
from web.state import committing

bp = Blueprint("me", __name__)

BALANCE_PERIODS = 24  # periods on the balance chart
RESERVATIONS_SINCE = timedelta(days=31)


class ReserveForm(FlaskForm):
    tool = SelectField("Tool", validators=[DataRequired()])
    start = DateTimeLocalField("Slot start (shop time)", validators=[DataRequired()])
    max = DecimalField(
        "Highest multiplier you accept",
        default=Decimal(1),
        validators=[DataRequired(), NumberRange(min=Decimal(1), max=Decimal(100))],
    )


class ActionForm(FlaskForm):
    """A button that changes something: only its CSRF token."""


def _db() -> Any:
    return current_app.extensions["peershop"].db()


def _reserve_form(session: Any) -> ReserveForm:
    form = ReserveForm(prefix="reserve")
    form.tool.choices = [SelectChoice(t.id, t.name) for t in scarce_tools(session)]
    return form


@bp.get("/me")
@require_role("member")
def index(form: ReserveForm | None = None, status: int = 200) -> Any:
    session = _db()
    handle = current_user.handle
    member = member_by_handle(session, handle)
    if member is None:  # an API token, not a person
        return render_template("error.html", status=404, message="No member here."), 404
    sessions = sessions_of(session, handle)
    effort = effort_records(session, limit=50, member=handle)
    trainings = trainings_of(session, member.id)
    badges = badges_of(session, member.id)
    balances = balance_history(session, handle, BALANCE_PERIODS)
    chart = bars(
        [(f"period {b['id']}", b["balance"]) for b in balances], label="my balance per period"
    )
    mine = reservations.reservations_of(session, handle, datetime.now(UTC) - RESERVATIONS_SINCE)
    return render_template(
        "me.html",
        member=member,
        sessions=sessions,
        effort=effort,
        trainings=trainings,
        badges=badges,
        balances=balances,
        balance_chart=chart,
        reservations=mine,
        scarce=scarce_tools(session),
        reserve=form or _reserve_form(session),
        action=ActionForm(),
    ), status


@bp.post("/me/reservations")
@require_role("member")
def reserve() -> Any:
    state = current_app.extensions["peershop"]
    session = state.db()
    form = _reserve_form(session)
    if not form.validate_on_submit():
        if form.csrf_token.errors:
            abort(400, description="the form expired; reload the page")
        flash("Choose a tool, a slot start and a multiplier of at least 1.", "error")
        return index(form, 400)
    handle = current_user.handle
    if handle is None:
        abort(403, description="this token belongs to no member")
    start = form.start.data.replace(tzinfo=state.cfg.site.timezone).astimezone(UTC)
    try:
        with committing(session):
            reservations.reserve(
                session,
                state.cfg,
                handle,
                form.tool.data,
                start,
                form.max.data,
                datetime.now(UTC),
            )
    except reservations.ReservationError as exc:
        flash(str(exc), "error")
        return index(form, 400)
    flash(f"Bid placed for {form.tool.data} at {form.start.data:%Y-%m-%d %H:%M}.", "ok")
    return redirect(url_for("me.index"))


@bp.post("/me/reservations/<int:reservation_id>/cancel")
@require_role("member")
def cancel(reservation_id: int) -> Any:
    if not ActionForm().validate_on_submit():
        abort(400, description="the form expired; reload the page")
    handle = current_user.handle
    if handle is None:
        abort(403, description="this token belongs to no member")
    session = _db()
    try:
        with committing(session):
            reservations.cancel(session, reservation_id, handle, datetime.now(UTC))
    except reservations.ReservationError as exc:
        flash(str(exc), "error")
    else:
        flash("Bid withdrawn.", "ok")
    return redirect(url_for("me.index"))
