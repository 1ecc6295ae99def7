"""The web view: live floor, member and coordinator pages, JSON API, metrics.

:func:`create_app` is a Flask application factory.  Given only a session factory it
serves what the database holds (tool states derived from locks, open sessions and
device status); given a running :class:`~hub.service.service.Hub` it shows the rules' live
state and streams every change as server-sent events.

>>> app = create_app({"SECRET_KEY": "x"}, sm=session_factory(engine))  # doctest: +SKIP
>>> stop = serve_in_thread(app, ("127.0.0.1", 8080))                 # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from flask import Flask, abort, redirect, render_template, request, url_for
from flask.json.provider import DefaultJSONProvider
from flask_wtf.csrf import CSRFError, CSRFProtect
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.exceptions import BadRequest, HTTPException

from hub.contract.messages import holds_nul
from web import admin, api, auth, floor, me, metrics, period, stream, tasks
from web.errors import api_error, bearer_challenge, body_too_large
from web.proxies import ClientAddress, networks
from web.serve import serve_in_thread
from web.state import WebState, iso

if TYPE_CHECKING:
    from hub.config import Config
    from hub.service.service import Hub

log = logging.getLogger(__name__)

__all__ = ["api_error", "body_too_large", "create_app", "serve_hub", "serve_in_thread"]

# No inline script or style anywhere: everything comes from /static.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)


def _secret_key(data_dir: Path | None) -> str:
    """A key kept in the data dir, so logins survive a restart; random otherwise."""
    if data_dir is None:
        return secrets.token_hex(32)
    path = data_dir / "web-secret.key"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key)
    return key


# No body of the hub nests deeper; a deeper one is refused before anything walks it
# (Python's own parser fails at about 1,000 levels with a RecursionError, a 500).
MAX_JSON_DEPTH = 32


class JSONProvider(DefaultJSONProvider):
    """Flask's JSON, refusing bodies nested deeper than :data:`MAX_JSON_DEPTH` with a
    ``ValueError`` (a 400), as any other body that is not JSON."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        try:
            value = json.loads(s, **kwargs)
        except RecursionError:
            raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
        todo = [(value, 1)]
        while todo:  # a loop, not recursion: the depth is what is in question
            item, depth = todo.pop()
            if isinstance(item, dict):
                item = list(item.values())
            if not isinstance(item, list):
                continue
            if depth > MAX_JSON_DEPTH:
                raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
            todo.extend((child, depth + 1) for child in item)
        return value


def _http_settings(cfg: Config) -> dict[str, Any]:
    """The app's settings from the ``[http]`` keys of the hub's configuration."""
    http = cfg.http
    return {
        "KIOSK_NETWORKS": list(http.kiosk_networks),
        "TRUSTED_PROXIES": list(http.trusted_proxies),
        "MAX_CONTENT_LENGTH": http.max_body_bytes,
        "KIOSK_IDLE_S": http.kiosk_idle.total_seconds(),
        "STREAMS_PER_CLIENT": http.streams_per_client,
    }


