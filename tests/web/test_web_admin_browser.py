"""A coordinator edits a tool's policy in a real headless Chromium (tests/browser.py
has the setup: Debian's /usr/bin/chromium driven by Playwright, nothing downloaded)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hub.service.service import Hub
from tests import browser as chromium
from tests.helpers import wait_for

browser = chromium.browser_fixture  # Chromium, or a skip (a failure on CI)

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
    with chromium.serve_shop(hub_config, SHOP, passwords=("cora",)) as (hub, url):
        yield url, hub


def test_a_coordinator_edits_a_tools_policy(browser, site):
    url, hub = site
    errors: list[str] = []
    page = chromium.open_page(browser, errors, viewport={"width": 1280, "height": 900})
    chromium.log_in(page, url, "cora", "/admin/")
    page.click("#tools >> text=Edit")
    page.wait_for_url(f"{url}/admin/tools/laser-1")
    assert page.input_value("#policy") == "tap"
    assert page.input_value("#off_w") == "8"

    # timeout without an idle timeout: refused, the message next to the policy
    page.select_option("#policy", "timeout")
    page.select_option("#training", "laser")
    page.click("#tool-form >> text=Save")
    error = page.locator('.field-error[data-field="policy"]')
    chromium.sync_api.expect(error).to_contain_text("policy timeout needs power.idle_timeout")
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
    chromium.screenshot(page, "admin-tool")

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
    assert not chromium.csp_errors(errors), errors
