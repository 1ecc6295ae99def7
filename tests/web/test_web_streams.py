"""Live pages cannot take every thread of the web server (web/stream.py, web/serve.py).

Each open live page holds one waitress thread for its event stream.  The streams are
capped (``http.streams``) below the threads (``http.threads``): a stream beyond the cap
gets 503 with ``Retry-After``, pages and the API keep their threads, a closed stream
gives its slot back at once, and a refused page polls until a slot is free.
"""

from __future__ import annotations

import http.client
import json
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, closing
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest

from hub.config import PAGE_THREADS
from hub.errors import ConfigError
from hub.ledger import taskboard
from hub.service.service import Hub
from tests import browser as chromium
from tests.conftest import make_config
from tests.helpers import Device, StreamReader, event_payload, wait_for
from web import serve_hub
from web.stream import Refused, StreamSlots

browser = chromium.browser_fixture  # Chromium, or a skip (a failure on CI)

SHOP = """
projects:
  - {id: commons, name: Shop commons}
members:
  - {handle: ada, name: Ada L., roles: [member, coordinator], badges: ["04A1B2C3D4E5F6"]}
  - {handle: bob, name: Bob B., roles: [member]}
tools:
  - {id: drill-1, name: Drill press, devices: [drill-node], policy: tap}
tasks:
  - {id: sweep, title: Sweep the floor, project: commons, slots: 2}
"""
ADA = "04A1B2C3D4E5F6"
THREADS, STREAMS = PAGE_THREADS + 2, 2  # the fewest threads that leave pages theirs


def _config(tmp_path, broker, **http):
    return make_config(
        tmp_path,
        broker,
        mqtt={"client_id": f"peershop-hub-{uuid.uuid4().hex[:8]}"},
        http=http,
    )


@pytest.fixture
def capped(tmp_path, broker) -> Iterator[tuple[Hub, str]]:
    """A hub on the shop, its web view on a free port as ``peershop run`` serves it
    (``serve_hub``: http.threads and http.streams from its config)."""
    cfg = _config(tmp_path, broker, threads=THREADS, streams=STREAMS)
    with chromium.serve_shop(cfg, SHOP) as (hub, _base):
        # a second web view of the same hub, made by serve_hub alone
        stop = serve_hub(hub, ("127.0.0.1", 0))
        try:
            host, port = stop.address  # type: ignore[attr-defined]
            yield hub, f"http://{host}:{port}"
        finally:
            stop()


def _get(base: str, path: str, method: str = "GET") -> http.client.HTTPResponse:
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request(method, path)
    return conn.getresponse()


def test_a_stream_beyond_the_cap_is_refused_and_pages_still_load(capped):
    hub, base = capped
    with ExitStack() as streams:
        for _ in range(STREAMS):
            reader = streams.enter_context(closing(StreamReader(base)))
            wait_for(lambda r=reader: r.find("tool", tool="drill-1"), 10, "the initial state")
        refused = _get(base, "/api/v1/stream")
        assert refused.status == 503
        assert refused.getheader("Retry-After") == "30"
        assert refused.getheader("Content-Type") == "application/json"
        error = json.loads(refused.read())["error"]
        assert error["code"] == "streams_full" and str(STREAMS) in error["message"]
        floor = urllib.request.urlopen(f"{base}/", timeout=30).read().decode()
        assert "Drill press" in floor and 'data-retry="30"' in floor
        tools = json.load(urllib.request.urlopen(f"{base}/api/v1/tools", timeout=30))
        assert [t["id"] for t in tools["tools"]] == ["drill-1"]
        assert chromium.streaming(hub) == STREAMS
        metrics = urllib.request.urlopen(f"{base}/metrics", timeout=30).read().decode()
        assert "peershop_web_streams_refused_total 1.0" in metrics
        assert f"peershop_web_stream_slots {float(STREAMS)}" in metrics


def test_more_live_tabs_than_threads_leave_pages_their_threads(capped):
    """The defect: as many open streams as threads took every thread, and every other
    request queued behind streams that never end."""
    _hub, base = capped
    answers = [_get(base, "/api/v1/stream") for _ in range(THREADS)]
    try:
        assert sorted(a.status for a in answers) == [200] * STREAMS + [503] * (THREADS - STREAMS)
        assert "Drill press" in urllib.request.urlopen(f"{base}/", timeout=30).read().decode()
        assert urllib.request.urlopen(f"{base}/healthz", timeout=30).status == 200
    finally:
        for answer in answers:
            answer.close()


def test_a_closed_stream_gives_its_slot_to_the_next_at_once(tmp_path, broker):
    """No heartbeat for an hour: only waitress's view of the socket can end the stream
    whose browser went away, and free its slot."""
    cfg = _config(tmp_path, broker, threads=THREADS, streams=STREAMS)
    with chromium.serve_shop(cfg, SHOP, app_config={"STREAM_HEARTBEAT_S": 3600.0}) as (hub, base):
        first, second = StreamReader(base), StreamReader(base)
        try:
            wait_for(lambda: chromium.streaming(hub) == STREAMS, 10, "both streams open")
            assert _get(base, "/api/v1/stream").status == 503
            first.close()
            wait_for(lambda: chromium.streaming(hub) == STREAMS - 1, 10, "the closed stream's end")
            third = StreamReader(base)  # admitted: AssertionError on anything but a stream
            third.close()
        finally:
            first.close()
            second.close()


