"""Admin (coordinators): members and badges, tools and their policies, trainings,
devices, tool locks, API tokens; links to the task board's pins and the period close.

Tool settings and training grants changed here are overrides of the shop file: a later
``peershop load`` keeps them and reports them (hub/store/overrides.py, hub/shopfile/tool_admin.py).
Every change is written to the ``peershop.audit`` log with the coordinator's handle.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from typing import Any

from flask import Blueprint, abort, current_app, flash, redirect, render_template, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import BooleanField, PasswordField, SelectChoice, SelectField, StringField
from wtforms.validators import DataRequired, Length

from hub.admin import admin_queries, credentials
from hub.admin.enrol import EnrolError, enrol_last_unknown, unknown_badges
from hub.errors import CredentialError, ToolEditError
from hub.rules.sessions import POLICIES
from hub.shopfile.tool_admin import (
    edit_tool,
    end_grant_override,
    end_override,
    find_tool,
    form_values,
    grant_training,
    granting_member,
    holders,
    revoke_training,
    set_lock,
    shown,
    stored,
)
from hub.store import record_queries
from hub.store.overrides import tool_overrides
from web.auth import (
    PASSWORD_MAX,
    ROLES,
    SecretRuleError,
    create_token,
    require_role,
    revoke_api_token,
    set_secret_of,
)
from web.state import committing as _write

bp = Blueprint("admin", __name__, url_prefix="/admin")
audit = logging.getLogger("peershop.audit")


def _audit(lines: list[str]) -> None:
    """One log line per change, with who made it (a member, or a coordinator token)."""
    who = f"@{current_user.handle}" if current_user.handle else current_user.name
    for line in lines:
        audit.info("admin %s: %s", who, line)


def _reload() -> None:
    """Tell a running hub in this process at once, not at its next version check."""
    hub = current_app.extensions["peershop"].hub
    if hub is not None:
        hub.reload()


class ActionForm(FlaskForm):
    """A button that changes something: only its CSRF token."""


class AssignForm(FlaskForm):
    reader = SelectField("Reader", validators=[DataRequired()])
    member = SelectField("Member", validators=[DataRequired()])


class SecretForm(FlaskForm):
    member = SelectField("Member", validators=[DataRequired()])
    kind = SelectField("Set", choices=[SelectChoice("password"), SelectChoice("pin", "kiosk PIN")])
    # the rule itself (length, digits) is web.auth's, the same as the CLI's
    secret = PasswordField("New value", validators=[DataRequired(), Length(max=PASSWORD_MAX)])


class TokenForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=100)])
    role = SelectField("Role", choices=[SelectChoice(r) for r in ROLES])
    member = SelectField("For member (member and trainer tokens)")


def _text(label: str, description: str = "") -> StringField:
    return StringField(label, validators=[Length(max=200)], description=description)


class ToolForm(FlaskForm):
    """A tool's access and session settings; the hub checks them (hub/shopfile/tool_admin.py)
    with the shop file's parser, so choices are not checked here."""

    policy = SelectField(
        "Policy", choices=[SelectChoice(p) for p in POLICIES], validate_choice=False
    )
    training = SelectField("Required training", validate_choice=False)
    off_w = _text("Off below (W)")
    idle_w = _text("Activity above (W)", "blank: the off threshold")
    busy_w = _text("Busy from (W)")
    hysteresis_w = _text("Hysteresis (W)")
    idle_timeout = _text("Idle timeout", "such as 15m; blank: none (needed by timeout)")
    max_duration = _text("Longest session", "such as 4h; blank: 12h")
    hours = _text("Opening hours", "such as Mon-Fri 17:00-22:00; Sat 10:00-18:00; blank: always")
    enforce = BooleanField("Enforce reservations in scarce slots")
    no_cut_while_busy = BooleanField("Never cut the power while busy")
    end_on_stop = BooleanField("Switching off ends the session")


# The form's fields by the setting they edit, named as in the shop file.
TOOL_FIELDS = {
    "policy": "policy",
    "training": "training",
    "off_w": "power.off_w",
    "idle_w": "power.idle_w",
    "busy_w": "power.busy_w",
    "hysteresis_w": "power.hysteresis_w",
    "idle_timeout": "power.idle_timeout",
    "max_duration": "power.max_duration",
    "hours": "hours",
    "enforce": "scarce.enforce",
    "no_cut_while_busy": "no_cut_while_busy",
    "end_on_stop": "end_on_stop",
}