def create_app(
    test_config: dict[str, Any] | None = None,
    *,
    hub: Hub | None = None,
    sm: sessionmaker[Session] | None = None,
) -> Flask:
    """The Flask app.  Pass ``hub`` for live state, or ``sm`` for a database only.

    The ``[http]`` keys of the hub's configuration (``hub.cfg``, or the app config's
    ``PEERSHOP_CONFIG``) set ``KIOSK_NETWORKS`` (addresses or CIDRs whose browsers see
    member names on the floor without logging in), ``TRUSTED_PROXIES`` (whose
    ``X-Forwarded-For`` names the client, web/proxies.py), ``MAX_CONTENT_LENGTH``
    (bytes of a request body), ``KIOSK_IDLE_S`` and ``STREAMS_PER_CLIENT``; ``test_config``
    may set any of them, and ``LOGIN_FREE_PER_ACCOUNT`` / ``LOGIN_FREE_PER_ADDRESS``
    (failed logins before the delays), ``LOGIN_FIRST_DELAY_S``, ``LOGIN_MAX_DELAY_S``.
    """
    if hub is None and sm is None:
        raise ValueError("create_app needs a running hub or a session factory")
    app = Flask(__name__)
    app.json = JSONProvider(app)
    data_dir = hub.cfg.site.data_dir if hub is not None else None
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SAMESITE="Lax",
        WTF_CSRF_TIME_LIMIT=None,  # a wall screen stays open for days
        KIOSK_NETWORKS=[],
        TRUSTED_PROXIES=[],
        MAX_CONTENT_LENGTH=64 * 1024,
        KIOSK_IDLE_S=120.0,
        STREAMS_PER_CLIENT=4,
        LOGIN_FREE_PER_ACCOUNT=5,
        LOGIN_FREE_PER_ADDRESS=20,
        LOGIN_FIRST_DELAY_S=1.0,
        LOGIN_MAX_DELAY_S=900.0,
        STREAM_HEARTBEAT_S=15.0,
    )
    cfg = hub.cfg if hub is not None else (test_config or {}).get("PEERSHOP_CONFIG")
    if cfg is not None:
        app.config.update(_http_settings(cfg))
    if test_config:
        app.config.update(test_config)
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = _secret_key(data_dir)
    app.config["KIOSK_NETWORKS"] = networks(app.config["KIOSK_NETWORKS"])
    app.config["TRUSTED_PROXIES"] = networks(app.config["TRUSTED_PROXIES"])
    # before anything reads REMOTE_ADDR: the login throttle, kiosk networks, streams
    app.wsgi_app = ClientAddress(app.wsgi_app, app.config["TRUSTED_PROXIES"])  # type: ignore[method-assign]

    tz = app.config.get("TIMEZONE") or (hub.cfg.site.timezone if hub is not None else UTC)
    if isinstance(tz, str):
        tz = ZoneInfo(tz)

    @app.template_filter("clock")
    def clock(at: datetime | str | None, seconds: bool = False, date: bool = False) -> str:
        """An instant (or its ISO 8601 text) as the shop's local time of day, with the
        date if not today or if ``date`` (a span of days, such as a period)."""
        if at is None or at == "":
            return ""
        if isinstance(at, str):
            at = datetime.fromisoformat(at)
        local = at.astimezone(tz)
        fmt = "%H:%M:%S" if seconds else "%H:%M"
        if date or local.date() != datetime.now(tz).date():
            fmt = "%Y-%m-%d " + fmt
        return local.strftime(fmt)

    app.add_template_filter(iso, "iso")

    @app.context_processor
    def shop_time() -> dict[str, str]:
        # the pages' scripts show times in the shop's zone too, not the browser's
        return {"timezone": str(tz)}

    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep the documented order
    state = WebState(
        hub=hub,
        sm=sm if sm is not None else hub.sm,  # type: ignore[union-attr]
        cfg=app.config.get("PEERSHOP_CONFIG"),
    )
    app.extensions["peershop"] = state
    csrf = CSRFProtect(app)

    auth.init_app(app)
    for module in (floor, auth, tasks, period, me, admin, api, stream, metrics):
        app.register_blueprint(module.bp)
    # The API's POSTs are for bearer tokens, which no other site can send; a browser
    # session calling them still needs the CSRF token (api._guard_csrf).
    csrf.exempt(api.bp)

    @app.get("/favicon.ico")
    def favicon():  # asked for by browsers on pages without the icon's <link>, such as JSON
        return redirect(url_for("static", filename="favicon.svg"), 301)

    @app.before_request
    def refuse_large_body():
        # Before anything reads the body (the form, the JSON, the checks below), and
        # whoever sends it: parsing bodies of any size let anonymous clients fill the
        # hub's memory (four 60 MB POSTs: 367 -> 777 MB).  waitress refuses such a body
        # on its headers already (web/serve.py); this holds under any WSGI server.
        limit = app.config["MAX_CONTENT_LENGTH"]
        if limit is not None and (request.content_length or 0) > limit:
            abort(413, description=body_too_large(limit))

    @app.before_request
    def refuse_nul():
        # PostgreSQL's text cannot hold U+0000 (SQLite's can): a query or write with one
        # fails there with a 500.  No field means one, so it is a 400 on either database.
        if (
            holds_nul(request.view_args or {})
            or holds_nul(request.args.to_dict(flat=False))
            or holds_nul(request.form.to_dict(flat=False))
            or (request.is_json and holds_nul(_json_body()))
        ):
            abort(400, description="a NUL character (U+0000) is not allowed here")
        # An id in the path past INTEGER's range (32 bits on PostgreSQL: periods.id,
        # api_tokens.id) names no row; the query would fail there, so it is a 404 here.
        ids = (request.view_args or {}).values()
        if any(isinstance(v, int) and v > 2**31 - 1 for v in ids):
            abort(404, description="no such id")

    @app.after_request
    def security_headers(response):
        headers = response.headers
        headers.setdefault("Content-Security-Policy", CSP)
        headers.setdefault("X-Frame-Options", "DENY")
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("Referrer-Policy", "same-origin")
        headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        headers.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
        if request.path.startswith(("/api/", "/me", "/admin", "/tasks", "/periods")):
            headers.setdefault("Cache-Control", "no-store")
        if response.status_code == 401:
            # RFC 9110 §15.5.2: a 401 names how to authenticate (the login page's too)
            headers.setdefault("WWW-Authenticate", bearer_challenge())
        return response

    def wants_json() -> bool:
        return request.path.startswith("/api/") or request.path in ("/metrics", "/healthz")

    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError):
        if wants_json():
            return api_error(400, "csrf", exc.description)
        return render_template(
            "error.html", status=400, title="Form out of date", message=STALE_FORM
        ), 400

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        status = exc.code or 500
        if wants_json():
            response = api_error(
                status, (exc.name or "error").lower().replace(" ", "_"), exc.description
            )
        else:
            page = render_template(
                "error.html", status=status, title=exc.name, message=exc.description
            )
            response = app.make_response((page, status))
        # the headers the status requires and werkzeug sets (Allow on a 405, Retry-After)
        for name, value in exc.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    @app.errorhandler(Exception)
    def internal_error(exc: Exception):
        app.logger.exception("request %s %s failed", request.method, request.path)
        if wants_json():
            return api_error(500, "internal", "internal error; see the hub's log")
        return render_template(
            "error.html", status=500, title="Something went wrong", message=INTERNAL
        ), 500

    app.teardown_appcontext(state.teardown)
    return app


