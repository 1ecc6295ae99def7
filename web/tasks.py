"""Tasks: the stigmergic board (docs/sharing-models.md "Hint").

Open tasks in the order :func:`hub.ledger.taskboard.board` gives them (wanted, heavy and
neglected tasks first), each with its weight, slots left and a weight-history chart.
Members want, claim, give back and finish tasks and propose new ones; coordinators pin
or unpin a weight and open or retire tasks.  Big claims waiting for a confirmation are
listed with a Confirm button for those who may (a coordinator, a member who was there)
and a Reject button for coordinators.  Every change goes through
:mod:`hub.ledger.taskboard`; this module only renders and routes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from flask import Blueprint, abort, current_app, flash, redirect, render_template, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from markupsafe import Markup
from wtforms import DecimalField, IntegerField, SelectChoice, SelectField, StringField
from wtforms.validators import DataRequired, Length, NumberRange, Optional

from hub.ledger import board_queries, taskboard
from web.auth import require_role
from web.charts import sparkline
from web.state import committing

bp = Blueprint("tasks", __name__)

MAX_HOURS = Decimal(1000)
HISTORY = 12  # closed periods on a task's weight chart


class ActionForm(FlaskForm):
    """A button that changes something: only its CSRF token."""


class DoneForm(FlaskForm):
    hours = DecimalField(
        "Hours", validators=[Optional(), NumberRange(min=Decimal("0.01"), max=MAX_HOURS)]
    )


class ProposeForm(FlaskForm):
    title = StringField("Title", validators=[DataRequired(), Length(max=300)])
    project = SelectField("Project")
    hours = DecimalField(
        "Hours", default=Decimal(1), validators=[NumberRange(min=Decimal("0.01"), max=MAX_HOURS)]
    )
    slots = IntegerField("Slots", default=1, validators=[NumberRange(min=1, max=50)])


class PinForm(FlaskForm):
    weight = DecimalField("Weight", validators=[DataRequired()])


def _state() -> Any:
    return current_app.extensions["peershop"]


def _me() -> str:
    """The member acting: a token of no member cannot want, claim or propose."""
    handle = current_user.handle
    if handle is None:
        abort(403, description="this token belongs to no member")
    return handle


def weight_history(session: Any) -> dict[str, tuple[float, ...]]:
    """Each task's weight in the last :data:`HISTORY` closed periods, oldest first.

    A closed period never changes (hub/ledger/periods.py refuses), so the rows are read once
    per set of recent closed periods and kept by the app until another period closes;
    a view then costs one query of at most :data:`HISTORY` rows.  The weights are floats:
    they only draw a chart.
    """
    recent = board_queries.recent_closed_periods(session, HISTORY)
    state = _state()
    cached = state.weight_history
    if cached is not None and cached[0] == recent:
        return cached[1]
    table = board_queries.weights_in(session, [p for p, _ in recent])
    state.weight_history = (recent, table)
    return table


def _propose_form(session: Any) -> ProposeForm:
    form = ProposeForm(prefix="propose")
    projects = board_queries.project_choices(session)
    form.project.choices = [SelectChoice("", "none"), *(SelectChoice(p, n) for p, n in projects)]
    return form


def _board() -> dict[str, Any]:
    """What the board and the proposed list show: the page and its live fragment."""
    state = _state()
    session = state.db()
    now = datetime.now(UTC)
    with committing(session):  # board() creates the running period if none is stored yet
        entries = taskboard.board(session, now, state.cfg)
    proposed = board_queries.proposed_tasks(session)
    handle = current_user.handle
    mine = set()
    if handle is not None:
        mine = board_queries.wanted_by(session, handle)
    history = weight_history(session)
    charts = {
        e.task: sparkline([*history.get(e.task, ()), e.weight], label=f"weight of {e.title}")
        for e in entries
    }
    coordinator = current_user.is_coordinator
    pending = taskboard.pending_claims(session)
    waiting: dict[str, int] = defaultdict(int)
    for view in pending:
        waiting[view.task] += 1
    return {
        "entries": entries,
        "proposed": proposed,
        "wanted": mine,
        "charts": charts,
        "action": ActionForm(),
        "pending": pending,
        "waiting": waiting,  # pending claims per task, for the task's row
        "confirmable": {
            v.id for v in pending if taskboard.may_confirm(session, v, handle, coordinator)
        },
        # looked up once: 300 rows asking the user proxy cost more than the rows
        "me": handle,
        "coordinator": coordinator,
    }


def _page(form: ProposeForm | None = None, status: int = 200) -> Any:
    session = _state().db()
    # Rendered to a string first: included, its thousands of pieces would each be passed
    # up through the page's and the base template's generators.
    board = Markup(render_template("_board.html", **_board()))
    return (
        render_template("tasks.html", board=board, propose=form or _propose_form(session)),
        status,
    )


@bp.get("/tasks")
@require_role("member")
def index() -> Any:
    return _page()


@bp.get("/tasks/board")
@require_role("member")
def board_fragment() -> Any:
    """The board and the proposed list alone: what an open page fetches on a change."""
    return render_template("_board.html", **_board())


def _act(task_id: str, change: Any, done_message: str | Callable[[Any], str]) -> Any:
    """Run one board change in a transaction; a refused change is a flash, not an error.
    ``done_message`` may be a function of what the change returned."""
    session = _state().db()
    if not board_queries.task_exists(session, task_id):
        abort(404, description=f"no task {task_id}")
    try:
        with committing(session):
            result = change(session)
            message = done_message if isinstance(done_message, str) else done_message(result)
    except taskboard.TaskBoardError as exc:
        flash(str(exc), "error")
    else:
        _state().changed()
        flash(message, "ok")
    return redirect(url_for("tasks.index"))


def _claim_of(task_id: str, claim_id: int) -> None:
    """404 unless ``claim_id`` is a claim of ``task_id``."""
    try:
        found = taskboard.claim_view(_state().db(), claim_id).task == task_id
    except taskboard.TaskBoardError:
        found = False
    if not found:
        abort(404, description=f"no claim {claim_id} of task {task_id}")


@bp.post("/tasks/<task_id>/<any(want, unwant, claim, unclaim):action>")
@require_role("member")
def member_action(task_id: str, action: str) -> Any:
    if not ActionForm().validate_on_submit():
        abort(400, description="the form expired; reload the page")
    me, now, cfg = _me(), datetime.now(UTC), _state().cfg
    changes = {
        "want": (lambda s: taskboard.want(s, me, task_id, now), "Marked: you want it done."),
        "unwant": (lambda s: taskboard.unwant(s, me, task_id), "Hint taken back."),
        "claim": (
            lambda s: taskboard.claim(s, me, task_id, now, cfg),
            "Claimed: the slot is yours this period.",
        ),
        "unclaim": (lambda s: taskboard.unclaim(s, me, task_id), "Slot given back."),
    }
    change, message = changes[action]
    return _act(task_id, change, message)


@bp.post("/tasks/<task_id>/done")
@require_role("member")
def mark_done(task_id: str) -> Any:
    form = DoneForm(prefix="done")
    if not form.validate_on_submit():
        if form.csrf_token.errors:
            abort(400, description="the form expired; reload the page")
        flash("Hours must be a positive number.", "error")
        return redirect(url_for("tasks.index"))
    me, now, cfg = _me(), datetime.now(UTC), _state().cfg
    hours = form.hours.data

    def done(session: Any) -> taskboard.ClaimView:
        return taskboard.claim_of(session, taskboard.done(session, me, task_id, now, hours, cfg))

    def message(view: taskboard.ClaimView) -> str:
        if view.status == taskboard.ClaimStatus.PENDING:
            return (
                f"Done: {view.credited_hours} h (the posted hours) count now; the other "
                f"{view.hours - view.credited_hours} h count once a coordinator, or someone "
                "who was there, confirms them."
            )
        return "Done: your effort is recorded at the weight you claimed it at."

    return _act(task_id, done, message)


@bp.post("/tasks/<task_id>/claims/<int:claim_id>/confirm")
@require_role("member")
def confirm(task_id: str, claim_id: int) -> Any:
    """Confirm a big claim: as a coordinator, or as a member who was there."""
    if not ActionForm().validate_on_submit():
        abort(400, description="the form expired; reload the page")
    _claim_of(task_id, claim_id)
    me, now, cfg = _me(), datetime.now(UTC), _state().cfg
    coordinator = current_user.is_coordinator
    return _act(
        task_id,
        lambda s: taskboard.confirm(s, claim_id, me, now, cfg, coordinator=coordinator),
        "Confirmed: the hours count as reported once enough have confirmed.",
    )


@bp.post("/tasks/<task_id>/claims/<int:claim_id>/reject")
@require_role("coordinator")
def reject(task_id: str, claim_id: int) -> Any:
    """Reject a big claim: it stays at the task's posted hours."""
    if not ActionForm().validate_on_submit():
        abort(400, description="the form expired; reload the page")
    _claim_of(task_id, claim_id)
    me, now = _me(), datetime.now(UTC)
    return _act(
        task_id,
        lambda s: taskboard.reject(s, claim_id, me, now),
        "Rejected: the claim counts the task's posted hours.",
    )