class GrantForm(FlaskForm):
    training = SelectField("Training", validators=[DataRequired()], validate_choice=False)
    member = SelectField("Member", validators=[DataRequired()], validate_choice=False)
    expires = StringField(
        "Valid through",
        validators=[Length(max=10)],
        description="a date such as 2027-06-30 (UTC); blank: never expires",
    )


def _db() -> Any:
    return current_app.extensions["peershop"].db()


# The empty first choice of a required list (HTML wants one): nothing is picked by default.
CHOOSE_MEMBER = SelectChoice("", "Choose a member")


def _forms(session: Any) -> dict[str, Any]:
    members = [
        SelectChoice(m.handle, f"{m.name} (@{m.handle})") for m in admin_queries.members(session)
    ]
    assign, secret, token = (
        AssignForm(prefix="assign"),
        SecretForm(prefix="secret"),
        TokenForm(prefix="token"),
    )
    assign.reader.choices = [SelectChoice(r) for r in admin_queries.unknown_card_readers(session)]
    # who gets a card or a password is chosen on purpose, not left at the first name
    assign.member.choices = [CHOOSE_MEMBER, *members]
    secret.member.choices = [CHOOSE_MEMBER, *members]
    token.member.choices = [SelectChoice("", "none"), *members]
    return {"assign": assign, "secret": secret, "token": token}


def _page(**extra: Any) -> Any:
    session = _db()
    readers = admin_queries.unknown_card_readers(session)
    unknown = {r: unknown_badges(session, r, limit=3) for r in readers}
    tools = admin_queries.tools(session)
    return render_template(
        "admin/index.html",
        members=admin_queries.members(session),
        unknown=unknown,
        devices=record_queries.devices(session, pending_first=True),
        tools=tools,
        overridden={t.id: t.overridden for t in tools},
        trainings=admin_queries.trainings(session),
        tokens=admin_queries.tokens(session),
        action=ActionForm(),
        **_forms(session),
        **extra,
    )


@bp.get("/")
@require_role("coordinator")
def index() -> Any:
    return _page()


@bp.post("/badges/assign")
@require_role("coordinator")
def assign_badge() -> Any:
    session = _db()
    form = _forms(session)["assign"]
    if not form.validate_on_submit():
        flash("Choose a reader where an unknown card was tapped, and a member.", "error")
        return redirect(url_for("admin.index"))
    try:
        with _write(session):
            badge = enrol_last_unknown(session, form.reader.data, form.member.data)
    except EnrolError as exc:
        flash(str(exc), "error")
    else:
        _audit([f"+ badge {badge.uid} -> {form.member.data} (last unknown at {form.reader.data})"])
        flash(f"Badge {badge.uid} now belongs to @{form.member.data}.", "ok")
    return redirect(url_for("admin.index"))


@bp.post("/members/secret")
@require_role("coordinator")
def member_secret() -> Any:
    session = _db()
    form = _forms(session)["secret"]
    if not form.validate_on_submit():
        flash("Choose a member and give the new password or PIN.", "error")
        return redirect(url_for("admin.index"))
    handle = form.member.data
    try:
        with _write(session):
            ended = set_secret_of(session, handle, form.kind.data, form.secret.data)
            if ended is None:
                abort(404)
    except SecretRuleError as exc:
        flash(f"Not set: {exc}.", "error")
        return redirect(url_for("admin.index"))
    # the member's logins end: whoever knew the old secret is logged out too
    _audit([f"~ member {handle}: {form.kind.data} set, {ended} login(s) ended"])
    flash(f"{form.kind.data} of @{handle} set; their logins ({ended}) ended.", "ok")
    return redirect(url_for("admin.index"))


@bp.post("/devices/<device_id>/approve")
@require_role("coordinator")
def approve_device(device_id: str) -> Any:
    session = _db()
    if not ActionForm().validate_on_submit():
        abort(400, description="the form expired; reload the page")
    try:
        with _write(session):
            before = credentials.approve_device(session, device_id)
    except CredentialError as exc:
        abort(404, description=str(exc))
    if before != "pending":
        flash(f"{device_id} is {before}, not pending.", "error")
        return redirect(url_for("admin.index"))
    _audit([f"~ device {device_id}: pending -> approved"])
    flash(f"Device {device_id} approved.", "ok")
    return redirect(url_for("admin.index"))


