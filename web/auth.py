"""Logins, roles and API tokens.

- Members and coordinators log in with handle and password; at a kiosk a member may
  log in with their badge uid (typed by a keyboard-wedge reader) and a PIN.  Both are
  argon2 hashes in ``web_logins``.
- Scripts send ``Authorization: Bearer <token>``; only the token's SHA-256 is stored.
- Roles rank ``member`` < ``trainer`` < ``coordinator``; :func:`require_role` guards
  every page and endpoint that needs one.
- Failed logins are limited per client address and per account, in memory.
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from functools import wraps
from typing import Any
from urllib.parse import urlsplit

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import LoginManager, current_user, login_user, logout_user
from flask_wtf import FlaskForm
from sqlalchemy import select
from sqlalchemy.orm import Session
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length

from hub.models import ApiToken, Badge, Member, WebLogin

bp = Blueprint("auth", __name__)

ROLES = ("member", "trainer", "coordinator")
RANK = {role: i for i, role in enumerate(ROLES)}
TOKEN_PREFIX = "psk_"

# OWASP's argon2id setting (19 MiB, 2 passes, 1 lane) rather than argon2-cffi's default
# of 64 MiB: each hash or verify allocates its memory cost at once, so with the default
# the web's start alone raised the hub's peak by 64 MB, and a few logins at the same
# moment would take a Pi Zero's 512 MB.  Hashes keep their own parameters, so older ones
# still verify.
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
# Verified against when the account does not exist, so a wrong handle takes as long
# as a wrong password and does not tell which handles exist.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))


def hash_secret(secret: str) -> str:
    return _hasher.hash(secret)


def verify_secret(stored: str | None, secret: str) -> bool:
    try:
        return _hasher.verify(stored or _DUMMY_HASH, secret) and stored is not None
    except (VerificationError, InvalidHashError):
        return False


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def member_role(roles: list[str] | None) -> str:
    held = [r for r in roles or [] if r in RANK] or ["member"]
    return max(held, key=RANK.__getitem__)


# --- who is asking ---------------------------------------------------------------------


class WebUser:
    """A logged-in member (session cookie) or an API token (bearer)."""

    is_authenticated = True
    is_active = True
    is_anonymous = False

    def __init__(
        self, member_id: int | None, handle: str | None, name: str, role: str, token: bool = False
    ):
        self.member_id = member_id
        self.handle = handle
        self.name = name
        self.role = role
        self.token = token

    def get_id(self) -> str:
        return str(self.member_id)

    def has(self, role: str) -> bool:
        return RANK[self.role] >= RANK[role]

    @property
    def is_coordinator(self) -> bool:
        return self.has("coordinator")


def _db() -> Session:
    return current_app.extensions["peershop"].db()


def _load_member(member_id: str) -> WebUser | None:
    try:
        member = _db().get(Member, int(member_id))
    except ValueError:
        return None
    if member is None or member.suspended:
        return None  # a suspension ends every session at the next request
    return WebUser(member.id, member.handle, member.name, member_role(member.roles))


def _load_token(req: Any) -> WebUser | None:
    header = req.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    row = _db().scalar(select(ApiToken).where(ApiToken.token_hash == token_digest(token.strip())))
    if row is None or row.revoked_at is not None or row.role not in RANK:
        return None
    return WebUser(None, row.member, f"token {row.name}", row.role, token=True)


def init_app(app: Flask) -> None:
    manager = LoginManager()
    manager.login_view = "auth.login"
    manager.login_message = "Log in to see this page."
    manager.user_loader(_load_member)
    manager.request_loader(_load_token)
    manager.init_app(app)
    app.extensions["peershop_limiter"] = LoginLimiter(
        app.config["LOGIN_LIMIT_IP"],
        app.config["LOGIN_LIMIT_ACCOUNT"],
        app.config["LOGIN_LIMIT_WINDOW_S"],
    )

    @app.context_processor
    def inject_user() -> dict[str, Any]:
        return {"user": current_user, "show_names": can_see_names(), "logout_form": LogoutForm()}


def can_see_names() -> bool:
    """Member names on the floor: for anyone logged in, and for configured kiosks."""
    if current_user.is_authenticated:
        return True
    try:
        addr = ipaddress.ip_address(request.remote_addr or "")
    except ValueError:
        return False
    return any(addr in net for net in current_app.config["KIOSK_NETWORKS"])


def require_role(role: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Guard a view: anonymous → 401 (API) or the login page; too low a role → 403."""

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            if not current_user.is_authenticated:
                if request.path.startswith("/api/"):
                    abort(401, description="log in or send Authorization: Bearer <token>")
                return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
            if not current_user.has(role):
                abort(403, description=f"this needs the {role} role")
            return view(*args, **kwargs)

        return guarded

    return decorate


# --- rate limiting -----------------------------------------------------------------------


