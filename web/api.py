"""The JSON API of docs/http-api.md.

Public: ``/hub``, ``/tools`` (member names only for logged-in clients and kiosks),
``/devices``.  Personal data (``/presence``, ``/sessions``, ``/effort``) needs a login
or a bearer token: a member sees their own records, a coordinator everyone's.  The task
board (``/tasks``) and the periods (``/periods``) need one too; a member's allocations
show their own line and the totals.  Claiming, finishing and wanting a task, and
confirming a big claim, act as the token's or the session's member (a browser session
also sends its CSRF token); rejecting one needs a coordinator.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from flask import Blueprint, abort, current_app, jsonify, request
from flask_login import current_user

from hub import __version__
from hub.contract.allowlist import public_key_b64
from hub.ledger import board_queries, taskboard
from hub.ledger.period_queries import newest_periods
from hub.store import record_queries
from web.auth import can_see_names, require_role
from web.errors import api_error
from web.openapi import openapi_document
from web.period import allocations, period_or_404
from web.state import committing, iso
from web.views import presence

bp = Blueprint("api", __name__, url_prefix="/api/v1")

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
SIX = Decimal("0.000001")


def _state() -> Any:
    return current_app.extensions["peershop"]


# --- query parameters ------------------------------------------------------------------


def _instant(name: str) -> datetime | None:
    text = request.args.get(name)
    if text is None or text == "":
        return None
    try:
        if text.isdigit():
            return datetime.fromtimestamp(int(text), UTC)
        at = datetime.fromisoformat(text.replace("z", "Z"))
    except (ValueError, OverflowError, OSError):
        abort(400, description=f"{name} must be an ISO 8601 instant or Unix seconds")
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _limit() -> int:
    text = request.args.get("limit", str(DEFAULT_LIMIT))
    try:
        value = int(text)
    except ValueError:
        abort(400, description="limit must be an integer")
    if not 1 <= value <= MAX_LIMIT:
        abort(400, description=f"limit must be between 1 and {MAX_LIMIT}")
    return value


def _text(name: str, max_len: int = 64) -> str | None:
    value = request.args.get(name)
    if value is None or value == "":
        return None
    if len(value) > max_len:
        abort(400, description=f"{name} is longer than {max_len} characters")
    return value


def _whose(requested: str | None) -> str | None:
    """The member whose records to read: anyone for a coordinator, else oneself only."""
    if current_user.has("coordinator"):
        return requested
    own = current_user.handle
    if own is None:
        abort(403, description="this token belongs to no member; only coordinators see all")
    if requested is not None and requested != own:
        abort(403, description="members see their own records only")
    return own


def _num(value: Decimal | None) -> float | None:
    """Exact decimals as JSON numbers rounded to 6 places (as ``peershop simulate`` prints)."""
    return None if value is None else float(value.quantize(SIX))


# --- endpoints ---------------------------------------------------------------------------


@bp.get("/hub")
def hub_info() -> Any:
    hub = _state().hub
    body: dict[str, Any] = {"version": __version__, "live": hub is not None}
    if hub is None:
        body.update(uptime_s=None, started_at=None, broker=None, public_key=None)
        return jsonify(body)
    ok, reason = hub.health()
    body.update(
        uptime_s=round((datetime.now(UTC) - hub.started_at).total_seconds(), 1),
        started_at=iso(hub.started_at),
        broker={
            "connected": hub.link.is_connected,
            "host": hub.cfg.mqtt.host,
            "port": hub.cfg.mqtt.port,
            "last_error": hub.link.last_error,
        },
        healthy=ok,
        health=reason,
        public_key=public_key_b64(hub.signing_key),
    )
    return jsonify(body)


@bp.get("/tools")
def tools() -> Any:
    state = _state()
    names = can_see_names()
    return jsonify({"tools": [v.public(names) for v in state.tool_views(state.db())]})


@bp.get("/devices")
def devices() -> Any:
    session = _state().db()
    rows = record_queries.devices(session)
    out = []
    for d in rows:
        ev = d.last_event
        out.append(
            {
                "id": d.id,
                "approval": d.approval,
                "online": d.online,
                "last_seen": iso(d.last_seen),
                "boot": d.boot,
                "fw": d.fw,
                "kind": d.kind,
                "last_event": None
                if ev is None
                else {
                    "id": ev.id,
                    "type": ev.type,
                    "boot": ev.boot,
                    "seq": ev.seq,
                    "at": iso(ev.received_at),
                },
            }
        )
    return jsonify({"devices": out})


@bp.get("/presence")
@require_role("member")
def presence_now() -> Any:
    state = _state()
    rows = presence(state, state.db())
    return jsonify(
        {"present": [{"member": p.handle, "name": p.name, "since": iso(p.since)} for p in rows]}
    )


@bp.get("/sessions")
@require_role("member")
def sessions() -> Any:
    tool = _text("tool")
    member = _whose(_text("member"))
    since, until, limit = _instant("since"), _instant("until"), _limit()
    rows = record_queries.usage_sessions(
        _state().db(), limit=limit, tool=tool, member=member, since=since, until=until
    )
    return jsonify(
        {
            "sessions": [
                {
                    "id": s.id,
                    "tool": s.tool_id,
                    "member": s.member,
                    "start": iso(s.start),
                    "end": iso(s.end),
                    "busy_s": round(s.busy_s, 3),
                    "idle_s": round(s.idle_s, 3),
                    "wh": round(s.wh, 3),
                    "close_reason": s.close_reason,
                }
                for s in rows
            ]
        }
    )


@bp.get("/effort")
@require_role("member")
def effort() -> Any:
    member = _whose(_text("member"))
    since, until, limit = _instant("since"), _instant("until"), _limit()
    period_id = _text("period")
    if period_id is not None:
        # The records a period close counts: those started within [start, end).
        if not (period_id.isascii() and period_id.isdigit()):  # "²" is a digit to isdigit
            abort(400, description="period must be a period id (an integer)")
        period = period_or_404(_state().db(), int(period_id))
        since = max(since, period.start) if since else period.start
        until = min(until, period.end) if until else period.end
    rows = record_queries.effort_records(
        _state().db(), limit=limit, member=member, since=since, until=until
    )
    return jsonify({"effort": [_effort(r) for r in rows]})


def _effort(r: record_queries.EffortLine) -> dict[str, Any]:
    weighted = None if r.hours is None or r.weight is None else r.hours * r.weight
    return {
        "id": r.id,
        "member": r.member,
        "task": r.task_id,
        "project": r.project_id,
        "start": iso(r.start),
        "end": iso(r.end),
        "hours": _num(r.hours),
        "weight": _num(r.weight),
        "weighted_hours": _num(weighted),
        "source": r.source,
    }


# --- the task board ------------------------------------------------------------------------


def _claim(view: taskboard.ClaimView) -> dict[str, Any]:
    return {
        "id": view.id,
        "task": view.task,
        "member": view.member,
        "weight": _num(view.weight),
        "claimed_at": iso(view.claimed_at),
        "done_at": iso(view.done_at),
        "hours": _num(view.hours),
        "credited_hours": _num(view.credited_hours),
        "status": str(view.status),
        "confirmed_by": list(view.confirmed_by),
        "rejected_by": view.rejected_by,
        "confirmations_needed": view.confirmations_needed,
    }


@bp.get("/tasks")
@require_role("member")
def tasks() -> Any:
    state = _state()
    session = state.db()
    with committing(session):  # board() stores the running period if it is missing
        entries = taskboard.board(session, datetime.now(UTC), state.cfg)
    me, coordinator = current_user.handle, current_user.is_coordinator
    pending = [
        {**_claim(v), "can_confirm": taskboard.may_confirm(session, v, me, coordinator)}
        for v in taskboard.pending_claims(session)
    ]
    return jsonify(
        {
            "pending": pending,
            "tasks": [
                {
                    "id": e.task,
                    "title": e.title,
                    "project": e.project,
                    "weight": _num(e.weight),
                    "hours": _num(e.hours),
                    "slots": e.slots,
                    "slots_left": e.slots_left,
                    "wants": e.wants,
                    "overdue_days": _num(e.overdue_days),
                    "score": _num(e.score),
                    "pinned": e.pinned,
                    "claimed_by": list(e.claimed_by),
                }
                for e in entries
            ],
        }
    )


def _actor(task_id: str) -> tuple[Any, str]:
    """The session and member for a board change; refuses a cross-site browser POST."""
    if not current_user.token:
        current_app.extensions["csrf"].protect()
    handle = current_user.handle
    if handle is None:
        abort(403, description="this token belongs to no member; use a member's token")
    session = _state().db()
    if not board_queries.task_exists(session, task_id):
        abort(404, description=f"no task {task_id}")
    return session, handle


def _refused(exc: taskboard.TaskBoardError) -> Any:
    if isinstance(exc, taskboard.NotAllowedError):
        return api_error(403, "forbidden", str(exc))
    return api_error(409, "conflict", str(exc))


@bp.post("/tasks/<task_id>/claim")
@require_role("member")
def claim_task(task_id: str) -> Any:
    session, handle = _actor(task_id)
    try:
        with committing(session):
            c = taskboard.claim(session, handle, task_id, datetime.now(UTC), _state().cfg)
    except taskboard.TaskBoardError as exc:
        return _refused(exc)
    _state().changed()
    body = {
        "id": c.id,
        "task": c.task_id,
        "member": c.member,
        "period": c.period_id,
        "claimed_at": iso(c.claimed_at),
        "weight": _num(c.weight),
    }
    return jsonify({"claim": body}), 201


@bp.post("/tasks/<task_id>/done")
@require_role("member")
def done_task(task_id: str) -> Any:
    session, handle = _actor(task_id)
    hours = None
    if request.get_data():
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            abort(400, description='the body must be a JSON object, {"hours": 1.5} or {}')
        hours = body.get("hours")
        if hours is not None and (
            isinstance(hours, bool) or not isinstance(hours, int | float) or not hours > 0
        ):
            abort(400, description="hours must be a positive number")
        if hours is not None and hours > 1000:
            abort(400, description="hours must be at most 1000")
    try:
        with committing(session):
            record = taskboard.done(
                session, handle, task_id, datetime.now(UTC), hours, _state().cfg
            )
            view = taskboard.claim_of(session, record)
    except taskboard.TaskBoardError as exc:
        return _refused(exc)
    _state().changed()
    # "claim" says whether the hours count as given or wait for a confirmation
    return jsonify({"effort": _effort(record), "claim": _claim(view)}), 201


def _claim_id(task_id: str) -> int:
    """The claim a review names in its body, ``{"claim": 17}``, which must be of the task."""
    body = request.get_json(silent=True) if request.get_data() else None
    claim = body.get("claim") if isinstance(body, dict) else None
    if isinstance(claim, bool) or not isinstance(claim, int) or not 0 < claim < 2**63:
        abort(400, description='the body must be {"claim": <claim id>}')
    try:
        found = taskboard.claim_view(_state().db(), claim)
    except taskboard.TaskBoardError:
        found = None
    if found is None or found.task != task_id:
        abort(404, description=f"no claim {claim} of task {task_id}")
    return claim


def _review(task_id: str, review: Any) -> Any:
    """Confirm or reject the claim the body names: ``review(session, handle, claim)``."""
    session, handle = _actor(task_id)
    claim = _claim_id(task_id)
    try:
        with committing(session):
            view = review(session, handle, claim)
    except taskboard.TaskBoardError as exc:
        return _refused(exc)
    _state().changed()
    return jsonify({"claim": _claim(view)})


@bp.post("/tasks/<task_id>/confirm")
@require_role("member")
def confirm_claim(task_id: str) -> Any:
    now, cfg, coordinator = datetime.now(UTC), _state().cfg, current_user.is_coordinator
    return _review(
        task_id,
        lambda s, me, claim: taskboard.confirm(s, claim, me, now, cfg, coordinator=coordinator),
    )


@bp.post("/tasks/<task_id>/reject")
@require_role("coordinator")
def reject_claim(task_id: str) -> Any:
    now = datetime.now(UTC)
    return _review(task_id, lambda s, me, claim: taskboard.reject(s, claim, me, now))


@bp.post("/tasks/<task_id>/want")
@require_role("member")
def want_task(task_id: str) -> Any:
    session, handle = _actor(task_id)
    try:
        with committing(session):
            added = taskboard.want(session, handle, task_id, datetime.now(UTC))
    except taskboard.TaskBoardError as exc:
        return _refused(exc)
    _state().changed()
    return jsonify({"task": task_id, "member": handle, "new": added})


# --- periods -------------------------------------------------------------------------------


@bp.get("/periods")
@require_role("member")
def periods() -> Any:
    rows = newest_periods(_state().db(), _limit())
    return jsonify(
        {
            "periods": [
                {
                    "id": p.id,
                    "start": iso(p.start),
                    "end": iso(p.end),
                    "closed_at": iso(p.closed_at),
                }
                for p in rows
            ]
        }
    )


@bp.get("/periods/<int:period_id>/allocations")
@require_role("member")
def period_allocations(period_id: int) -> Any:
    session = _state().db()
    period = period_or_404(session, period_id)
    summary = allocations(session, period, current_user.handle, current_user.is_coordinator)
    summary.update(start=iso(period.start), end=iso(period.end), closed_at=iso(period.closed_at))
    return jsonify(summary)


@bp.get("/openapi.json")
def openapi() -> Any:
    return jsonify(openapi_document())
