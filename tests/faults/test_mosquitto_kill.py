"""Mosquitto killed with SIGKILL and restarted: the sessions resume and nothing is lost.

Issue 9.  Real processes: a private Mosquitto with persistence (``autosave_interval 1``),
``peershop run`` on the test pass's database, and ten devices (``tests/fleet.py``): simulated
ones (an outbox that keeps an event until its PUBACK) or real agents (:class:`AgentFleet`,
``devices/agent.py`` with its SQLite outbox, mock pins).

With persistence Mosquitto writes its state to disk only every ``autosave_interval``, but
PUBACKs an event as soon as it holds it in memory, so a SIGKILL loses what it took in
since the last save.  What makes up for it:

- an event a device has not had a PUBACK for is still in the device's outbox, and is
  sent again once the broker is back;
- the agent keeps what the broker PUBACKed in the last ``resend_window_s`` (10 s, more
  than the autosave interval) and sends it again after every reconnect;
- an event the broker had handed to the hub is stored by the hub whether or not the
  connection it came on still exists (the ack of a dead connection is dropped, and a
  redelivered copy is recognised by its identity);
- what the broker had saved (the hub's persistent session, the events queued for it)
  comes back with the broker, from the same persistence file on the same port.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from hub.service.broker import PrivateBroker
from hub.service.service import Hub
from hub.shopfile.apply import apply_shop
from hub.shopfile.parse import parse_shop_file
from hub.store.db import make_engine, migrate, session_factory
from hub.store.models import Outbox
from tests.conftest import make_config
from tests.fleet import BOOT, TOTAL, AgentFleet, Shop
from tests.helpers import REPO, Listener, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[Shop]:
    with Shop(tmp_path) as s:
        yield s


def hub_connects(shop: Shop) -> list[str]:
    """The hub's ``connected`` log lines, each saying whether the broker had its session."""
    return [line for line in shop.hub.log.read_text().splitlines() if "session present" in line]


def acked_by_broker(fleet) -> set[tuple[str, int, int]]:
    """Identities the broker has PUBACKed: gone from the devices' outboxes."""
    return {(d.device_id, BOOT, s) for d in fleet.devices for s in set(d.sent) - set(d.pending())}


def test_mosquitto_killed_mid_stream_sessions_resume_and_outboxes_deliver(shop: Shop):
    shop.start_hub()
    fleet = shop.start_fleet()
    shop.wait_stored(1_000)
    wait_for(lambda: fleet.published >= 6_000, what="6,000 events published")
    connects = len(hub_connects(shop))
    shop.broker.kill()
    acked = acked_by_broker(fleet)
    stored_at_kill = shop.stored()
    assert fleet.published < TOTAL, "the stream ended before the kill"
    # The devices go on producing into their outboxes while the broker is gone.
    published = fleet.published
    wait_for(lambda: fleet.published >= published + 500, what="devices producing offline")
    shop.broker.start()  # the same port and the same persistence file
    fleet.finish()
    expected = fleet.expected()
    # Every event a device still held is stored, once; so is everything the broker had
    # passed on to the hub or saved.  (What it had neither: the xfail below.)
    must = expected - acked
    wait_for(
        lambda: must <= set(shop.identities()),
        timeout=90,
        what=f"the {len(must)} events the devices resent (hub log: {shop.hub.log})",
    )
    rows = shop.identities()
    assert len(rows) == len(set(rows)) and set(rows) <= expected
    assert shop.stored() > stored_at_kill
    assert shop.dead_letters() == 0
    # Everyone lost the broker and came back on their own; the hub found its session.
    assert all(d.link.counters.disconnects >= 1 for d in fleet.devices)
    assert shop.hub.proc is not None and shop.hub.proc.poll() is None, "the hub died"
    after = hub_connects(shop)[connects:]
    assert after, "the hub did not reconnect"
    assert "session present: True" in after[0], after[0]
    assert shop.hub.terminate() == 0


def test_mosquitto_killed_while_events_queue_for_the_hub_loses_nothing(shop: Shop, tmp_path: Path):
    shop.start_hub()
    fleet = shop.fleet = AgentFleet(tmp_path, shop.broker.port)
    fleet.start()
    shop.wait_stored(1_000)
    assert shop.hub.proc is not None
    # The hub stops reading (SIGSTOP), so events queue at the broker as they do while a
    # hub is slow or restarting; two seconds of them later the broker is killed, having
    # PUBACKed events it had not yet saved (without the agents' resend window, about
    # 1,600 of the 20,000 were lost here).
    shop.hub.proc.send_signal(signal.SIGSTOP)
    try:
        published = fleet.published
        wait_for(lambda: fleet.published >= published + 4_000, what="events queueing")
        assert fleet.published < TOTAL, "the stream ended before the kill"
        shop.broker.kill()
    finally:
        shop.hub.proc.send_signal(signal.SIGCONT)
    shop.broker.start()
    shop.assert_exactly_once()
    # The agents did send again what the broker had acknowledged.
    assert sum(a.counters["resent"] for a in fleet.agents) > 0
    assert all(a.link.counters.disconnects >= 1 for a in fleet.agents)


