"""Admin (coordinators): members and badges, devices, tool locks, API tokens."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, abort, current_app, flash, redirect, render_template, url_for
from flask_wtf import FlaskForm
from sqlalchemy import func, select
from wtforms import PasswordField, SelectChoice, SelectField, StringField
from wtforms.validators import DataRequired, Length

from hub.enrol import EnrolError, enrol_last_unknown, unknown_badges
from hub.models import ApiToken, BadgeDecision, Device, Member, Tool
from hub.shop_store import bump_shop_version
from web.auth import ROLES, create_token, require_role, set_password, set_pin
from web.state import committing as _write

bp = Blueprint("admin", __name__, url_prefix="/admin")


class ActionForm(FlaskForm):
    """A button that changes something: only its CSRF token."""


class AssignForm(FlaskForm):
    reader = SelectField("Reader", validators=[DataRequired()])
    member = SelectField("Member", validators=[DataRequired()])


class SecretForm(FlaskForm):
    member = SelectField("Member", validators=[DataRequired()])
    kind = SelectField("Set", choices=[SelectChoice("password"), SelectChoice("pin", "kiosk PIN")])
    secret = PasswordField("New value", validators=[DataRequired(), Length(min=4, max=200)])


class TokenForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=100)])
    role = SelectField("Role", choices=[SelectChoice(r) for r in ROLES])
    member = SelectField("For member (member and trainer tokens)")


def _db() -> Any:
    return current_app.extensions["peershop"].db()


def _readers(session: Any) -> list[str]:
    """Readers where a card that belongs to nobody was tapped, latest first."""
    rows = session.execute(
        select(BadgeDecision.device_id, func.max(BadgeDecision.id).label("last"))
        .where(BadgeDecision.member.is_(None))
        .group_by(BadgeDecision.device_id)
        .order_by(func.max(BadgeDecision.id).desc())
        .limit(20)
    )
    return [device for device, _ in rows]


def _forms(session: Any) -> dict[str, Any]:
    members = [
        SelectChoice(m.handle, f"{m.name} (@{m.handle})")
        for m in session.scalars(select(Member).order_by(Member.handle))
    ]
    assign, secret, token = (
        AssignForm(prefix="assign"),
        SecretForm(prefix="secret"),
        TokenForm(prefix="token"),
    )
    assign.reader.choices = [SelectChoice(r) for r in _readers(session)]
    assign.member.choices = members
    secret.member.choices = members
    token.member.choices = [SelectChoice("", "none"), *members]
    return {"assign": assign, "secret": secret, "token": token}


def _page(**extra: Any) -> Any:
    session = _db()
    readers = _readers(session)
    unknown = {r: unknown_badges(session, r, limit=3) for r in readers}
    members = session.scalars(select(Member).order_by(Member.handle)).all()
    return render_template(
        "admin/index.html",
        members=members,
        unknown=unknown,
        devices=session.scalars(
            select(Device).order_by(Device.approval != "pending", Device.id)
        ).all(),
        tools=session.scalars(select(Tool).order_by(Tool.id)).all(),
        tokens=session.scalars(select(ApiToken).order_by(ApiToken.id)).all(),
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
        flash(f"Badge {badge.uid} now belongs to @{form.member.data}.", "ok")
    return redirect(url_for("admin.index"))


@bp.post("/members/secret")
@require_role("coordinator")
def member_secret() -> Any:
    session = _db()
    form = _forms(session)["secret"]
    if not form.validate_on_submit():
        flash("Choose a member and give at least 4 characters.", "error")
        return redirect(url_for("admin.index"))
    with _write(session):
        member = session.scalar(select(Member).where(Member.handle == form.member.data))
        if member is None:
            abort(404)
        (set_pin if form.kind.data == "pin" else set_password)(session, member, form.secret.data)
    flash(f"{form.kind.data} of @{member.handle} set.", "ok")
    return redirect(url_for("admin.index"))


@bp.post("/devices/<device_id>/approve")
@require_role("coordinator")
def approve_device(device_id: str) -> Any:
    session = _db()
    if not ActionForm().validate_on_submit():
        abort(400, description="the form expired; reload the page")
    with _write(session):
        device = session.get(Device, device_id)
        if device is None:
            abort(404, description=f"no device {device_id}")
        if device.approval != "pending":
            flash(f"{device_id} is {device.approval}, not pending.", "error")
            return redirect(url_for("admin.index"))
        device.approval = "approved"
    flash(f"Device {device_id} approved.", "ok")
    return redirect(url_for("admin.index"))


@bp.post("/tools/<tool_id>/<any(lock, unlock):action>")
@require_role("coordinator")
def lock_tool(tool_id: str, action: str) -> Any:
    session = _db()
    if not ActionForm().validate_on_submit():
        abort(400, description="the form expired; reload the page")
    with _write(session):
        tool = session.get(Tool, tool_id)
        if tool is None:
            abort(404, description=f"no tool {tool_id}")
        tool.locked = action == "lock"
        bump_shop_version(session)
    hub = current_app.extensions["peershop"].hub
    if hub is not None:
        hub.reload()  # the tool hears it now, not at the next version check
    flash(f"{tool.name} {action}ed.", "ok")
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
    return _page(new_token=token, new_token_name=form.name.data)


@bp.post("/tokens/<int:token_id>/revoke")
@require_role("coordinator")
def revoke_token(token_id: int) -> Any:
    session = _db()
    if not ActionForm().validate_on_submit():
        abort(400, description="the form expired; reload the page")
    with _write(session):
        row = session.get(ApiToken, token_id)
        if row is None:
            abort(404, description="no such token")
        row.revoked_at = row.revoked_at or datetime.now(UTC)
    flash(f"Token {row.name} revoked.", "ok")
    return redirect(url_for("admin.index"))