@bp.post("/tools/<tool_id>/<any(lock, unlock):action>")
@require_role("coordinator")
def lock_tool(tool_id: str, action: str) -> Any:
    session = _db()
    if not ActionForm().validate_on_submit():
        abort(400, description="the form expired; reload the page")
    try:
        with _write(session):
            name = set_lock(session, tool_id, action == "lock")
    except ToolEditError:
        abort(404, description=f"no tool {tool_id}")
    _audit([f"~ tool {tool_id}: {action}ed"])
    _reload()  # the tool hears it now, not at the next version check
    flash(f"{name} {action}ed.", "ok")
    return redirect(url_for("admin.index"))


@bp.post("/tokens")
@require_role("coordinator")
def new_token() -> Any:
    session = _db()
    form = _forms(session)["token"]
    if not form.validate_on_submit():
        flash("Give the token a name.", "error")
        return redirect(url_for("admin.index"))
    member = form.member.data or None
    if form.role.data != "coordinator" and member is None:
        flash("A member or trainer token reads one member's records: choose the member.", "error")
        return redirect(url_for("admin.index"))
    with _write(session):
        token = create_token(session, form.name.data, form.role.data, member)
    _audit([f"+ token {form.name.data} ({form.role.data}{', ' + member if member else ''})"])
    return _page(new_token=token, new_token_name=form.name.data)


@bp.post("/tokens/<int:token_id>/revoke")
@require_role("coordinator")
def revoke_token(token_id: int) -> Any:
    session = _db()
    if not ActionForm().validate_on_submit():
        abort(400, description="the form expired; reload the page")
    with _write(session):
        name = revoke_api_token(session, token_id, datetime.now(UTC))
        if name is None:
            abort(404, description="no such token")
    _audit([f"- token {name} (revoked)"])
    flash(f"Token {name} revoked.", "ok")
    return redirect(url_for("admin.index"))


# --- tools and their policies -------------------------------------------------------------


def _tool_or_404(session: Any, tool_id: str) -> Any:
    tool = find_tool(session, tool_id)
    if tool is None:
        abort(404, description=f"no tool {tool_id}")
    return tool


def _tool_page(tool: Any, form: ToolForm, errors: dict[str, str], status: int = 200) -> Any:
    session = _db()
    form.training.choices = [
        SelectChoice("", "none (anyone)"),
        *(SelectChoice(t.id, f"{t.name} ({t.id})") for t in admin_queries.trainings(session)),
    ]
    for name, setting in TOOL_FIELDS.items():
        if setting in errors:
            getattr(form, name).errors = [errors[setting]]
    known = set(TOOL_FIELDS.values())
    overrides = [
        (
            setting,
            o,
            shown(setting, stored(tool, setting)),
            "file" in o and shown(setting, o["file"]),
        )
        for setting, o in sorted(tool_overrides(tool).items())
    ]
    return (
        render_template(
            "admin/tool.html",
            tool=tool,
            form=form,
            general=[v for k, v in errors.items() if k not in known],
            overrides=overrides,
            action=ActionForm(),
        ),
        status,
    )


@bp.get("/tools/<tool_id>")
@require_role("coordinator")
def tool_page(tool_id: str) -> Any:
    tool = _tool_or_404(_db(), tool_id)
    values = form_values(tool)
    form = ToolForm(data={name: values[setting] for name, setting in TOOL_FIELDS.items()})
    return _tool_page(tool, form, {})


@bp.post("/tools/<tool_id>")
@require_role("coordinator")
def tool_save(tool_id: str) -> Any:
    session = _db()
    tool = _tool_or_404(session, tool_id)
    form = ToolForm()
    if not form.validate_on_submit():
        errors = {TOOL_FIELDS[k]: v[0] for k, v in form.errors.items() if k in TOOL_FIELDS}
        return _tool_page(tool, form, errors or {"tool": "the form expired; reload"}, 400)
    values = {setting: getattr(form, name).data for name, setting in TOOL_FIELDS.items()}
    by = current_user.handle or current_user.name
    try:
        with _write(session):
            changes = edit_tool(session, tool_id, values, by)
    except ToolEditError as exc:
        return _tool_page(_tool_or_404(session, tool_id), form, exc.problems, 400)
    _audit(changes)
    if changes:
        _reload()
        flash(f"{tool.name}: " + "; ".join(c.split(": ", 1)[1] for c in changes), "ok")
    else:
        flash(f"{tool.name}: nothing changed.", "ok")
    return redirect(url_for("admin.tool_page", tool_id=tool_id))