def test_events_queued_for_a_stopped_hub_survive_a_mosquitto_kill_once_saved(shop: Shop):
    shop.start_hub()  # the hub's persistent session now exists at the broker
    assert shop.hub.terminate() == 0
    fleet = shop.start_fleet()
    fleet.finish()  # the broker has PUBACKed every event: they wait there for the hub
    last_puback = time.time()
    saved = shop.broker.workdir / "mosquitto.db"
    # Mosquitto writes the file whole and renames it: a file newer than the last PUBACK
    # holds every event (the broker runs one thread, so it PUBACKed them before saving).
    wait_for(
        lambda: saved.exists() and saved.stat().st_mtime > last_puback,
        timeout=10,
        what="Mosquitto's autosave after the last PUBACK",
    )
    assert shop.stored() == 0  # all of them are at the broker
    shop.broker.kill()
    shop.broker.start()
    shop.start_hub()
    shop.wait_stored(TOTAL)
    rows = shop.identities()
    assert len(rows) == TOTAL and set(rows) == fleet.expected()
    assert shop.dead_letters() == 0
    assert "session present: True" in hub_connects(shop)[-1]
    assert shop.hub.terminate() == 0


def test_the_hubs_retained_messages_come_back_after_a_mosquitto_kill(tmp_path: Path):
    """Allow-lists and tool states the broker PUBACKed and never saved are sent again.

    The broker saves every hour here, not every second, so the hub's retained messages
    are all in the unsaved window when it is killed: the same loss as a kill within a
    second of a change, made certain."""
    broker = PrivateBroker(tmp_path / "mosquitto", extra_conf="autosave_interval 3600").start()
    hub = None
    listeners: list[Listener] = []
    try:
        cfg = make_config(tmp_path, broker, mqtt={"client_id": f"hub-{uuid.uuid4().hex[:8]}"})
        engine = make_engine(cfg.db.url)
        migrate(engine)
        with session_factory(engine).begin() as session:
            apply_shop(session, parse_shop_file(REPO / "examples" / "shop.yaml"))
        engine.dispose()
        hub = Hub(cfg)  # queues every tool's state and allow-list in its outbox
        with hub.sm() as session:
            topics = set(session.scalars(select(Outbox.topic).where(Outbox.retain)))
        assert any(t.endswith("/allowlist") for t in topics)
        assert any(t.endswith("/state") for t in topics)
        hub.start()
        assert hub.wait_ready(15)
        wait_for(lambda: hub.outbox.pending() == 0, what="PUBACKs for the hub's outbox")

        def retained() -> dict[str, bytes]:
            """What a device or a dashboard subscribing now is given: the retained
            message of every topic (waits for all, fails if one is missing)."""
            listener = Listener(broker.port, *topics)
            listeners.append(listener)
            listener.wait(lambda ms: {m.topic for m in ms if m.retain} >= topics, timeout=30)
            return {m.topic: m.payload for m in listener.messages if m.retain}

        before = retained()
        allowlists = sum(t.endswith("/allowlist") for t in topics)
        broker.kill()
        broker.start()  # the same port and persistence file, which holds none of them
        wait_for(
            lambda: hub.link.generation >= 2 and hub.outbox.resent >= allowlists,
            timeout=30,
            what="the hub's reconnect and resend",
        )
        # A first subscriber sees the resent messages arrive (or finds them retained);
        # the broker handles them in order, so once it has them all they are retained.
        seen = Listener(broker.port, *topics)
        listeners.append(seen)
        seen.wait(lambda ms: {m.topic for m in ms} >= topics, timeout=30)
        after = retained()
        assert set(after) == topics
        # The signed allow-lists are the same bytes; tool states are stated anew.
        assert {t: p for t, p in after.items() if t.endswith("/allowlist")} == {
            t: p for t, p in before.items() if t.endswith("/allowlist")
        }
    finally:
        for listener in listeners:
            listener.close()
        if hub is not None:
            hub.stop()
        broker.stop()


def test_the_hubs_resend_window_holds_at_most_max_kept_bytes(monkeypatch, caplog):
    """Signed allow-lists are big: the window drops the oldest beyond the cap, loudly."""
    from hub.store import outbox

    monkeypatch.setattr(outbox, "MAX_KEPT_BYTES", 1_000)
    publisher = outbox.OutboxPublisher(link=None, sm=None)  # type: ignore[arg-type]
    for i in range(5):
        publisher._keep(f"peershop/dev/d{i}/allowlist", (i, b"x" * 400, 1, 100.0 + i))
    assert list(publisher._recent) == ["peershop/dev/d3/allowlist", "peershop/dev/d4/allowlist"]
    assert publisher._kept_bytes == 800 and publisher.dropped_from_window == 3
    assert "leaves the resend window early" in caplog.text
    # A newer message of a kept topic replaces it, counted once.
    publisher._keep("peershop/dev/d4/allowlist", (9, b"y" * 100, 1, 120.0))
    assert publisher._kept_bytes == 500
