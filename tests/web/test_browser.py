"""End to end in a real headless Chromium (Debian's package, driven by Playwright; the
setup is in tests/browser.py)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from hub.ledger.closing import close_period
from hub.service.service import Hub
from tests import browser as chromium
from tests.helpers import Device, event_payload

browser = chromium.browser_fixture  # Chromium, or a skip (a failure on CI)

SHOP = """
projects:
  - {id: commons, name: Shop commons}
members:
  - {handle: cora, name: Cora C., roles: [member, coordinator], badges: ["0A0B0C0D"]}
  - {handle: ada, name: "Ada <script>x</script>", roles: [member], badges: ["04A1B2C3D4E5F6"]}
tools:
  - {id: laser-1, name: Laser cutter, devices: [laser-node], policy: tap}
  - {id: lathe, name: Lathe, devices: [lathe-node], policy: tap}
  - {id: drill-1, name: Drill press, devices: [drill-node], policy: tap}
stations:
  - {device: door, kind: sign_in}
tasks:
  - id: empty-dust
    title: "Empty the <b>dust</b> collector"
    project: commons
    slots: 2
    hours: 0.5
  - {id: sweep, title: Sweep the floor, project: commons}
"""


@pytest.fixture
def hub_site(hub_config, broker) -> Iterator[tuple[Hub, str]]:
    with chromium.serve_shop(hub_config, SHOP, passwords=("cora", "ada")) as served:
        yield served


@pytest.fixture
def site(hub_site) -> str:
    return hub_site[1]


@pytest.fixture
def quick_site(hub_config, broker) -> Iterator[str]:
    """A site whose coordinator may close a period that began moments ago: the page's
    close is refused below period.min_length (1 h by default)."""
    cfg = hub_config.replace(period={"min_length": timedelta(milliseconds=1)})
    with chromium.serve_shop(cfg, SHOP, passwords=("cora", "ada")) as (_, url):
        yield url


def test_log_in_and_watch_a_tool_change_state_on_the_floor(browser, site, broker):
    errors: list[str] = []
    page = chromium.open_page(browser, errors, viewport={"width": 1280, "height": 800})

    page.goto(f"{site}/")
    assert page.locator("#tool-laser-1").get_attribute("class") == "tool state-free"
    assert "Log in to see who" in page.locator("#presence").inner_text()

    page.click("text=Log in")
    page.fill("#handle", "cora")
    page.fill("#password", "cora-password")
    page.click("form >> text=Log in")
    page.wait_for_url(f"{site}/")
    assert "Cora C. (coordinator)" in page.locator("header").inner_text()
    page.wait_for_selector("#live.on", timeout=5000)  # the event stream is open

    laser, door = Device(broker.port, "laser-node"), Device(broker.port, "door")
    try:
        door.send(event_payload(1, 0, "badge", uid="04A1B2C3D4E5F6"))
        laser.send(event_payload(1, 0, "badge", uid="04A1B2C3D4E5F6"))
        laser.send(event_payload(1, 1, "power", w=812.4))
        page.wait_for_selector("#tool-laser-1.state-busy", timeout=5000)
        card = page.locator("#tool-laser-1").inner_text()
        assert "Ada <script>x</script>" in card  # shown as text, never run
        assert "812 W" in card
        chromium.sync_api.expect(page.locator("#presence")).to_contain_text(
            "Ada <script>", timeout=5000
        )
        assert page.locator("main script").count() == 0  # the planted tag is text
    finally:
        laser.close()
        door.close()
    chromium.screenshot(page, "floor")

    page.goto(f"{site}/admin/")
    assert "Give a member the last unknown card" in page.content()
    page.click("#tools >> text=Lock >> nth=0")  # the drill press, first by id
    page.wait_for_url(f"{site}/admin/")
    page.goto(f"{site}/")
    page.wait_for_selector("#tool-drill-1.state-locked", timeout=5000)
    chromium.screenshot(page, "floor-locked")
    assert not chromium.csp_errors(errors), errors


def test_claim_a_task_finish_it_and_read_the_period_page(browser, quick_site):
    site = quick_site
    errors: list[str] = []
    page = chromium.open_page(browser, errors, viewport={"width": 1280, "height": 900})
    chromium.log_in(page, site, "cora", "/tasks")

    row = page.locator("#task-empty-dust")
    assert "Empty the <b>dust</b> collector" in row.locator(".task-title").inner_text()
    assert row.locator("svg.chart").count() == 1  # the weight history
    row.locator("button", has_text="Claim").click()
    page.wait_for_url(f"{site}/tasks")
    assert "Claimed" in page.locator(".flash").inner_text()
    row = page.locator("#task-empty-dust")
    assert "claimed by cora" in row.inner_text()
    assert row.locator(".slots-left").inner_text() == "1 / 2"
    assert row.locator("input[name=done-hours]").input_value() == "0.5"
    chromium.screenshot(page, "tasks")
    row.locator("input[name=done-hours]").fill("0.75")
    row.locator("button", has_text="Done").click()
    page.wait_for_url(f"{site}/tasks")
    assert "Done" in page.locator(".flash").inner_text()

    page.click("header >> text=Period")
    page.wait_for_url(f"{site}/periods")
    assert "running" in page.locator("#period-state").inner_text()
    assert page.locator("#effort-projects svg.chart").count() == 1
    page.check("#confirm")
    page.click("text=Close period now")
    page.wait_for_selector(".flash")
    assert "Closed period" in page.locator(".flash").inner_text()
    line = page.locator("#project-commons tr.member-line[data-member=cora]")
    assert line.locator("td").nth(1).inner_text() == "0.75"  # credited: 0.75 h at weight 1
    chromium.screenshot(page, "period")
    assert not chromium.csp_errors(errors), errors


def test_open_pages_follow_a_claim_and_a_close_without_a_reload(browser, hub_site):
    hub, site = hub_site
    errors: list[str] = []
    watcher = browser.new_context().new_page()  # Ada's phone
    actor = browser.new_context().new_page()  # Cora's laptop: another login
    failed: list[str] = []  # any fragment or stream request that did not work
    for page in (watcher, actor):
        chromium.watch_errors(page, errors)
        page.on(
            "response",
            lambda r: (
                failed.append(f"{r.status} {r.url}")
                if r.status >= 400 and not r.url.endswith("/favicon.ico")
                else None
            ),
        )
    chromium.log_in(watcher, site, "ada", "/tasks")
    chromium.log_in(actor, site, "cora", "/tasks")
    expect = chromium.sync_api.expect
    expect(watcher.locator("#live")).to_have_text("live")  # its stream is open
    watcher.evaluate("window.peershopNoReload = 1")  # gone if the page reloads
    row = watcher.locator("#task-empty-dust")
    expect(row.locator(".slots-left")).to_have_text("2 / 2")

    actor.locator("#task-empty-dust button", has_text="Claim").click()
    actor.wait_for_url(f"{site}/tasks")
    expect(row.locator(".slots-left")).to_have_text("1 / 2")
    expect(row).to_contain_text("claimed by cora")
    assert watcher.evaluate("window.peershopNoReload") == 1

    watcher.click("header >> text=Period")
    watcher.wait_for_url(f"{site}/periods")
    expect(watcher.locator("#period-state")).to_contain_text("running")
    expect(watcher.locator("#live")).to_have_text("live")
    watcher.evaluate("window.peershopNoReload = 2")
    # the close comes from outside the web view, as the hub's timer or a command makes it
    with hub.sm.begin() as session:
        close_period(session, hub.cfg, datetime.now(UTC), force=True)
    expect(watcher.locator("#period-state")).to_contain_text("closed")
    assert watcher.evaluate("window.peershopNoReload") == 2
    assert not failed, failed
    assert not [e for e in errors if "Content Security Policy" in e or "404" not in e], errors
