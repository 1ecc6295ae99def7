"""Issue 2's proof: every event stored exactly once through hub crashes and broker restarts.

Real processes throughout: ``peershop run`` (``HubProcess``) on the test pass's database, a private
Mosquitto with persistence, and ten simulated devices publishing a paced QoS 1 stream of
20,000 events.  The hub is killed with SIGKILL mid-stream (twice), Mosquitto is
restarted mid-stream, the hub is stopped with SIGTERM under load; each time the log ends
with exactly the 20,000 identities that were sent: none lost, none doubled.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.contract.mqtt import MqttLink, MqttSettings
from hub.service.broker import PrivateBroker
from tests.fleet import TOTAL, Shop, SimulatedDevice
from tests.helpers import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[Shop]:
    # Each test gets its own Mosquitto: a hub's persistent session outlives the test,
    # and a shared broker would keep queueing the next tests' events for it.
    with Shop(tmp_path) as s:
        yield s


def test_hub_killed_twice_mid_stream_stores_every_event_exactly_once(shop: Shop):
    shop.start_hub()
    fleet = shop.start_fleet()
    for kill_at in (3_000, 12_000):
        shop.wait_stored(kill_at)
        shop.hub.kill()
        stored_at_kill = shop.stored()
        assert stored_at_kill < TOTAL, "the stream ended before the kill; nothing was in flight"
        published_at_kill = fleet.published
        # The devices go on publishing while the hub is down; the broker queues for it.
        # (On a busy machine the fleet may be within 1,000 of its end: then all of it.)
        wait_for(
            lambda p=published_at_kill: fleet.published >= min(p + 1_000, TOTAL),
            what="devices publishing while the hub is down",
        )
        assert shop.stored() == stored_at_kill  # nobody else writes: the hub is really down
        shop.start_hub()
    shop.assert_exactly_once()
    assert shop.hub.terminate() == 0


def test_broker_restart_mid_stream_loses_and_doubles_nothing(shop: Shop):
    shop.start_hub()
    fleet = shop.start_fleet()
    shop.wait_stored(5_000)
    shop.broker.restart()  # graceful: Mosquitto saves sessions and queues, then comes back
    shop.assert_exactly_once()
    # the devices and the hub really lost the broker and came back on their own
    assert all(d.link.counters.disconnects >= 1 for d in fleet.devices)
    assert shop.hub.proc is not None and shop.hub.proc.poll() is None, "the hub died"
    assert shop.hub.terminate() == 0


def test_sigterm_under_load_exits_0_and_keeps_every_acked_event(shop: Shop):
    shop.start_hub()
    shop.start_fleet()
    shop.wait_stored(5_000)
    assert shop.hub.terminate(timeout=60) == 0
    # what the hub acked is gone from the broker: it must be in the log after the restart
    shop.start_hub()
    shop.assert_exactly_once()
    assert shop.hub.terminate() == 0


RECEIVE_MAXIMUM = 2_000  # ingest.receive_maximum: what the broker hands the hub unacked


def test_sigterm_under_load_stops_ingesting_with_the_batch_in_hand(shop: Shop):
    shop.start_hub()
    shop.start_fleet()
    shop.wait_stored(5_000)
    stored_at_sigterm = shop.stored()
    assert shop.hub.terminate(timeout=60) == 0
    # A stopping hub commits what it holds (at most the broker's receive window) and
    # takes nothing more; the rest waits at the broker for the next start.
    assert shop.stored() - stored_at_sigterm <= RECEIVE_MAXIMUM


@pytest.mark.skipif(os.geteuid() != 0, reason="Mosquitto changes user only when run as root")
def test_private_broker_restart_keeps_the_hubs_queued_events(tmp_path: Path):
    broker = PrivateBroker(tmp_path / "mosquitto").start()
    received: list[bytes] = []
    hub_link = MqttLink(
        MqttSettings(port=broker.port),
        "queued-hub",
        on_message=lambda m: received.append(m.payload),
        subscriptions=["peershop/dev/+/event"],
    )
    device = SimulatedDevice(broker.port, "queued")
    try:
        hub_link.start()
        assert hub_link.wait_subscribed(10)
        hub_link.stop()  # the hub is down; its persistent session stays at the broker
        for seq in range(10):
            device.publish(seq)
        wait_for(lambda: not device.pending(), what="PUBACKs")
        broker.restart()
        hub_link = MqttLink(
            MqttSettings(port=broker.port),
            "queued-hub",
            on_message=lambda m: received.append(m.payload),
            subscriptions=["peershop/dev/+/event"],
        )
        hub_link.start()
        assert hub_link.wait_subscribed(10)
        wait_for(lambda: len(received) == 10, timeout=10, what="the 10 queued events")
    finally:
        device.close()
        hub_link.stop()
        broker.stop()