def test_a_stream_that_never_ran_gives_its_slot_back(capped):
    """A HEAD (or a client gone before the first chunk) never starts the generator."""
    hub, base = capped
    for _ in range(STREAMS + 1):
        head = _get(base, "/api/v1/stream", method="HEAD")
        assert head.status == 200
        head.close()
    with ExitStack() as streams:
        for _ in range(STREAMS):
            streams.enter_context(closing(StreamReader(base)))
        assert chromium.streaming(hub) == STREAMS


def test_streams_and_threads_are_checked_at_the_door(tmp_path, broker):
    cfg = _config(tmp_path, broker)
    assert (cfg.http.threads, cfg.http.streams) == (48, 32)
    assert _config(tmp_path, broker, threads=24).http.streams == 16  # two thirds
    assert _config(tmp_path, broker, threads=8).http.streams == 0  # every page polls
    with pytest.raises(ConfigError, match=r"http\.streams: must leave 8 of http\.threads"):
        _config(tmp_path, broker, threads=16, streams=9)
    with pytest.raises(ConfigError, match=r"http\.threads: must be between 8 and 1024"):
        _config(tmp_path, broker, threads=4)
    with pytest.raises(ConfigError, match=r"http\.streams: must be a whole number"):
        _config(tmp_path, broker, streams="many")


def test_stream_slots_count_what_they_refuse():
    slots = StreamSlots(1, per_client=4)
    assert slots.take("10.0.0.5") is None
    assert slots.take("10.0.0.6") is slots.take("10.0.0.5") is Refused.FULL
    assert (slots.open, slots.refused) == (1, 2)
    slots.give_back("10.0.0.5")
    assert slots.take("10.0.0.6") is None


def test_a_refused_floor_polls_then_goes_live_again(browser, tmp_path, broker):
    """Chromium's EventSource gives up on a 503; the floor polls, shows a tool's change
    within the polling interval, and is live again once a slot is free."""
    poll_s, retry_s = 1, 2
    cfg = _config(tmp_path, broker, threads=PAGE_THREADS + 1, streams=1)
    app_config = {"STREAM_POLL_S": poll_s, "STREAM_RETRY_S": retry_s}
    with chromium.serve_shop(cfg, SHOP, app_config=app_config) as (hub, base):
        wall = StreamReader(base)  # the one stream there is: a wall screen's
        errors: list[str] = []
        page = chromium.open_page(browser, errors)
        failed: set[tuple[int, str]] = set()
        page.on(
            "response",
            lambda r: failed.add((r.status, urlsplit(r.url).path)) if r.status >= 400 else None,
        )
        drill = Device(broker.port, "drill-node")
        try:
            page.goto(f"{base}/")
            page.wait_for_selector('#live[data-mode="polling"]', timeout=10_000)
            assert "not live" in page.locator("#live").inner_text()
            chromium.screenshot(page, "floor-polling")
            drill.send(event_payload(1, 0, "badge", uid=ADA))
            # a poll (every poll_s) or a retry (every ~retry_s, refused again) shows it
            page.wait_for_selector("#tool-drill-1.state-in_use", timeout=poll_s * 3000)
            assert page.locator('#live[data-mode="polling"]').count() == 1

            wall.close()  # the wall screen goes away; the floor takes its slot
            page.wait_for_selector('#live[data-mode="live"]', timeout=(retry_s * 2 + 5) * 1000)
            drill.send(event_payload(1, 1, "power", w=640.0))
            page.wait_for_selector("#tool-drill-1.state-busy", timeout=5000)
            assert chromium.streaming(hub) == 1
            # the stream's 503s (and the favicon the hub has not) are the only failures
            assert failed <= {(503, "/api/v1/stream"), (404, "/favicon.ico")}, failed
            assert (503, "/api/v1/stream") in failed
            assert not [e for e in errors if "Failed to load resource" not in e], errors
            page.close()  # the tab closes: its stream ends and gives the slot back
            wait_for(lambda: chromium.streaming(hub) == 0, 10, "the closed tab's stream to end")
        finally:
            drill.close()
            wall.close()
            page.close()


def test_a_refused_task_board_polls_then_goes_live_again(browser, tmp_path, broker):
    """live.js, on the task board: the same fallback as the floor's."""
    poll_s, retry_s = 1, 2
    cfg = _config(tmp_path, broker, threads=PAGE_THREADS + 1, streams=1)
    app_config = {"STREAM_POLL_S": poll_s, "STREAM_RETRY_S": retry_s}
    with chromium.serve_shop(cfg, SHOP, ("ada",), app_config) as (hub, base):
        wall = StreamReader(base)
        errors: list[str] = []
        page = chromium.open_page(browser, errors)
        expect = chromium.sync_api.expect
        try:
            chromium.log_in(page, base, "ada", "/tasks")
            page.wait_for_selector('#live[data-mode="polling"]', timeout=10_000)
            slots = page.locator("#task-sweep .slots-left")
            expect(slots).to_have_text("2 / 2")
            with hub.sm.begin() as session:  # a claim from outside this page
                taskboard.claim(session, "ada", "sweep", datetime.now(UTC), hub.cfg)
            expect(slots).to_have_text("1 / 2", timeout=poll_s * 3000)
            assert page.locator('#live[data-mode="polling"]').count() == 1

            wall.close()
            page.wait_for_selector('#live[data-mode="live"]', timeout=(retry_s * 2 + 5) * 1000)
            with hub.sm.begin() as session:
                taskboard.claim(session, "bob", "sweep", datetime.now(UTC), hub.cfg)
            expect(slots).to_have_text("0 / 2", timeout=5000)
            assert not [e for e in errors if "Failed to load resource" not in e], errors
        finally:
            wall.close()
            page.close()
