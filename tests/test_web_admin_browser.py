"""A coordinator edits a tool's policy in a real headless Chromium (tests/test_browser.py
has the setup: Debian's /usr/bin/chromium driven by Playwright, nothing downloaded)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hub.db import make_engine, migrate, session_factory
from hub.models import Member
from hub.service import Hub
from hub.shopfile import apply_shop, parse_shop
from tests import test_browser
from tests.helpers import wait_for
from web import create_app, serve_in_thread
from web.auth import set_password

browser = test_browser.browser  # the fixture: Chromium, or a skip (a failure on CI)
SHOP = """
members:
  - {handle: cora, name: Cora C., roles: [member, coordinator]}
trainings:
  - {id: laser, name: "Laser <b>induction</b>"}
tools:
  - id: laser-1
    name: Laser cutter
    devices: [laser-node]
    policy: tap
    power: {off_w: 8, busy_w: 250}
"""


@pytest.fixture
def site(hub_config, broker) -> Iterator[tuple[str, Hub]]:
    engine = make_engine(hub_config.db.url)
    migrate(engine)
    with session_factory(engine).begin() as session:
        apply_shop(session, parse_shop(SHOP))
        cora = session.query(Member).filter_by(handle="cora").one()
        set_password(session, cora, "cora-password")
    engine.dispose()
    hub = Hub(hub_config)
    hub.start()
    assert hub.wait_ready(10)
    stop = serve_in_thread(create_app({"SECRET_KEY": "browser"}, hub=hub), ("127.0.0.1", 0))
    host, port = stop.address  # type: ignore[attr-defined]
    yield f"http://{host}:{port}", hub
    stop()
    hub.stop()


def test_a_coordinator_edits_a_tools_policy(browser, site):
    url, hub = site
    test_browser.ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    page.goto(f"{url}/login")
    page.fill("#handle", "cora")
    page.fill("#password", "cora-password")
    page.click("form >> text=Log in")
    page.wait_for_url(f"{url}/")
    page.goto(f"{url}/admin/")
    page.click("#tools >> text=Edit")
    page.wait_for_url(f"{url}/admin/tools/laser-1")
    assert page.input_value("#policy") == "tap"
    assert page.input_value("#off_w") == "8"

    # timeout without an idle timeout: refused, the message next to the policy
    page.select_option("#policy", "timeout")
    page.select_option("#training", "laser")
    page.click("#tool-form >> text=Save")
    error = page.locator('.field-error[data-field="policy"]')
    test_browser.sync_api.expect(error).to_contain_text("policy timeout needs power.idle_timeout")
    assert page.input_value("#policy") == "timeout"  # what was typed is kept
    assert hub.rules.data.tools["laser-1"].rules.policy == "tap"

    page.fill("#idle_timeout", "10m")
    page.fill("#hours", "Mon-Sun 08:00-20:00")
    page.click("#tool-form >> text=Save")
    page.wait_for_url(f"{url}/admin/tools/laser-1")
    flash = page.locator(".flash").inner_text()
    assert "policy tap -> timeout" in flash and "power.idle_timeout none -> 10m" in flash
    overrides = page.locator("#overrides").inner_text()
    assert "policy" in overrides and "@cora" in overrides and "hours" in overrides
    assert "Laser <b>induction</b>" in page.locator("#training").inner_text()  # as text
    page.screenshot(path=str(test_browser.ARTIFACTS / "admin-tool.png"), full_page=True)

    tool = wait_for(
        lambda: (t := hub.rules.data.tools["laser-1"]).rules.policy == "timeout" and t,
        what="the running hub to take the new policy",
    )
    assert tool.training == "laser" and tool.hours is not None
    assert str(tool.rules.idle_timeout) == "0:10:00"

    # give the policy back to the shop file: tap again, on the hub too
    page.click("#overrides tr:has(td:text-is('policy')) >> text=Give back to the shop file")
    page.wait_for_url(f"{url}/admin/tools/laser-1")
    assert page.input_value("#policy") == "tap"
    wait_for(lambda: hub.rules.data.tools["laser-1"].rules.policy == "tap", what="tap again")
    assert not [e for e in errors if "Content Security Policy" in e], errors
