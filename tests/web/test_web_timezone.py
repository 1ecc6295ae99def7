"""One time zone on every page: the shop's, also in what the scripts write after a live
change, whatever the browser's own zone; a favicon; errors a person understands."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from hub.service.service import Hub
from tests import browser as chromium
from tests.helpers import Device, event_payload

browser = chromium.browser_fixture  # Chromium, or a skip (a failure on CI)

# 22 hours apart, so the shop's time and the browser's differ in the hour and the date
SHOP_ZONE, BROWSER_ZONE = "Pacific/Kiritimati", "America/Los_Angeles"

SHOP = """
members:
  - {handle: cora, name: Cora C., roles: [member, coordinator], badges: ["0A0B0C0D"]}
tools:
  - {id: laser-1, name: Laser cutter, devices: [laser-node], policy: tap}
"""


@pytest.fixture
def hub_site(hub_config, broker) -> Iterator[tuple[Hub, str]]:
    cfg = hub_config.replace(site={"timezone": ZoneInfo(SHOP_ZONE)})
    with chromium.serve_shop(cfg, SHOP, passwords=("cora",)) as served:
        yield served


def shop_clock(iso: str, zone: str) -> str:
    """The server's rule (web/__init__.py, ``clock``): the time today, else date and time."""
    at = datetime.fromisoformat(iso).astimezone(ZoneInfo(zone))
    today = datetime.now(ZoneInfo(zone)).date()
    return at.strftime("%H:%M" if at.date() == today else "%Y-%m-%d %H:%M")


def test_a_live_tool_card_shows_the_shops_time_not_the_browsers(browser, hub_site, broker):
    _, site = hub_site
    errors: list[str] = []
    context = browser.new_context(timezone_id=BROWSER_ZONE)
    page = context.new_page()
    chromium.watch_errors(page, errors)
    chromium.log_in(page, site, "cora")
    page.wait_for_selector("#live.on", timeout=5000)
    assert f"Times are the shop's: {SHOP_ZONE}" in page.locator("footer").inner_text()
    laser = Device(broker.port, "laser-node")
    try:
        laser.send(event_payload(1, 0, "badge", uid="0A0B0C0D"))
        page.wait_for_selector("#tool-laser-1.state-in_use", timeout=5000)
    finally:
        laser.close()
    since = page.locator("#tool-laser-1 [data-field=since]")
    iso = since.get_attribute("data-since")
    assert iso, "the script wrote no start time"
    assert since.inner_text() == f"since {shop_clock(iso, SHOP_ZONE)}"
    assert shop_clock(iso, SHOP_ZONE) != shop_clock(iso, BROWSER_ZONE)  # the test can fail
    # the server-rendered page says the same after a reload
    page.reload()
    assert page.locator("#tool-laser-1 [data-field=since]").inner_text() == since.inner_text()
    context.close()
    assert not errors, errors


def test_favicon_and_plain_error_messages(browser, hub_site):
    _, site = hub_site
    errors: list[str] = []
    missing: list[str] = []
    page = chromium.open_page(browser, errors)
    page.on("response", lambda r: missing.append(r.url) if r.status == 404 else None)
    page.goto(f"{site}/login")
    icon = page.locator("link[rel=icon]").get_attribute("href")
    answer = page.request.get(f"{site}{icon}")
    assert answer.ok and answer.headers["content-type"].startswith("image/svg+xml")
    assert page.request.get(f"{site}/favicon.ico").url.endswith(icon)

    page.fill("#handle", "cora")
    page.fill("#password", "not-her-password")
    page.click("form >> text=Log in")
    assert page.locator(".flash.error").inner_text() == "Wrong handle or password."
    assert not missing, missing  # nothing the page asked for is missing, the icon neither

    page.goto(f"{site}/admin/no-such-page")
    assert page.locator("h1").inner_text() == "Not Found (404)"
    assert not chromium.csp_errors(errors), errors
