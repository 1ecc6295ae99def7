"""The hub against a real Mosquitto: exactly once, persistent session, outbox, clean stop."""

from __future__ import annotations

import json
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from hub.contract.messages import HUB_STATUS_TOPIC
from hub.service.service import Hub
from hub.store.models import DeadLetter, Device, Event, Outbox
from hub.store.outbox import enqueue
from tests.conftest import make_config
from tests.helpers import Device as SimDevice
from tests.helpers import Listener, add_member, clear_retained, event_payload, wait_for


def stored(hub: Hub, device_prefix: str = "") -> list[tuple[str, int, int]]:
    with hub.sm() as session:
        return session.execute(
            select(Event.device_id, Event.boot, Event.seq)
            .where(Event.device_id.startswith(device_prefix))
            .order_by(Event.id)
        ).all()


def count(hub: Hub, column, *where) -> int:
    with hub.sm() as session:
        return session.scalar(select(func.count(column)).where(*where)) or 0


@pytest.fixture
def hub(hub_config):
    h = Hub(hub_config)
    h.start()
    assert h.wait_ready(10)
    yield h
    h.stop()


@pytest.fixture(scope="module")
def shared_hub(tmp_path_factory, broker):
    """One hub for the hypothesis stream, so each example does not pay for a start."""
    cfg = make_config(
        tmp_path_factory.mktemp("shared"), broker, mqtt={"client_id": "peershop-hub-shared"}
    )
    add_member(cfg.db.url)  # a shop, so that health speaks of ingest alone
    h = Hub(cfg)
    h.start()
    assert h.wait_ready(10)
    yield h
    h.stop()


def test_events_from_several_devices_arrive_exactly_once(hub, broker):
    devices = [SimDevice(broker.port, f"node-{i}") for i in range(5)]
    for dev in devices:
        dev.send_events(boot=1, seqs=range(200))
    for dev in devices:
        dev.close()
    wait_for(lambda: count(hub, Event.id) >= 1000, what="1000 events")
    rows = stored(hub)
    assert len(rows) == 1000
    assert set(rows) == {(f"node-{i}", 1, s) for i in range(5) for s in range(200)}
    # each device's events keep their order in the log
    for i in range(5):
        assert [s for d, _, s in rows if d == f"node-{i}"] == list(range(200))
    assert count(hub, Device.id) == 5


def test_the_same_events_sent_twice_and_replayed_after_a_reconnect_are_stored_once(hub, broker):
    dev = SimDevice(broker.port, "replayer")
    dev.send_events(boot=4, seqs=range(100))
    dev.send_events(boot=4, seqs=range(100))  # MQTT redelivery or a nervous device
    dev.close()
    dev = SimDevice(broker.port, "replayer")  # reconnects and replays its buffer
    for seq in range(100):
        dev.send(event_payload(4, seq, replay=True))
    dev.send(event_payload(4, 100))
    dev.close()
    # the counters move after the commit: wait for them, not for the stored row
    wait_for(lambda: hub.counters.messages >= 301, what="all 301 messages taken in")
    assert len(stored(hub, "replayer")) == 101
    assert hub.counters.duplicates >= 200


def test_events_sent_while_the_hub_is_down_wait_at_the_broker(hub_config, broker):
    first = Hub(hub_config)
    first.start()
    assert first.wait_ready(10)
    first.stop()  # the persistent session stays at the broker
    dev = SimDevice(broker.port, "night-owl")
    dev.send_events(boot=2, seqs=range(300))
    dev.close()
    second = Hub(hub_config)
    second.start()
    try:
        wait_for(lambda: count(second, Event.id) == 300, what="300 queued events")
        assert len(set(stored(second))) == 300
    finally:
        second.stop()


def test_a_backlog_at_the_broker_waits_there_not_in_the_hubs_memory(tmp_path, broker):
    # Mosquitto sends a whole Receive Maximum more after each PUBACK, so only the hub's
    # own bound (ingest.max_pending) keeps a long outage's backlog out of its memory.
    ingest = {"max_pending": 100, "receive_maximum": 20, "batch_max": 50}
    cfg = make_config(tmp_path, broker, mqtt={"client_id": "peershop-hub-backlog"}, ingest=ingest)
    first = Hub(cfg)
    first.start()
    assert first.wait_ready(10)
    first.stop()  # the persistent session stays at the broker
    dev = SimDevice(broker.port, "backlogged")
    dev.send_events(boot=3, seqs=range(3000))
    dev.close()
    second = Hub(cfg)
    second.start()
    try:
        wait_for(lambda: count(second, Event.id) == 3000, what="the 3,000 queued events")
        assert len(set(stored(second, "backlogged"))) == 3000
        assert second.counters.pending_peak <= 100
        assert second.counters.reading_paused >= 1
    finally:
        second.stop()


def test_hub_status_birth_and_clean_stop_publish_online_then_offline(hub_config, broker):
    listener = Listener(broker.port, HUB_STATUS_TOPIC)
    h = Hub(hub_config)
    h.start()
    try:
        listener.wait(lambda msgs: any(b'"online"' in m.payload for m in msgs))
        dev = SimDevice(broker.port, "late")
        dev.send_events(boot=1, seqs=range(50))
        dev.close()
    finally:
        h.stop()
    listener.wait(lambda msgs: b'"offline"' in msgs[-1].payload)
    assert json.loads(listener.messages[-1].payload)["state"] == "offline"
    listener.close()
    # A clean stop commits the batch in hand and leaves whatever was still queued
    # unacked at the broker: the next hub on the same session gets it, none lost.
    again = Hub(hub_config)
    again.start()
    try:
        wait_for(lambda: count(again, Event.id) >= 50, what="all 50 events")
        assert count(again, Event.id) == 50
    finally:
        again.stop()