# What a person at a browser reads; the API says it in its error codes.
STALE_FORM = (
    "This form is out of date, or it was sent from another page. "
    "Go back, reload the page and try again."
)
INTERNAL = "Something went wrong on the hub. It is written in the hub's log; try again."


def _json_body() -> Any:
    """The body of a request that says it is JSON; one that is not (or nests too deep)
    is a 400 with the reason, for every endpoint alike."""
    if not request.get_data(cache=True):
        return None
    try:
        return request.get_json()
    except BadRequest as exc:
        reason = exc.__cause__.description if isinstance(exc.__cause__, BadRequest) else None
        abort(400, description=reason or "the body is not valid JSON")


def serve_hub(hub: Any, listen: tuple[str, int]) -> Callable[[], None]:
    """The web view of a running hub, for ``peershop run`` (``http.threads``,
    ``http.streams``).

    A port that cannot be bound (taken, no permission) is logged and the hub runs on
    without its web view: badge decisions and ingest matter more than the screen.
    """
    try:
        http = hub.cfg.http
        return serve_in_thread(
            create_app(hub=hub), listen, threads=http.threads, streams=http.streams
        )
    except OSError as exc:
        log.error(
            "web view not started: cannot listen on %s:%s (%s); choose another address "
            "with http.listen in peershop.toml",
            *listen,
            str(exc),
        )
        return lambda: None
