"""The Nu Html Checker (vnu, the W3C's validator; npm ``vnu-jar``, tests/package.json)
finds no error in the HTML of any page, for each visitor (tests/site_pages.py has the
shop and the pages).  The HTML is what the server sent, saved once and checked in one run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import browser as chromium
from tests.site_pages import PAGES, VISITORS, serve_busy_shop, tour, vnu

browser = chromium.browser_fixture  # Chromium, or a skip (a failure on CI)


@pytest.fixture
def site(hub_config, broker) -> Iterator[tuple[str, int]]:
    with serve_busy_shop(hub_config, broker.port) as served:
        yield served


def test_every_page_is_valid_html(browser, site, tmp_path):
    url, period = site
    errors: list[str] = []
    saved: dict[Path, str] = {}  # file -> "visitor path"
    for visitor, who in VISITORS.items():
        for path, page in tour(browser, url, period, visitor, errors):
            # as sent (page.content() would be the DOM after the scripts ran)
            response = page.request.get(f"{url}{path}")
            file = tmp_path / f"{who}-{path.strip('/').replace('/', '-') or 'floor'}.html"
            file.write_text(response.text(), encoding="utf-8")
            saved[file] = f"{who} {path}"
    assert len(saved) == sum(len(paths) for paths in PAGES.values())
    messages = vnu(sorted(saved))
    problems = [
        f"{saved.get(Path(m.get('url', '').removeprefix('file:')), m.get('url'))}"
        f" line {m.get('lastLine')}: {m['message']}"
        f" [{m.get('extract', '').strip()}]"
        for m in messages
        if m["type"] == "error" or m.get("subType") == "fatal"
    ]
    assert not problems, f"{len(problems)} errors:\n" + "\n".join(problems)