class LoginLimiter:
    """Failed logins per client address and per account within a sliding window."""

    def __init__(self, per_ip: int, per_account: int, window_s: float):
        self.per_ip, self.per_account, self.window_s = per_ip, per_account, window_s
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self._failures.setdefault(key, deque())
        while q and q[0] <= now - self.window_s:
            q.popleft()
        return q

    def blocked(self, ip: str, account: str) -> float:
        """Seconds until a new try is allowed (0: allowed now)."""
        now = time.monotonic()
        wait = 0.0
        with self._lock:
            for key, limit in ((f"ip:{ip}", self.per_ip), (f"acct:{account}", self.per_account)):
                q = self._recent(key, now)
                if len(q) >= limit:
                    wait = max(wait, q[0] + self.window_s - now)
            if len(self._failures) > 10_000:  # forget idle keys so memory stays bounded
                for key in [k for k, q in self._failures.items() if not self._recent(k, now)]:
                    del self._failures[key]
        return wait

    def failed(self, ip: str, account: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._recent(f"ip:{ip}", now).append(now)
            self._recent(f"acct:{account}", now).append(now)

    def succeeded(self, account: str) -> None:
        with self._lock:
            self._failures.pop(f"acct:{account}", None)


# --- forms and views -----------------------------------------------------------------------


class LoginForm(FlaskForm):
    handle = StringField("Handle", validators=[DataRequired(), Length(max=64)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=200)])


class KioskForm(FlaskForm):
    badge = StringField("Badge", validators=[DataRequired(), Length(max=40)])
    pin = PasswordField("PIN", validators=[DataRequired(), Length(max=32)])


class LogoutForm(FlaskForm):
    pass


def _safe_next(target: str | None) -> str:
    """Only local paths: ``next=`` must never send a member to another site."""
    if not target:
        return url_for("floor.index")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("floor.index")
    return target


def _attempt(
    account: str, find: Callable[[Session], tuple[Member | None, str | None]], secret: str
) -> tuple[Member | None, str | None]:
    """Check a login; returns (member, None) or (None, message).  Counts failures."""
    limiter: LoginLimiter = current_app.extensions["peershop_limiter"]
    ip = request.remote_addr or "?"
    wait = limiter.blocked(ip, account)
    if wait:
        abort(429, description=f"too many failed logins; try again in {int(wait) + 1} s")
    member, stored = find(_db())
    if not verify_secret(stored, secret) or member is None or member.suspended:
        limiter.failed(ip, account)
        return None, "Wrong login or secret."
    limiter.succeeded(account)
    return member, None


def _by_handle(handle: str) -> Callable[[Session], tuple[Member | None, str | None]]:
    def find(session: Session) -> tuple[Member | None, str | None]:
        row = session.execute(
            select(Member, WebLogin.password_hash)
            .join(WebLogin, WebLogin.member_id == Member.id)
            .where(Member.handle == handle)
        ).first()
        return (row[0], row[1]) if row else (None, None)

    return find


def _by_badge(uid: str) -> Callable[[Session], tuple[Member | None, str | None]]:
    def find(session: Session) -> tuple[Member | None, str | None]:
        row = session.execute(
            select(Member, WebLogin.pin_hash)
            .join(Badge, Badge.member_id == Member.id)
            .join(WebLogin, WebLogin.member_id == Member.id)
            .where(Badge.uid == uid)
        ).first()
        return (row[0], row[1]) if row else (None, None)

    return find


def _finish_login(member: Member) -> Any:
    login_user(WebUser(member.id, member.handle, member.name, member_role(member.roles)))
    return redirect(_safe_next(request.args.get("next")))


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    form = LoginForm()
    if form.validate_on_submit():
        handle = form.handle.data.strip()
        member, problem = _attempt(f"handle:{handle}", _by_handle(handle), form.password.data)
        if member is not None:
            return _finish_login(member)
        flash(problem or "Wrong login.", "error")
        return render_template("login.html", form=form, kiosk=KioskForm()), 401
    return render_template("login.html", form=form, kiosk=KioskForm())


@bp.route("/login/kiosk", methods=["POST"])
def login_kiosk() -> Any:
    form = KioskForm()
    if form.validate_on_submit():
        uid = form.badge.data.strip().upper()
        member, problem = _attempt(f"badge:{uid}", _by_badge(uid), form.pin.data)
        if member is not None:
            return _finish_login(member)
        flash(problem or "Wrong badge or PIN.", "error")
    else:
        flash("Give a badge and a PIN.", "error")
    return render_template("login.html", form=LoginForm(), kiosk=form), 401


@bp.route("/logout", methods=["POST"])
def logout() -> Any:
    form = LogoutForm()
    if form.validate_on_submit():
        logout_user()
    return redirect(url_for("floor.index"))


# --- used by the CLI and the admin pages ---------------------------------------------------


def set_password(session: Session, member: Member, password: str) -> None:
    _login_row(session, member).password_hash = hash_secret(password)


def set_pin(session: Session, member: Member, pin: str) -> None:
    _login_row(session, member).pin_hash = hash_secret(pin)


def _login_row(session: Session, member: Member) -> WebLogin:
    row = session.get(WebLogin, member.id)
    if row is None:
        row = WebLogin(member_id=member.id)
        session.add(row)
    row.updated_at = datetime.now(UTC)
    return row


def create_token(session: Session, name: str, role: str, member: str | None = None) -> str:
    """A new API token; returns the token itself, which is never stored."""
    if role not in RANK:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(name=name, role=role, member=member, token_hash=token_digest(token)))
    session.flush()
    return token
