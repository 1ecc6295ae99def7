"""axe-core, the accessibility checker of browsers' developer tools, on every page for
each visitor: no serious or critical violation (tests/site_pages.py has the shop and the
pages; axe-core comes from npm, tests/package.json)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import browser as chromium
from tests.site_pages import VISITORS, node_package, serve_busy_shop, tour

browser = chromium.browser_fixture  # Chromium, or a skip (a failure on CI)

SEVERE = ("serious", "critical")

RUN_AXE = """async () => {
  const result = await axe.run(document, {resultTypes: ["violations"]});
  return result.violations.map(v => ({
    id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.map(n => n.target.join(" ")).slice(0, 5),
  }));
}"""


@pytest.fixture
def site(hub_config, broker) -> Iterator[tuple[str, int]]:
    with serve_busy_shop(hub_config, broker.port) as served:
        yield served


@pytest.mark.parametrize("width", [390, 1280])
def test_no_page_has_a_serious_accessibility_violation(browser, site, width):
    axe = node_package("axe-core", "axe.min.js")
    url, period = site
    errors: list[str] = []
    problems: list[str] = []
    # axe is injected as a script of the page's own, which the site's CSP (no inline
    # script) would refuse: this page alone ignores the CSP
    viewport = {"width": width, "height": 844}
    for visitor, who in VISITORS.items():
        for path, page in tour(
            browser, url, period, visitor, errors, viewport=viewport, bypass_csp=True
        ):
            page.add_script_tag(path=str(axe))
            for v in page.evaluate(RUN_AXE):
                if v["impact"] in SEVERE:
                    problems.append(
                        f"{who} {path}: {v['impact']} {v['id']} ({v['help']}): {v['nodes']}"
                    )
    assert not problems, "\n".join(problems)
