"""Logins, roles and API tokens.

- Members and coordinators log in with handle and password; at a kiosk a member may
  log in with their badge uid (typed by a keyboard-wedge reader) and a PIN.  Both are
  argon2 hashes in ``web_logins``, set under one rule (:func:`check_password`,
  :func:`check_pin`) by the CLI and Admin alike.
- A login is a row of ``web_sessions`` (web/logins.py), so a logout, a password change
  or an idle kiosk ends it on the server, for every copy of the cookie.
- A kiosk login has a member's rights, whatever the person's roles: a kiosk is a shared
  screen, and a badge and a short PIN are a weaker proof than a password.
- Scripts send ``Authorization: Bearer <token>``; only the token's SHA-256 is stored.
- Roles rank ``member`` < ``trainer`` < ``coordinator``; :func:`require_role` guards
  every page and endpoint that needs one.
- Failed logins slow down further tries per account and per client address, with
  growing delays (web/throttle.py); the account's owner on a known device is not
  slowed by strangers' failures.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import wraps
from typing import Any
from urllib.parse import urlsplit

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import (
    Blueprint,
    Flask,
    Response,
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
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import select
from sqlalchemy.orm import Session
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length

from hub.errors import SecretRuleError
from hub.rules.access import Role
from hub.store.models import ApiToken, Badge, Member, WebLogin
from web import logins
from web.proxies import within
from web.state import committing
from web.throttle import LoginThrottle

bp = Blueprint("auth", __name__)

# Plain strings, not the Role members: click.Choice matches an Enum by its name (MEMBER).
ROLES = tuple(role.value for role in Role)
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


# One rule for every way a secret is set (``peershop user``, Admin): a password of at
# least 8 characters; a kiosk PIN of 6 to 12 digits, a million guesses at the least,
# and with the throttle's growing delays a few hundred tries a day.
PASSWORD_MIN, PASSWORD_MAX = 8, 200
PIN_MIN, PIN_MAX = 6, 12
_PIN = re.compile(rf"[0-9]{{{PIN_MIN},{PIN_MAX}}}")


def check_password(password: str) -> None:
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise SecretRuleError(
            f"a password needs {PASSWORD_MIN} to {PASSWORD_MAX} characters, got {len(password)}"
        )


def check_pin(pin: str) -> None:
    if not _PIN.fullmatch(pin):
        raise SecretRuleError(f"a kiosk PIN is {PIN_MIN} to {PIN_MAX} digits (0-9)")


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
    """A logged-in member (a session cookie naming a ``web_sessions`` row) or an API
    token (bearer).  ``session`` is the login's token, ``badge`` a kiosk login's badge."""

    is_authenticated = True
    is_active = True
    is_anonymous = False

    def __init__(
        self,
        member_id: int | None,
        handle: str | None,
        name: str,
        role: str,
        token: bool = False,
        session: str | None = None,
        badge: str | None = None,
    ):
        self.member_id = member_id
        self.handle = handle
        self.name = name
        self.role = role
        self.token = token
        self.session = session
        self.badge = badge

    def get_id(self) -> str | None:
        return self.session  # what Flask-Login keeps in the cookie: the login, not the member

    @property
    def kiosk(self) -> bool:
        return self.badge is not None

    def has(self, role: str) -> bool:
        return RANK[self.role] >= RANK[role]

    @property
    def is_coordinator(self) -> bool:
        return self.has("coordinator")


def _db() -> Session:
    return current_app.extensions["peershop"].db()


def _by_person() -> bool:
    """Whether this request is its user's doing (a page opened, a form sent), not a
    page's script refreshing a region or its live stream.  Browsers say which in
    ``Sec-Fetch-Mode``; a client that does not say counts as a person."""
    if request.method not in ("GET", "HEAD"):
        return True
    return request.headers.get("Sec-Fetch-Mode", "navigate") == "navigate"


def _load_login(token: str) -> WebUser | None:
    """The member of the login the cookie names; None once it has ended."""
    state = current_app.extensions["peershop"]
    now = datetime.now(UTC)
    session = state.db()
    row = logins.find(session, token)
    if row is None:
        return None
    member = session.get(Member, row.member_id)
    idle = timedelta(seconds=float(current_app.config["KIOSK_IDLE_S"]))
    # a suspension ends every login at its next request, as an idle kiosk does
    ended = member is None or member.suspended or logins.expired(row, now, idle)
    if ended or (_by_person() and logins.stale(row, now)):
        with state.sm.begin() as writer:
            if ended:
                logins.end(writer, token)
            else:
                logins.touch(writer, token, now)
    if ended or member is None:
        return None
    role = "member" if row.is_kiosk else member_role(member.roles)
    return WebUser(member.id, member.handle, member.name, role, session=token, badge=row.badge)


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
    manager.user_loader(_load_login)
    manager.request_loader(_load_token)
    manager.init_app(app)
    config = app.config
    app.extensions["peershop.throttle"] = LoginThrottle(
        per_account=config["LOGIN_FREE_PER_ACCOUNT"],
        per_address=config["LOGIN_FREE_PER_ADDRESS"],
        first_delay_s=config["LOGIN_FIRST_DELAY_S"],
        max_delay_s=config["LOGIN_MAX_DELAY_S"],
    )

    @app.context_processor
    def inject_user() -> dict[str, Any]:
        return {
            "user": current_user,
            "show_names": can_see_names(),
            "logout_form": LogoutForm(),
            "tap_form": TapForm(prefix="tap"),
            "kiosk_idle_s": int(float(config["KIOSK_IDLE_S"])),
        }


def can_see_names() -> bool:
    """Member names on the floor: for anyone logged in, and for configured kiosks."""
    if current_user.is_authenticated:
        return True
    return within(request.remote_addr, current_app.config["KIOSK_NETWORKS"])


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


# --- known devices ------------------------------------------------------------------------

# A browser where an account's owner logged in before keeps a signed cookie that says
# so; there only that browser's own failures slow the owner down (web/throttle.py).
DEVICE_COOKIE = "peershop_device"
DEVICE_MAX_AGE_S = 400 * 86_400  # the longest browsers keep a cookie
DEVICE_ACCOUNTS = 8  # accounts one browser remembers (a family's shared laptop)


def _device_signer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.secret_key, salt="peershop.known-device")


def _device() -> dict[str, Any] | None:
    raw = request.cookies.get(DEVICE_COOKIE)
    if not raw:
        return None
    try:
        data = _device_signer().loads(raw, max_age=DEVICE_MAX_AGE_S)
    except BadSignature:  # forged, or older than it may be
        return None
    if not isinstance(data, dict) or not isinstance(data.get("id"), str):
        return None
    if not isinstance(data.get("accounts"), list):
        return None
    return data


def _known_device(account: str) -> str | None:
    """This browser's id if ``account`` logged in on it before, else None."""
    data = _device()
    return data["id"] if data is not None and account in data["accounts"] else None