@bp.post("/tasks/propose")
@require_role("member")
def propose() -> Any:
    session = _state().db()
    form = _propose_form(session)
    if not form.validate_on_submit():
        if form.csrf_token.errors:
            abort(400, description="the form expired; reload the page")
        flash("Give a title, positive hours and at least one slot.", "error")
        return _page(form, 400)
    me = _me()
    try:
        with committing(session):
            task = taskboard.propose(
                session,
                me,
                form.title.data,
                form.project.data or None,
                form.hours.data,
                datetime.now(UTC),
                slots=form.slots.data,
            )
    except taskboard.TaskBoardError as exc:
        flash(str(exc), "error")
        return _page(form, 400)
    _state().changed()
    flash(f"Proposed: {task.title}. A coordinator opens it.", "ok")
    return redirect(url_for("tasks.index"))


@bp.post("/tasks/<task_id>/pin")
@require_role("coordinator")
def pin(task_id: str) -> Any:
    form = PinForm(prefix="pin")
    if not form.validate_on_submit():
        if form.csrf_token.errors:
            abort(400, description="the form expired; reload the page")
        flash("Give the weight to pin.", "error")
        return redirect(url_for("tasks.index"))
    weight = form.weight.data
    return _act(task_id, lambda s: taskboard.pin(s, task_id, weight), f"Weight pinned at {weight}.")


@bp.post("/tasks/<task_id>/unpin")
@require_role("coordinator")
def unpin(task_id: str) -> Any:
    if not ActionForm().validate_on_submit():
        abort(400, description="the form expired; reload the page")
    return _act(
        task_id, lambda s: taskboard.pin(s, task_id, None), "Unpinned: the weight moves at close."
    )


@bp.post("/tasks/<task_id>/status/<any(open, retired):status>")
@require_role("coordinator")
def set_status(task_id: str, status: str) -> Any:
    if not ActionForm().validate_on_submit():
        abort(400, description="the form expired; reload the page")
    now = datetime.now(UTC)
    return _act(
        task_id,
        lambda s: taskboard.set_status(s, task_id, status, now),
        "Opened: it is on the board." if status == "open" else "Retired.",
    )