def test_outbox_messages_reach_devices_and_leave_the_outbox_on_puback(hub, broker):
    listener = Listener(broker.port, "peershop/dev/lathe/cmd")
    with hub.sm.begin() as session:
        for n in range(3):
            enqueue(session, "peershop/dev/lathe/cmd", json.dumps({"re": n, "action": "deny"}))
    hub.outbox.notify()
    listener.wait(lambda msgs: len(msgs) == 3)
    assert [p["re"] for p in listener.payloads("peershop/dev/lathe/cmd")] == [0, 1, 2]
    wait_for(lambda: count(hub, Outbox.id) == 0, what="outbox emptied")
    listener.close()


def test_big_outbox_messages_go_a_few_at_a_time_in_order(hub, broker):
    """Signed allow-lists of a big shop are hundreds of KB each: paho holds each one until
    its PUBACK, so the outbox hands it no more than ``max_inflight_bytes`` at once."""
    big = 300 * 1024
    topics = [f"peershop/dev/tool-{n:02d}/allowlist" for n in range(12)]
    listener = Listener(broker.port, "peershop/dev/+/allowlist")
    client = hub.link.client
    held: list[int] = []  # bytes paho holds for unacknowledged publishes, after each one
    publish = hub.link.publish

    def watched(*args, **kwargs):
        info = publish(*args, **kwargs)
        held.append(sum(len(m.payload) for m in list(client._out_messages.values())))
        return info

    hub.link.publish = watched
    with hub.sm.begin() as session:
        for n, topic in enumerate(topics):
            enqueue(session, topic, bytes([65 + n]) * big, retain=True)
    hub.outbox.notify()
    listener.wait(lambda msgs: len(msgs) == len(topics), timeout=30)
    listener.close()
    assert [m.topic for m in listener.messages] == topics  # in outbox order
    assert [m.payload[:1] for m in listener.messages] == [bytes([65 + n]) for n in range(12)]
    # the last message can reach the listener before ``watched`` returns
    wait_for(lambda: len(held) == len(topics), what="the outbox's last publish returned")
    assert max(held) <= hub.outbox.max_inflight_bytes
    assert max(held) >= 2 * big  # a few at a time, not one by one
    wait_for(lambda: count(hub, Outbox.id) == 0, what="outbox emptied")
    clear_retained(broker.port, *topics)  # 3.6 MB the module's later listeners need not get


def test_outbox_rows_left_by_a_crashed_hub_are_sent_after_restart(hub_config, broker):
    from hub.store.db import make_engine, migrate, session_factory

    engine = make_engine(hub_config.db.url)
    migrate(engine)
    with session_factory(engine).begin() as session:
        enqueue(session, "peershop/dev/saw/cmd", b'{"re":9,"action":"release"}')
    engine.dispose()
    listener = Listener(broker.port, "peershop/dev/saw/cmd")
    h = Hub(hub_config)
    h.start()
    try:
        listener.wait(lambda msgs: len(msgs) == 1)
        assert listener.payloads("peershop/dev/saw/cmd") == [{"re": 9, "action": "release"}]
        wait_for(lambda: count(h, Outbox.id) == 0, what="outbox emptied")
    finally:
        h.stop()
        listener.close()


GOOD = st.integers(0, 10_000).map(lambda seq: ("good", seq))
BAD = st.one_of(
    st.binary(max_size=64).map(lambda b: ("bad", b)),
    st.sampled_from(
        [
            b'{"boot":1,"seq":1,"type":"laser"}',
            b'{"boot":-1,"seq":1,"type":"power","w":1}',
            b'{"boot":1,"seq":1,"type":"power","w":"x"}',
            b'{"boot":1,"seq":1,"type":"badge","uid":"zz"}',
            b"[]",
            b"null",
            b'{"boot":1,"seq":1,"type":"power","w":1e999}',
            b"x" * 5000,
        ]
    ).map(lambda b: ("bad", b)),
    st.just(("badtopic", b'{"boot":1,"seq":1,"type":"power","w":1}')),
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(st.one_of(GOOD, BAD), min_size=1, max_size=40))
def test_malformed_payloads_never_stop_ingest_and_every_good_event_is_kept(
    shared_hub, broker, stream
):
    run = uuid.uuid4().hex[:8]
    device_id = f"fuzz-{run}"
    dev = SimDevice(broker.port, device_id)
    good: set[int] = set()
    bad_topics = 0
    bad_payloads = 0
    for kind, value in stream:
        if kind == "good":
            good.add(value)
            dev.send(event_payload(1, value))
        elif kind == "bad":
            bad_payloads += 1
            dev.send(value)
        else:
            bad_topics += 1
            dev.send(value, topic=f"peershop/dev/BAD-{run}/event")
    # one last good event marks the end of the stream
    dev.send(event_payload(2, 0))
    dev.close()
    wait_for(
        lambda: count(shared_hub, Event.id, Event.device_id == device_id, Event.boot == 2),
        what="the end marker",
    )
    seqs = {s for _, b, s in stored(shared_hub, device_id) if b == 1}
    assert seqs == good
    assert count(shared_hub, DeadLetter.id, DeadLetter.device_id == device_id) == bad_payloads
    assert (
        count(shared_hub, DeadLetter.id, DeadLetter.topic == f"peershop/dev/BAD-{run}/event")
        == bad_topics
    )
    assert shared_hub.health() == (True, "ok")
