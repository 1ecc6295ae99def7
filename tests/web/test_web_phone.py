"""Every page on a phone (390 x 844, a common size) and at a desk, for each visitor: no
sideways scroll, buttons and fields a thumb can hit, the member's main actions in
reach (tests/site_pages.py has the shop and the pages)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import browser as chromium
from tests.site_pages import MEMBER, VISITORS, serve_busy_shop, tour

browser = chromium.browser_fixture  # Chromium, or a skip (a failure on CI)

PHONE = {"width": 390, "height": 844}
DESK = {"width": 1280, "height": 800}
TOUCH = 44  # CSS px: the smallest touch target of WCAG 2.5.5 and Apple's and Google's guides

# what a thumb hits: buttons, fields (a checkbox by its label), the header's links
TARGETS = """() => Array.from(document.querySelectorAll(
    'button, input:not([type=hidden]), select, header.top a'))
  .filter(el => el.getClientRects().length)
  .map(el => el.type === 'checkbox' && el.closest('label') ? el.closest('label') : el)
  .map(el => [el.outerHTML.slice(0, 80), el.getBoundingClientRect().height])"""

WIDTHS = "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"

# the outermost elements that reach past the screen's right edge, to name in a failure
WIDE = """() => Array.from(document.querySelectorAll('body *'))
  .filter(el => el.getBoundingClientRect().right > document.documentElement.clientWidth + 1)
  .filter(el => !el.parentElement.closest('.scroll'))
  .map(el => el.outerHTML.slice(0, 60)).slice(-3)"""


@pytest.fixture
def site(hub_config, broker) -> Iterator[tuple[str, int]]:
    with serve_busy_shop(hub_config, broker.port) as served:
        yield served


def test_every_page_fits_a_phone_with_targets_a_thumb_can_hit(browser, site):
    url, period = site
    errors: list[str] = []
    problems: list[str] = []
    for visitor, who in VISITORS.items():
        for path, page in tour(browser, url, period, visitor, errors, viewport=PHONE):
            scroll, client = page.evaluate(WIDTHS)
            if scroll > client:
                wide = page.evaluate(WIDE)
                problems.append(f"{who} {path}: {scroll} px wide on a {client} px screen: {wide}")
            for html, height in page.evaluate(TARGETS):
                if height < TOUCH:
                    problems.append(f"{who} {path}: {height:.0f} px high: {html}")
            header = page.locator("header.top").bounding_box()
            if header["height"] > 2 * TOUCH + 16:
                problems.append(f"{who} {path}: the header is {header['height']:.0f} px high")
            chromium.screenshot(page, f"phone-{who}-{path.strip('/').replace('/', '-') or 'floor'}")
    assert not problems, "\n".join(problems)
    assert not chromium.csp_errors(errors), errors


def test_a_member_wants_and_claims_a_task_on_a_phone(browser, site):
    url, _ = site
    page = chromium.open_page(browser, errors := [], viewport=PHONE)
    chromium.log_in(page, url, MEMBER, "/tasks")
    row = page.locator("#task-sweep-floor")
    for name in ("Want", "Claim"):
        button = row.locator("button", has_text=name)
        box = button.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], (name, box)
    row.locator("button", has_text="Claim").click()
    page.wait_for_url(f"{url}/tasks")
    assert "Claimed" in page.locator(".flash").inner_text()
    assert not chromium.csp_errors(errors), errors


def test_every_page_fits_a_desk_screen(browser, site):
    url, period = site
    errors: list[str] = []
    problems: list[str] = []
    for visitor, who in VISITORS.items():
        for path, page in tour(browser, url, period, visitor, errors, viewport=DESK):
            scroll, client = page.evaluate(WIDTHS)
            if scroll > client:
                problems.append(f"{who} {path}: {scroll} px wide on a {client} px screen")
            header = page.locator("header.top").bounding_box()
            if header["height"] > TOUCH + 16:
                problems.append(f"{who} {path}: the header is {header['height']:.0f} px high")
    assert not problems, "\n".join(problems)
