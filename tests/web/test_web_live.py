"""The web app on a running hub: waitress, the live stream within 1 s, metrics, health."""

from __future__ import annotations

import gc
import json
import time
import urllib.request
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from hub.ledger import taskboard
from hub.ledger.closing import close_period
from hub.service.service import Hub
from hub.shopfile.apply import apply_shop
from hub.shopfile.parse import parse_shop
from hub.store.db import make_engine, migrate, session_factory
from tests.helpers import Device, StreamReader, event_payload, wait_for
from web import create_app, serve_hub, serve_in_thread
from web.state import LiveFeed

SHOP = """
projects:
  - {id: commons, name: Shop commons}
members:
  - {handle: ada, name: "Ada <b>L.</b>", roles: [member, coordinator], badges: ["04A1B2C3D4E5F6"]}
tools:
  - {id: drill-1, name: Drill press, devices: [drill-node], policy: tap}
  - {id: laser-1, name: Laser cutter, devices: [laser-node], policy: tap}
tasks:
  - {id: sweep, title: Sweep the floor, project: commons}
stations:
  - {device: desk, kind: task_station}
"""
ADA = "04A1B2C3D4E5F6"


@pytest.fixture
def live(hub_config, broker) -> Iterator[tuple[Hub, str]]:
    engine = make_engine(hub_config.db.url)
    migrate(engine)
    with session_factory(engine).begin() as session:
        apply_shop(session, parse_shop(SHOP))
    engine.dispose()
    hub = Hub(hub_config)
    hub.start()
    assert hub.wait_ready(10)
    app = create_app({"SECRET_KEY": "live", "STREAM_HEARTBEAT_S": 1.0}, hub=hub)
    stop = serve_in_thread(app, ("127.0.0.1", 0))
    host, port = stop.address  # type: ignore[attr-defined]
    yield hub, f"http://{host}:{port}"
    stop()
    hub.stop()


def test_a_badge_at_a_tool_reaches_the_stream_within_a_second(live, broker):
    _hub, base = live
    reader = StreamReader(base)
    wait_for(lambda: reader.find("tool", tool="drill-1"), 10, "the initial states")
    device = Device(broker.port, "drill-node")
    try:
        sent = time.perf_counter()  # the reader's clock
        device.send(event_payload(1, 0, "badge", uid=ADA))
        at, data = wait_for(
            lambda: reader.find("tool", tool="drill-1", state="in_use"),
            10,
            "drill-1 in use on the stream",
        )
        assert 0 <= at - sent < 1.0, f"stream delivery took {at - sent:.3f} s"
        assert data["member"] is None and data["handle"] is None  # anonymous: no names
        assert wait_for(lambda: reader.find("batch"), 5, "a batch event")
        assert wait_for(lambda: reader.find("session", tool="drill-1", event="start"), 5)
        device.send(event_payload(1, 1, "power", w=812.4))
        wait_for(lambda: reader.find("tool", tool="drill-1", state="busy"), 10, "busy")
    finally:
        device.close()
        reader.close()


def test_an_idle_tool_is_sent_once(live):
    """A tool that has not changed since the hub started is in the initial states and
    then not again, however often the feed compares."""
    hub, base = live
    (feed,) = [h.__self__ for h in hub.hooks if isinstance(getattr(h, "__self__", None), LiveFeed)]
    reader = StreamReader(base)
    try:
        wait_for(lambda: reader.find("tool", tool="drill-1"), 10, "the initial states")
        for _ in range(3):
            feed.compare()
        feed.publish("batch", {"marker": True})  # everything sent before it has arrived
        wait_for(lambda: reader.find("batch", marker=True), 10, "the marker")
        sent = [data for _at, name, data in reader.events if name == "tool"]
        assert sorted(d["tool"] for d in sent) == ["drill-1", "laser-1"]
    finally:
        reader.close()