def _remember_device(response: Response, account: str) -> None:
    data = _device() or {"id": secrets.token_urlsafe(16), "accounts": []}
    accounts = [a for a in data["accounts"] if a != account][-(DEVICE_ACCOUNTS - 1) :]
    response.set_cookie(
        DEVICE_COOKIE,
        _device_signer().dumps({"id": data["id"], "accounts": [*accounts, account]}),
        max_age=DEVICE_MAX_AGE_S,
        path=url_for("auth.login"),  # sent to the login pages only
        secure=bool(current_app.config["SESSION_COOKIE_SECURE"]),
        httponly=True,
        samesite="Lax",
    )


# --- forms and views -----------------------------------------------------------------------


class LoginForm(FlaskForm):
    handle = StringField("Handle", validators=[DataRequired(), Length(max=64)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=PASSWORD_MAX)])


class KioskForm(FlaskForm):
    badge = StringField("Badge", validators=[DataRequired(), Length(max=40)])
    pin = PasswordField("PIN", validators=[DataRequired(), Length(max=32)])


class LogoutForm(FlaskForm):
    pass


class TapForm(FlaskForm):
    """A badge tapped on the kiosk's reader while a kiosk login is open (kiosk.js)."""

    badge = StringField("Badge", validators=[DataRequired(), Length(max=40)])


def _safe_next(target: str | None) -> str:
    """Only local paths: ``next=`` must never send a member to another site."""
    if not target:
        return url_for("floor.index")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("floor.index")
    return target


def _attempt(
    account: str,
    device: str | None,
    find: Callable[[Session], tuple[Member | None, str | None]],
    secret: str,
) -> tuple[Member | None, float]:
    """Check a login: ``(member, 0)``, or ``(None, seconds to wait)`` (0: just wrong).

    A try while the throttle says wait is refused unchecked, the right secret too:
    otherwise a guesser would still learn at full speed which guess was right."""
    throttle: LoginThrottle = current_app.extensions["peershop.throttle"]
    address = request.remote_addr or "?"
    wait = throttle.wait(account, address, device, time.monotonic())
    if wait:
        return None, wait
    member, stored = find(_db())
    if not verify_secret(stored, secret) or member is None or member.suspended:
        throttle.failed(account, address, device, time.monotonic())
        return None, 0.0
    throttle.succeeded(account, address, device)
    return member, 0.0


