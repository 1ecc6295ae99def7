"""What the browser tests share: a real headless Chromium (Debian's package, driven by
Playwright), a hub with its web view on a shop, a page that records its errors, a login.

No browser is downloaded: Playwright launches ``/usr/bin/chromium``.  Without it a test
taking the ``browser`` fixture is skipped on a developer's machine and fails in CI
(``CI`` set).  A module takes the fixture with ``browser = browser_fixture``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from hub.config import Config
from hub.service.service import Hub
from hub.shopfile.apply import apply_shop
from hub.shopfile.parse import parse_shop
from hub.store.db import make_engine, migrate, session_factory
from hub.store.models import Member
from tests.helpers import REPO
from web import create_app, serve_in_thread
from web.auth import set_password
from web.state import LiveFeed

try:
    from playwright import sync_api
except ImportError:  # CI installs the dev extras, so there this fails loudly below
    sync_api = None

CHROMIUM = os.environ.get("PEERSHOP_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts"  # screenshots, for a person to look at
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def _chromium_or_skip() -> str:
    if shutil.which(CHROMIUM) or Path(CHROMIUM).exists():
        return CHROMIUM
    message = f"{CHROMIUM} is missing: apt-get install -y chromium"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(name="browser")
def browser_fixture() -> Iterator[Any]:
    """A launched headless Chromium, or a skip (a failure on CI)."""
    path = _chromium_or_skip()
    if sync_api is None:
        if os.environ.get("CI"):
            pytest.fail("playwright is not installed (pip install -e '.[dev]')")
        pytest.skip("playwright is not installed")
    with sync_api.sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=path, args=ARGS)
        yield launched
        launched.close()


@contextmanager
def serve_shop(
    cfg: Config,
    shop: str,
    passwords: tuple[str, ...] = (),
    app_config: dict[str, Any] | None = None,
    host: str = "127.0.0.1",
) -> Iterator[tuple[Hub, str]]:
    """A hub on ``cfg`` holding the shop file ``shop``, its web view on a free port of
    ``host`` with ``cfg``'s ``[http]`` settings: ``(hub, base URL)``.  Each member in
    ``passwords`` logs in with ``<handle>-password``; ``app_config`` goes to
    ``create_app``."""
    engine = make_engine(cfg.db.url)
    migrate(engine)
    with session_factory(engine).begin() as session:
        apply_shop(session, parse_shop(shop))
        for handle in passwords:
            member = session.query(Member).filter_by(handle=handle).one()
            set_password(session, member, f"{handle}-password")
    engine.dispose()
    hub = Hub(cfg)
    hub.start()
    try:
        assert hub.wait_ready(10)
        app = create_app({"SECRET_KEY": "browser", **(app_config or {})}, hub=hub)
        http = cfg.http
        stop = serve_in_thread(app, (host, 0), threads=http.threads, streams=http.streams)
        try:
            host, port = stop.address  # type: ignore[attr-defined]
            yield hub, f"http://{host}:{port}"
        finally:
            stop()
    finally:
        hub.stop()


def streaming(hub: Hub) -> int:
    """Streams open on every web view of ``hub``."""
    feeds = [h.__self__ for h in hub.hooks if isinstance(getattr(h, "__self__", None), LiveFeed)]
    return sum(feed.subscribers for feed in feeds)


def open_page(browser: Any, errors: list[str], **options: Any) -> Any:
    """A new page (``browser.new_page(**options)``) whose console errors and uncaught
    exceptions go to ``errors``."""
    page = browser.new_page(**options)
    watch_errors(page, errors)
    return page


def watch_errors(page: Any, errors: list[str]) -> None:
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))


def csp_errors(errors: list[str]) -> list[str]:
    """The errors that say the Content Security Policy blocked something."""
    return [e for e in errors if "Content Security Policy" in e]


def screenshot(page: Any, name: str) -> None:
    """The whole page as ``test-artifacts/<name>.png``, for a person to look at."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def log_in(page: Any, site: str, handle: str, then: str = "/") -> None:
    """Log ``handle`` in (password ``<handle>-password``) and land on ``then``."""
    page.goto(f"{site}/login?next={then}")
    page.fill("#handle", handle)
    page.fill("#password", f"{handle}-password")
    page.click("form >> text=Log in")
    page.wait_for_url(f"{site}{then}")