def test_board_and_period_changes_reach_pages_that_watch_them(live, broker):
    """Whoever changes the board or a period (here: the database directly, as a
    ``peershop`` command or another hub would, and a task station through the hub),
    a stream of ``?topics=tasks,period`` says so, and carries nothing else."""
    hub, base = live
    board = StreamReader(base, path="/api/v1/stream?topics=tasks,period")
    floor = StreamReader(base)
    try:
        wait_for(lambda: floor.find("tool", tool="drill-1"), 10, "the floor's initial states")
        with hub.sm.begin() as s:
            taskboard.want(s, "ada", "sweep", datetime.now(UTC))
        wait_for(lambda: board.find("tasks"), 10, "a tasks event after a hint")
        assert floor.find("tasks"), "a stream of every topic gets it too"

        board.events.clear()
        desk = Device(broker.port, "desk")
        try:  # Ada picks the task at the desk, then badges: her effort starts
            desk.send(event_payload(1, 0, "button", name="task:sweep"))
            desk.send(event_payload(1, 1, "badge", uid=ADA))
            wait_for(lambda: board.find("tasks"), 10, "a tasks event after a station's effort")
        finally:
            desk.close()

        with hub.sm.begin() as s:
            close_period(s, hub.cfg, datetime.now(UTC), force=True)
        wait_for(lambda: board.find("period"), 10, "a period event after a close")

        drill = Device(broker.port, "drill-node")
        try:
            drill.send(event_payload(1, 0, "badge", uid=ADA))
            wait_for(lambda: floor.find("tool", tool="drill-1", state="in_use"), 10, "in use")
        finally:
            drill.close()
        assert {name for _at, name, _data in board.events} <= {"tasks", "period"}
        assert all(set(data) == {"at"} for _at, _name, data in board.events)  # no names
    finally:
        board.close()
        floor.close()
    bad = urllib.request.Request(f"{base}/api/v1/stream?topics=tasks,gossip")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(bad)
    assert refused.value.code == 400


def test_pages_api_metrics_and_health_over_waitress(live, broker):
    hub, base = live
    floor = urllib.request.urlopen(f"{base}/").read().decode()
    assert "Drill press" in floor and 'data-live="yes"' in floor
    tools = json.load(urllib.request.urlopen(f"{base}/api/v1/tools"))["tools"]
    assert {t["id"]: t["state"] for t in tools} == {"drill-1": "free", "laser-1": "free"}
    info = json.load(urllib.request.urlopen(f"{base}/api/v1/hub"))
    assert info["live"] and info["broker"]["connected"] and len(info["public_key"]) == 44
    health = urllib.request.urlopen(f"{base}/healthz")
    assert health.status == 200
    device = Device(broker.port, "laser-node")
    device.send(b"{not json", topic="peershop/dev/laser-node/event")
    device.close()
    wait_for(lambda: hub.counters.dead_letters >= 1, 10, "the dead letter")
    reader = Device(broker.port, "drill-node")
    reader.send(event_payload(1, 0, "badge", uid="0EEEEEEE"))  # answered: unknown_badge
    reader.close()
    wait_for(lambda: hub.counters.decisions >= 1, 10, "the decision")
    metrics = urllib.request.urlopen(f"{base}/metrics").read().decode()
    assert "peershop_dead_letters_total 1.0" in metrics
    assert "peershop_broker_connected 1.0" in metrics
    assert "peershop_db_commit_seconds" in metrics
    # the histograms a Grafana panel reads (docs/monitoring.md)
    assert "peershop_decision_seconds_count 1.0" in metrics
    assert 'peershop_decision_seconds_bucket{le="+Inf"} 1.0' in metrics
    assert "peershop_commit_duration_seconds_count" in metrics


def test_healthz_is_503_with_the_reason_when_the_broker_is_gone(live, monkeypatch):
    hub, base = live
    monkeypatch.setattr(type(hub.link), "is_connected", property(lambda self: False))
    with pytest.raises(urllib.error.HTTPError) as failed:
        urllib.request.urlopen(f"{base}/healthz")
    assert failed.value.code == 503
    assert json.load(failed.value)["reason"].startswith("broker")


def test_stopping_the_web_server_ends_open_streams(hub_config, broker):
    engine = make_engine(hub_config.db.url)
    migrate(engine)
    engine.dispose()
    hub = Hub(hub_config)
    hub.start()
    try:
        app = create_app({"SECRET_KEY": "x"}, hub=hub)
        stop = serve_in_thread(app, ("127.0.0.1", 0))
        host, port = stop.address  # type: ignore[attr-defined]
        reader = StreamReader(f"http://{host}:{port}")
        started = time.monotonic()
        stop()
        assert time.monotonic() - started < 5
        reader._thread.join(5)
        assert not reader._thread.is_alive()
        assert hub.hooks == []
    finally:
        hub.stop()


def test_a_taken_port_leaves_the_hub_running_without_its_web_view(live, caplog):
    hub, base = live
    host, port = base.removeprefix("http://").split(":")
    with warnings.catch_warnings():
        # waitress does not close the socket it failed to bind; collect it here rather
        # than let its ResourceWarning land in some later test.
        warnings.simplefilter("ignore", ResourceWarning)
        stop = serve_hub(hub, (host, int(port)))  # the fixture's server holds the port
        gc.collect()
    stop()
    assert "web view not started" in caplog.text
    assert hub.ingest_alive and hub.health() == (True, "ok")