def _refused(form: LoginForm, kiosk: KioskForm, wait: float, message: str) -> Any:
    if not wait:
        flash(message, "error")
        return render_template("login.html", form=form, kiosk=kiosk), 401
    seconds = math.ceil(wait)
    flash(f"Too many failed logins: try again in {seconds} s.", "error")
    page = render_template("login.html", form=form, kiosk=kiosk)
    return page, 429, {"Retry-After": str(seconds)}


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


def _end_login() -> None:
    """End the current browser's login on the server, then in its cookie."""
    if current_user.is_authenticated and current_user.session:
        session = _db()
        with committing(session):
            logins.end(session, current_user.session)
    logout_user()


def _finish_login(member: Member, badge: str | None = None) -> Any:
    _end_login()  # a login over another one replaces it
    session = _db()
    with committing(session):
        token = logins.start(session, member, badge, datetime.now(UTC))
    role = "member" if badge is not None else member_role(member.roles)
    login_user(WebUser(member.id, member.handle, member.name, role, session=token, badge=badge))
    return redirect(_safe_next(request.args.get("next")))


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    form = LoginForm()
    if form.validate_on_submit():
        handle = form.handle.data.strip()
        account = f"handle:{handle}"
        member, wait = _attempt(
            account, _known_device(account), _by_handle(handle), form.password.data
        )
        if member is not None:
            response = _finish_login(member)
            _remember_device(response, account)
            return response
        return _refused(form, KioskForm(), wait, "Wrong handle or password.")
    return render_template("login.html", form=form, kiosk=KioskForm())


@bp.route("/login/kiosk", methods=["POST"])
def login_kiosk() -> Any:
    form = KioskForm()
    if not form.validate_on_submit():
        return _refused(LoginForm(), form, 0, "Give a badge and a PIN.")
    if not _PIN.fullmatch(form.pin.data):
        # not checked, not counted: no PIN of this shape can be right (PINs set before
        # the rule of 6 to 12 digits no longer log in; a coordinator sets a new one)
        message = f"A kiosk PIN is {PIN_MIN} to {PIN_MAX} digits; ask a coordinator for one."
        return _refused(LoginForm(), form, 0, message)
    uid = form.badge.data.strip().upper()
    # a kiosk is everyone's browser: no device there is the owner's own
    member, wait = _attempt(f"badge:{uid}", None, _by_badge(uid), form.pin.data)
    if member is not None:
        return _finish_login(member, badge=uid)
    return _refused(LoginForm(), form, wait, "Wrong badge or PIN.")


@bp.route("/logout", methods=["POST"])
def logout() -> Any:
    form = LogoutForm()
    if form.validate_on_submit():
        _end_login()
    return redirect(url_for("floor.index"))


@bp.post("/logout/tap")
def kiosk_tap() -> Any:
    """A badge tapped at a kiosk with a kiosk login open: its member is done (the same
    badge), or someone else stands there now; either way the login ends."""
    form = TapForm(prefix="tap")
    if not form.validate_on_submit():
        abort(400, description="the form expired; reload the page")
    if not (current_user.is_authenticated and current_user.kiosk):
        return redirect(url_for("auth.login"))
    same = form.badge.data.strip().upper() == current_user.badge
    _end_login()
    if same:
        flash("Logged out. Tap your badge and type your PIN to log in again.", "ok")
        return redirect(url_for("floor.index"))
    flash("Logged out: another badge was tapped. Tap it again and type its PIN.", "ok")
    return redirect(url_for("auth.login"))


# --- used by the CLI and the admin pages ---------------------------------------------------


def set_password(session: Session, member: Member, password: str) -> int:
    """Set a member's password (:func:`check_password`'s rule) and end their logins,
    which a thief of the old one may hold; returns how many ended."""
    check_password(password)
    _login_row(session, member).password_hash = hash_secret(password)
    return logins.end_all(session, member.id)


def set_pin(session: Session, member: Member, pin: str) -> int:
    """Set a member's kiosk PIN (:func:`check_pin`'s rule) and end their logins."""
    check_pin(pin)
    _login_row(session, member).pin_hash = hash_secret(pin)
    return logins.end_all(session, member.id)


def set_secret_of(session: Session, handle: str, kind: str, secret: str) -> int | None:
    """Set the password (or with ``kind`` ``pin`` the kiosk PIN) of the member named
    ``handle`` (Admin); how many logins ended, or None when no member has that handle."""
    member = session.scalar(select(Member).where(Member.handle == handle))
    if member is None:
        return None
    return (set_pin if kind == "pin" else set_password)(session, member, secret)


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


def revoke_api_token(session: Session, token_id: int, now: datetime) -> str | None:
    """Revoke an API token (Admin); returns its name, or None when there is no such
    token.  A token revoked already keeps the time it was revoked."""
    row = session.get(ApiToken, token_id)
    if row is None:
        return None
    row.revoked_at = row.revoked_at or now
    return row.name