@bp.post("/tools/<tool_id>/overrides/<setting>/end")
@require_role("coordinator")
def tool_override_end(tool_id: str, setting: str) -> Any:
    session = _db()
    if not ActionForm().validate_on_submit():
        abort(400, description="the form expired; reload the page")
    _tool_or_404(session, tool_id)
    try:
        with _write(session):
            changes = end_override(session, tool_id, setting)
    except ToolEditError as exc:
        abort(404, description=str(exc))
    _audit(changes)
    _reload()
    flash(f"{setting} of {tool_id} follows the shop file again.", "ok")
    return redirect(url_for("admin.tool_page", tool_id=tool_id))


# --- trainings --------------------------------------------------------------------------------


def _grant_form(session: Any, form: GrantForm | None = None) -> GrantForm:
    form = form or GrantForm(prefix="grant")
    form.training.choices = [
        SelectChoice("", "Choose a training"),
        *(SelectChoice(t.id, f"{t.name} ({t.id})") for t in admin_queries.trainings(session)),
    ]
    form.member.choices = [
        CHOOSE_MEMBER,
        *(
            SelectChoice(m.handle, f"{m.name} (@{m.handle})")
            for m in admin_queries.members(session)
        ),
    ]
    return form


def _trainings_page(form: GrantForm | None = None, status: int = 200) -> Any:
    session = _db()
    now = datetime.now(UTC)
    by_training: dict[str, list[Any]] = {}
    for h in holders(session):
        by_training.setdefault(h.training, []).append(h)
    return (
        render_template(
            "admin/trainings.html",
            trainings=admin_queries.trainings(session),
            holders=by_training,
            now=now,
            form=_grant_form(session, form),
            action=ActionForm(),
        ),
        status,
    )


def _coordinator(session: Any) -> Any:
    """The member who grants: a coordinator token belongs to nobody, so it cannot."""
    member = granting_member(session, current_user.member_id)
    if member is None:
        abort(403, description="a training is granted by a member: log in as one")
    return member


def _expiry(text: str | None) -> datetime | None:
    """A date D means valid through D (UTC), as in the shop file."""
    if not text or not text.strip():
        return None
    day = date.fromisoformat(text.strip())
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)


@bp.get("/trainings")
@require_role("coordinator")
def trainings() -> Any:
    return _trainings_page()


@bp.post("/trainings/grant")
@require_role("coordinator")
def training_grant() -> Any:
    session = _db()
    form = _grant_form(session, GrantForm(prefix="grant"))
    if not form.validate_on_submit():
        return _trainings_page(form, 400)
    try:
        expires = _expiry(form.expires.data)
    except ValueError:
        form.expires.errors = ["give a date such as 2027-06-30, or leave it blank"]
        return _trainings_page(form, 400)
    try:
        with _write(session):
            changes = grant_training(
                session, form.training.data, form.member.data, _coordinator(session), expires
            )
    except ToolEditError as exc:
        for name, reason in exc.problems.items():
            getattr(form, name).errors = [reason]
        return _trainings_page(form, 400)
    _audit(changes)
    _reload()
    flash(changes[0], "ok")
    return redirect(url_for("admin.trainings"))


@bp.post("/trainings/<training>/<handle>/<any(revoke, release):action>")
@require_role("coordinator")
def training_change(training: str, handle: str, action: str) -> Any:
    session = _db()
    if not ActionForm().validate_on_submit():
        abort(400, description="the form expired; reload the page")
    try:
        with _write(session):
            if action == "revoke":
                changes = revoke_training(session, training, handle, _coordinator(session))
            else:
                changes = end_grant_override(session, training, handle)
    except ToolEditError as exc:
        abort(404, description=str(exc))
    _audit(changes)
    _reload()
    flash(changes[0], "ok")
    return redirect(url_for("admin.trainings"))
