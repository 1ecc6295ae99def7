"""Mosquitto killed with SIGKILL and restarted: the sessions resume and nothing is lost.

Issue 9.  Real processes: a private Mosquitto with persistence (``autosave_interval 1``),
``peershop run`` on the test pass's database, and test_durability's ten devices, each
with an outbox that keeps an event until its PUBACK and republishes what is left.

With persistence Mosquitto writes its state to disk only every ``autosave_interval``, so
a SIGKILL loses what it took in since the last save.  What makes up for it:

- an event a device has not had a PUBACK for is still in the device's outbox, and is
  sent again once the broker is back;
- an event the broker had handed to the hub is stored by the hub whether or not the
  connection it came on still exists (the ack of a dead connection is dropped, and a
  redelivered copy is recognised by its identity);
- what the broker had saved (the hub's persistent session, the events queued for it)
  comes back with the broker, from the same persistence file on the same port.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import wait_for
from tests.test_durability import BOOT, TOTAL, Shop

pytestmark = pytest.mark.slow


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[Shop]:
    s = Shop(tmp_path)
    try:
        yield s
    finally:
        s.close()


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


@pytest.mark.xfail(
    strict=True,
    reason="Mosquitto PUBACKs a QoS 1 event once it holds it in memory and writes its "
    "persistence file only every autosave_interval (1 s): a SIGKILL loses the events it "
    "queued for the hub since its last save, and the devices dropped them on PUBACK "
    "(~1,600 events of 20,000, 0.8 s at 2,000 ev/s, in a run where the hub lagged). "
    "Needs the devices (devices/outbox.py, the bridge) to keep what they sent in the last "
    "few autosave intervals and resend it after a reconnect: §2's identity makes copies "
    "harmless",
)
def test_mosquitto_killed_while_events_queue_for_the_hub_loses_nothing(shop: Shop):
    shop.start_hub()
    fleet = shop.start_fleet()
    shop.wait_stored(1_000)
    assert shop.hub.proc is not None
    # The hub stops reading (SIGSTOP), so events queue at the broker as they do while a
    # hub is slow or restarting; two autosaves later the broker is killed.
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
