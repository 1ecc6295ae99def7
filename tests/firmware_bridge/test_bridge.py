"""The serial bridge (firmware_bridge/bridge.py) against a real Mosquitto, over pty pairs.

The bridge opens a pty's slave by name, as it would ``/dev/ttyACM0``; the test plays the
node on the master with the reference :class:`~firmware_bridge.firmware.protocol.Node`
on the real monotonic clock, so resends happen as on a board.  Noise is injected on
the wire in both directions.  Nothing sleeps where an event can be awaited.
"""

from __future__ import annotations

import json
import os
import random
import select
import signal
import subprocess
import sys
import threading
import time
import tty
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_bridge.bridge import Bridge
from firmware_bridge.firmware import protocol
from firmware_bridge.framing import FrameDecoder, crc16_ccitt_false, encode_frame
from hub.contract.messages import (
    HUB_STATUS_TOPIC,
    cmd_topic,
    event_topic,
    parse_timestamp,
    status_topic,
)
from hub.contract.mqtt import MqttLink, MqttSettings, Received
from hub.service.broker import PrivateBroker
from tests.helpers import REPO, Device, Listener, wait_for


def new_id(prefix: str = "node") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def now_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class Noise:
    """Damages a byte stream the way a bad cable and a chatty board do.

    Each frame passing through is, with probability ``rate``, bit-flipped, cut short
    (so it merges with the next line), robbed of one byte or of its newline, or
    preceded by garbage (boot banners, debug prints, line noise).
    """

    KINDS = ("flip", "truncate", "drop_byte", "merge", "garbage")

    def __init__(self, seed: int, rate: float):
        self.random = random.Random(seed)
        self.rate = rate
        self.applied: Counter[str] = Counter()

    def __call__(self, data: bytes) -> bytes:
        if not data or self.random.random() >= self.rate:
            return data
        kind = self.random.choice(self.KINDS)
        self.applied[kind] += 1
        body = bytearray(data)
        at = self.random.randrange(len(body))
        if kind == "flip":
            body[at] ^= 1 << self.random.randrange(8)
        elif kind == "truncate":
            del body[at:]
        elif kind == "drop_byte":
            del body[at]
        elif kind == "merge":
            body = body.rstrip(b"\n")
        else:
            size = self.random.randrange(1, 40)
            garbage = bytes(self.random.randrange(256) for _ in range(size))
            banner = b"ets Jun  8 2016 00:22:57 rst:0x1 (POWERON_RESET),boot:0x13\r\n"
            body[:0] = self.random.choice([garbage, banner, garbage + b"\n"])
        return bytes(body)


class PtyNode:
    """A node on the master side of a pty; the bridge opens ``self.path`` (the slave).

    ``link`` is a symlink in ``tmp_path`` that points at the current slave, like
    ``/dev/serial/by-id/...``; :meth:`replug` closes the pty (the cable is pulled) and
    serves a new one under the same link.  ``to_bridge`` and ``from_bridge`` filter the
    bytes on the wire; ``on_command`` receives the node application's commands.
    """

    def __init__(
        self,
        node_id: str,
        link: Path,
        store: Any = None,
        *,
        to_bridge: Callable[[bytes], bytes] = lambda b: b,
        from_bridge: Callable[[bytes], bytes] = lambda b: b,
        frames_to_bridge: Callable[[bytes], bytes] | None = None,
        clock: Callable[[], float] | None = None,
    ):
        self.node_id = node_id
        self.clock = clock
        self.link = link
        self.store = store if store is not None else protocol.MemoryStore()
        self.to_bridge = to_bridge
        self.from_bridge = from_bridge
        self.frames_to_bridge = frames_to_bridge
        self.commands: list[dict[str, Any]] = []
        self.sent: set[tuple[int, int]] = set()
        self.lock = threading.RLock()
        self.master = -1
        self.slave = -1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.node: protocol.Node | None = None

    # -- the wire ---------------------------------------------------------------------

    def plug(self) -> None:
        """A new pty under the link, and a node that boots on it."""
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # no echo, no newline translation before the bridge opens it
        os.set_blocking(self.master, False)
        temp = self.link.with_name(self.link.name + ".new")
        temp.unlink(missing_ok=True)
        temp.symlink_to(os.ttyname(self.slave))
        os.replace(temp, self.link)
        self.node = protocol.Node(
            self.node_id,
            "1.0",
            self._write,
            self.store,
            now_ms,
            on_command=self.commands.append,
            kind=["reader"],
            replay_after_ms=3_600_000,
            wall_clock=self.clock,
        )
        with self.lock:
            self.node.start()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def unplug(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        for fd in (self.master, self.slave):
            if fd >= 0:
                os.close(fd)
        self.master = self.slave = -1

    def replug(self) -> None:
        self.unplug()
        self.plug()

    def _write(self, frame: bytes) -> None:
        if self.frames_to_bridge is not None:
            frame = self.frames_to_bridge(frame)
        data = self.to_bridge(frame)
        try:
            os.write(self.master, data)
        except BlockingIOError:
            pass  # nobody reads the line: a UART's bytes are lost too

    def _loop(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.005)
            data = b""
            if ready:
                try:
                    data = os.read(self.master, 4096)
                except OSError:
                    data = b""  # EIO: the bridge has not opened the slave yet
            with self.lock:
                if data:
                    self.node.feed(self.from_bridge(data))
                self.node.poll()

    # -- the node's application -------------------------------------------------------

    def send(self, event_type: str = "power", **fields: Any) -> tuple[int, int]:
        if event_type == "power" and not fields:
            fields = {"w": 12.5}
        with self.lock:
            seq = self.node.send_event(event_type, **fields)
            identity = (self.node.boot, seq)
        self.sent.add(identity)
        return identity

    def all_acked(self) -> bool:
        with self.lock:
            return self.node.unacked == 0 and self.node.queued == 0


@pytest.fixture
def settings_(broker: PrivateBroker) -> MqttSettings:
    return MqttSettings(host="127.0.0.1", port=broker.port)


@pytest.fixture
def nodes() -> Iterator[list[PtyNode]]:
    made: list[PtyNode] = []
    yield made
    for node in made:
        node.unplug()


@pytest.fixture
def listeners() -> Iterator[list[Listener]]:
    made: list[Listener] = []
    yield made
    for listener in made:
        listener.close()


def plugged(nodes: list[PtyNode], tmp_path: Path, node_id: str, **kwargs: Any) -> PtyNode:
    node = PtyNode(node_id, tmp_path / f"usb-{node_id}", **kwargs)
    node.plug()
    nodes.append(node)
    return node


def listen(listeners: list[Listener], port: int, node_id: str) -> Listener:
    listener = Listener(port, f"peershop/dev/{node_id}/#")
    listeners.append(listener)
    return listener


def identities(listener: Listener, node_id: str) -> list[tuple[int, int]]:
    return [(p["boot"], p["seq"]) for p in listener.payloads(event_topic(node_id))]


def statuses(listener: Listener, node_id: str) -> list[dict[str, Any]]:
    return listener.payloads(status_topic(node_id))


def test_hello_becomes_the_birth_and_events_are_acked_after_puback(
    settings_, nodes, listeners, tmp_path
):
    node_id = new_id()
    listener = listen(listeners, settings_.port, node_id)
    node = plugged(nodes, tmp_path, node_id)
    with Bridge(settings_, [str(node.link)]) as bridge:
        listener.wait(lambda _m: statuses(listener, node_id))
        assert statuses(listener, node_id)[0] == {
            "state": "online",
            "boot": node.node.boot,
            "fw": "1.0",
            "kind": ["reader"],
        }
        node.send("badge", uid="04a1b2c3d4")
        node.send("power", w=812.4, wh_total=1530.25)
        wait_for(node.all_acked, 10, "the node's events acked")
        # Acked means stored: the broker has handed both to a subscriber by now.
        listener.wait(lambda _m: len(identities(listener, node_id)) == 2)
        first, second = listener.payloads(event_topic(node_id))
        assert first == {"type": "badge", "uid": "04a1b2c3d4", "boot": node.node.boot, "seq": 0}
        assert "t" not in second and second["w"] == 812.4
        counters = bridge.counters
        assert counters["events_acked"] == 2
        assert bridge.ports[0].node_id == node_id
    # A clean stop says offline with the boot, retained.
    listener.wait(lambda _m: statuses(listener, node_id)[-1]["state"] == "offline")
    assert statuses(listener, node_id)[-1] == {"state": "offline", "boot": node.node.boot}


def test_a_node_clock_is_in_the_birth_while_the_hub_is_online(
    settings_, nodes, listeners, tmp_path
):
    """The node says its clock (two hours slow) in its hello.  The hub is down: a birth
    waiting at the broker would add the wait to the clock's error, so it has no ts.  When
    the hub comes online the node is born again with its clock, advanced since the hello;
    a node without a clock never gets one from the bridge's."""
    hub = Device(settings_.port, "fake-hub")
    hub.send(b'{"state":"offline"}', HUB_STATUS_TOPIC, retain=True)
    hub.flush()
    clocked, plain = new_id("clocked"), new_id("plain")
    listener = Listener(settings_.port, status_topic(clocked), status_topic(plain))
    listeners.append(listener)
    slow = timedelta(hours=2)
    node = plugged(nodes, tmp_path, clocked, clock=lambda: time.time() - slow.total_seconds())
    other = plugged(nodes, tmp_path, plain)
    try:
        with Bridge(settings_, [str(node.link), str(other.link)]):
            listener.wait(lambda _m: statuses(listener, clocked) and statuses(listener, plain))
            assert "ts" not in statuses(listener, clocked)[0]
            hub.send(b'{"state":"online"}', HUB_STATUS_TOPIC, retain=True)
            listener.wait(lambda _m: len(statuses(listener, clocked)) == 2)
            birth = statuses(listener, clocked)[1]
            assert birth["state"] == "online" and birth["boot"] == node.node.boot
            offset = parse_timestamp(birth["ts"]) - datetime.now(UTC)
            assert abs(offset + slow) < timedelta(minutes=1)
            hub.send(b'{"state":"offline"}', HUB_STATUS_TOPIC, retain=True)
            hub.flush()
        assert all("ts" not in s for s in statuses(listener, plain))
        assert [s["state"] for s in statuses(listener, plain)] == ["online", "offline"]
    finally:
        hub.send(b"", HUB_STATUS_TOPIC, retain=True)
        hub.close()


def test_the_ack_waits_for_the_broker(broker, nodes, tmp_path):
    """With the broker down nothing is acked; the node keeps its events and they arrive."""
    node_id = new_id()
    node = plugged(nodes, tmp_path, node_id)
    arrived: list[tuple[int, int]] = []

    def on_event(msg: Received) -> None:
        event = json.loads(msg.payload)
        arrived.append((event["boot"], event["seq"]))

    # A persistent session, like the hub's: what is published while it reconnects waits.
    hub = MqttLink(
        MqttSettings(port=broker.port),
        f"hub-{node_id}",
        on_message=on_event,
        subscriptions=[event_topic(node_id)],
    )
    hub.start()
    try:
        assert hub.wait_subscribed(10)
        with Bridge(MqttSettings(port=broker.port), [str(node.link)]) as bridge:
            wait_for(lambda: bridge.ports[0].node_id == node_id, 10, "hello")
            node.send()
            wait_for(node.all_acked, 10, "first event acked")
            broker.stop()
            try:
                for _ in range(5):
                    node.send()
                wait_for(lambda: bridge.counters["held_no_broker"] > 0, 10, "events held")
                assert node.node.unacked == 5
                assert bridge.counters["events_acked"] == 1
            finally:
                broker.start()
            wait_for(node.all_acked, 30, "events acked once the broker is back")
            wait_for(lambda: set(arrived) == node.sent, 30, "every event at the hub")
    finally:
        hub.stop()


def test_events_acked_before_a_broker_kill_are_published_again(nodes, tmp_path):
    """Mosquitto PUBACKs an event before it saves it: the bridge resends its window.

    The broker saves every hour here, so every event the bridge has had a PUBACK for is
    still unsaved when the broker is killed: the loss a kill within a second of the
    PUBACKs causes, made certain.  The hub's session is saved first (a clean stop)."""
    node_id = new_id()
    broker = PrivateBroker(tmp_path / "mosquitto", extra_conf="autosave_interval 3600").start()
    arrived: list[dict[str, Any]] = []
    hub = MqttLink(
        MqttSettings(port=broker.port),
        f"hub-{node_id}",
        on_message=lambda msg: arrived.append(json.loads(msg.payload)),
        subscriptions=[event_topic(node_id)],
    )
    try:
        hub.start()
        assert hub.wait_subscribed(10)
        hub.stop()  # away: its events queue at the broker
        broker.stop()  # a clean stop saves the hub's session
        broker.start()
        node = plugged(nodes, tmp_path, node_id)
        with Bridge(MqttSettings(port=broker.port), [str(node.link)]) as bridge:
            wait_for(lambda: bridge.ports[0].node_id == node_id, 10, "hello")
            for _ in range(5):
                node.send()
            wait_for(node.all_acked, 10, "the events acked after their PUBACK")
            broker.kill()  # queued for the hub, never saved: gone
            broker.start()
            wait_for(lambda: bridge.counters["events_resent"] == 5, 30, "the window resent")
            hub.start()
            wait_for(
                lambda: {(e["boot"], e["seq"]) for e in arrived} == node.sent,
                30,
                "every event at the hub",
            )
        # Late copies, so a badge among them would be recorded and not answered.
        assert all(e["replay"] is True for e in arrived)
    finally:
        hub.stop()
        broker.stop()


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    seed=st.integers(0, 2**32 - 1),
    up_rate=st.floats(0.05, 0.5),
    down_rate=st.floats(0.0, 0.4),
    count=st.integers(1, 60),
)
def test_every_event_arrives_once_or_more_through_noise(
    broker, tmp_path_factory, seed, up_rate, down_rate, count
):
    """Exactly once into the hub: every identity reaches MQTT, nothing else does."""
    node_id = new_id("noisy")
    tmp_path = tmp_path_factory.mktemp("noise")
    up, down = Noise(seed, up_rate), Noise(seed + 1, down_rate)
    node = PtyNode(node_id, tmp_path / "usb-noisy", to_bridge=up, from_bridge=down)
    listener = Listener(broker.port, f"peershop/dev/{node_id}/#")
    node.plug()
    try:
        with Bridge(MqttSettings(port=broker.port), [str(node.link)]) as bridge:
            for i in range(count):
                node.send("power", w=float(i))
            wait_for(node.all_acked, 60, "every event acked through the noise")
            listener.wait(lambda _m: set(identities(listener, node_id)) >= node.sent, 30)
            published = bridge.counters["events_published"]
            listener.wait(lambda _m: len(identities(listener, node_id)) >= published, 30)
            received = identities(listener, node_id)
            assert set(received) == node.sent
            # A resend of an event the broker has is acked again, not republished, so on
            # a steady broker nothing arrives twice (the hub would cope, but need not).
            duplicates = len(received) - len(set(received))
            assert duplicates == 0, f"{duplicates} duplicates under {dict(up.applied)}"
            payloads = listener.payloads(event_topic(node_id))
            assert all(p["w"] == float(p["seq"]) for p in payloads)  # no damaged event got in
    finally:
        listener.close()
        node.unplug()


def test_damaged_lines_are_dropped_and_counted(settings_, nodes, listeners, tmp_path, caplog):
    node_id = new_id()
    node = plugged(nodes, tmp_path, node_id)
    listener = listen(listeners, settings_.port, node_id)
    with Bridge(settings_, [str(node.link)]) as bridge:
        wait_for(lambda: bridge.ports[0].node_id == node_id, 10, "hello")
        good = encode_frame({"t": "ev", "boot": node.node.boot, "seq": 99, "type": "power", "w": 1})
        body = good[: good.rindex(b"*")]
        wrong = (crc16_ccitt_false(body) + 1) % 0x10000
        lines = [
            b"boot banner\r\n",  # no CRC
            body + b"*%04X\n" % wrong,  # a wrong CRC
            b'{"t":"ev"}*zzzz\n',  # not 4 uppercase hex digits
            b"x" * 600 + b"\n",  # over 512 bytes
            b'{"t":*%04X\n' % crc16_ccitt_false(b'{"t":'),  # CRC right, JSON broken
            b"[1,2]*%04X\n" % crc16_ccitt_false(b"[1,2]"),  # JSON, not an object
        ]
        with node.lock:  # not interleaved with the node's own frames
            os.write(node.master, b"".join(lines))
        wait_for(lambda: bridge.counters["too_long"] == 1, 10, "the long line dropped")
        counters = bridge.counters
        assert {r: counters[r] for r in ("no_crc", "bad_crc", "bad_json", "not_object")} == {
            "no_crc": 1,
            "bad_crc": 2,
            "bad_json": 1,
            "not_object": 1,
        }
        assert bridge.ports[0].node_id == node_id  # the node is still served
        assert "boot banner" in caplog.text and "no_crc" in caplog.text
        node.send()
        wait_for(node.all_acked, 10, "a good event after the noise")
        assert [s for _b, s in identities(listener, node_id)] == [0]


def test_an_invalid_event_is_acked_and_forwarded_for_the_dead_letters(
    settings_, nodes, listeners, tmp_path, caplog
):
    node_id = new_id()
    node = plugged(nodes, tmp_path, node_id)
    listener = listen(listeners, settings_.port, node_id)
    with Bridge(settings_, [str(node.link)]) as bridge:
        node.send("badge", uid="not-hex")
        node.send("teleport", to="mars")
        wait_for(node.all_acked, 10, "the node stops resending")
        listener.wait(lambda _m: len(identities(listener, node_id)) == 2)
        forwarded = listener.payloads(event_topic(node_id))
        assert forwarded[0] == {"uid": "not-hex", "type": "badge", "boot": node.node.boot, "seq": 0}
        assert forwarded[1]["type"] == "teleport"
        assert bridge.counters["invalid_events"] == 2
        assert "dead letter" in caplog.text and "unknown event type 'teleport'" in caplog.text


def test_events_before_hello_bring_a_rebirth(settings_, nodes, listeners, tmp_path):
    """A bridge that starts after the node finds it by asking for a rebirth."""
    node_id = new_id()
    eaten = {"hello": 0}

    def lose_first_hello(frame: bytes) -> bytes:
        if b'"t":"hello"' in frame and not eaten["hello"]:
            eaten["hello"] += 1
            return b""
        return frame

    node = plugged(nodes, tmp_path, node_id, frames_to_bridge=lose_first_hello)
    listener = listen(listeners, settings_.port, node_id)
    node.send()
    with Bridge(settings_, [str(node.link)]) as bridge:
        wait_for(node.all_acked, 10, "the event acked after the rebirth")
        assert eaten["hello"] == 1
        assert bridge.ports[0].node_id == node_id
        listener.wait(lambda _m: identities(listener, node_id) == [(node.node.boot, 0)])


def test_commands_reach_the_application_once_across_resends(settings_, nodes, listeners, tmp_path):
    node_id = new_id()
    dropped: list[bytes] = []

    def drop_first_command_ack(frame: bytes) -> bytes:
        if b'"hseq"' in frame and b'"t":"ack"' in frame and not dropped:
            dropped.append(frame)
            return b""
        return frame

    node = plugged(nodes, tmp_path, node_id, frames_to_bridge=drop_first_command_ack)
    hub = MqttLink(MqttSettings(port=settings_.port), f"hub-{node_id}", persistent=False)
    hub.start()
    try:
        assert hub.wait_connected(10)
        with Bridge(settings_, [str(node.link)]) as bridge:
            port = bridge.ports[0]
            wait_for(lambda: port.node_id == node_id and port.commands_pending == 0, 10, "bound")
            # The rebirth at port open was the first command and had its ack eaten.
            dropped.clear()
            grant = {"re": 0, "action": "grant", "member": "Ada L.", "max_s": 60}
            hub.publish(cmd_topic(node_id), json.dumps(grant)).wait_for_publish(5)
            wait_for(lambda: port.commands_pending == 0 and dropped, 10, "the grant acked")
            assert node.commands.count(grant) == 1
            assert node.node.counters["duplicate_commands"] >= 1  # it did come twice
            assert bridge.counters["commands_resent"] >= 1
            assert [c for c in node.commands if c.get("action") == "grant"] == [grant]
    finally:
        hub.stop()


def test_at_most_eight_commands_unacked(settings_, nodes, tmp_path):
    node_id = new_id()
    node = plugged(nodes, tmp_path, node_id)
    hub = MqttLink(MqttSettings(port=settings_.port), f"hub-{node_id}", persistent=False)
    hub.start()
    frames: list[dict[str, Any]] = []
    decoder = FrameDecoder()
    try:
        assert hub.wait_connected(10)
        with Bridge(settings_, [str(node.link)]) as bridge:
            port = bridge.ports[0]
            wait_for(lambda: port.node_id == node_id and port.commands_pending == 0, 10, "bound")

            def record(data: bytes) -> bytes:
                frames.extend(decoder.feed(data))
                return b""

            node.from_bridge = record
            for re in range(12):
                hub.publish(
                    cmd_topic(node_id),
                    json.dumps({"re": re, "action": "deny", "reason": "not_trained"}),
                )
            wait_for(lambda: bridge.counters["commands"] >= 12, 10, "commands taken")
            wait_for(lambda: bridge.counters["commands_resent"] >= 16, 10, "resends")
            hseqs = {f["hseq"] for f in frames if f.get("t") == "cmd"}
            assert len(hseqs) == 8  # the first eight, resent; the rest wait
            node.from_bridge = lambda b: b
            wait_for(lambda: port.commands_pending == 0, 10, "all twelve acked")
            assert sorted(c["re"] for c in node.commands if "re" in c) == list(range(12))
    finally:
        hub.stop()


def test_a_quiet_node_is_probed_and_a_dead_one_goes_offline(settings_, nodes, listeners, tmp_path):
    node_id = new_id()
    deaf = {"on": False}
    node = plugged(nodes, tmp_path, node_id, from_bridge=lambda b: b"" if deaf["on"] else b)
    listener = listen(listeners, settings_.port, node_id)
    with Bridge(settings_, [str(node.link)], silence=0.6) as bridge:
        listener.wait(lambda _m: statuses(listener, node_id))
        wait_for(lambda: bridge.counters["probes"] >= 3, 10, "probes answered")
        assert [s["state"] for s in statuses(listener, node_id)] == ["online"]
        deaf["on"] = True  # the node hangs: it hears nothing and says nothing
        listener.wait(lambda _m: statuses(listener, node_id)[-1]["state"] == "offline")
        assert statuses(listener, node_id)[-1] == {"state": "offline", "boot": node.node.boot}
        deaf["on"] = False  # it recovers: the bridge's standing rebirth brings it back
        listener.wait(lambda _m: statuses(listener, node_id)[-1]["state"] == "online")


def test_a_replugged_port_is_served_again(settings_, nodes, listeners, tmp_path):
    """USB unplug and replug under the same /dev/serial/by-id link: no restart needed."""
    node_id = new_id()
    store = protocol.MemoryStore()  # the node's flash survives the replug
    node = plugged(nodes, tmp_path, node_id, store=store)
    listener = listen(listeners, settings_.port, node_id)
    with Bridge(settings_, [str(node.link)], reopen_interval=0.05) as bridge:
        for _ in range(3):
            node.send()
        wait_for(node.all_acked, 10, "events before the unplug")
        first_boot = node.node.boot
        node.unplug()
        listener.wait(lambda _m: statuses(listener, node_id)[-1]["state"] == "offline")
        assert bridge.counters["port_losses"] == 1
        node.plug()  # a new pty, the link moved to it, the node rebooted
        for _ in range(3):
            node.send()
        wait_for(node.all_acked, 10, "events after the replug")
        assert node.node.boot == first_boot + 1
        listener.wait(lambda _m: set(identities(listener, node_id)) == node.sent)
        assert [(s["state"], s["boot"]) for s in statuses(listener, node_id)] == [
            ("online", first_boot),
            ("offline", first_boot),
            ("online", first_boot + 1),
        ]
        assert bridge.counters["port_opens"] == 2


def test_several_ports_in_one_bridge(settings_, nodes, listeners, tmp_path):
    a, b = new_id("a"), new_id("b")
    node_a, node_b = plugged(nodes, tmp_path, a), plugged(nodes, tmp_path, b)
    listener_a = listen(listeners, settings_.port, a)
    listener_b = listen(listeners, settings_.port, b)
    with Bridge(settings_, [str(node_a.link), str(node_b.link)]) as bridge:
        for _ in range(5):
            node_a.send()
            node_b.send()
        wait_for(lambda: node_a.all_acked() and node_b.all_acked(), 10, "both nodes acked")
        listener_a.wait(lambda _m: set(identities(listener_a, a)) == node_a.sent)
        listener_b.wait(lambda _m: set(identities(listener_b, b)) == node_b.sent)
        assert {p.node_id for p in bridge.ports} == {a, b}
        assert bridge.counters["events_acked"] == 10


def test_one_id_is_served_by_one_port(settings_, nodes, tmp_path):
    node_id = new_id()
    first = plugged(nodes, tmp_path, node_id)
    second = PtyNode(node_id, tmp_path / "usb-second")
    second.plug()
    nodes.append(second)
    with Bridge(settings_, [str(first.link), str(second.link)]) as bridge:
        wait_for(lambda: bridge.counters["id_conflicts"] >= 1, 10, "the conflict seen")
        assert [p.node_id for p in bridge.ports].count(node_id) == 1


def test_forced_id(settings_, nodes, listeners, tmp_path):
    node = plugged(nodes, tmp_path, "factory-default")
    forced = new_id("lathe")
    listener = listen(listeners, settings_.port, forced)
    with Bridge(settings_, [str(node.link)], node_id=forced):
        node.send()
        wait_for(node.all_acked, 10, "acked under the forced id")
        listener.wait(lambda _m: identities(listener, forced) == [(node.node.boot, 0)])
    with pytest.raises(ValueError, match="exactly one port"):
        Bridge(settings_, ["a", "b"], node_id=forced)


# -- the command, as a process --------------------------------------------------------


def bridge_process(broker: PrivateBroker, log: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PEERSHOP_MQTT_PORT": str(broker.port), "PEERSHOP_MQTT_HOST": "127.0.0.1"}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "hub.cli", "bridge", *args],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=out,
        )


def test_killed_and_restarted_mid_stream_loses_nothing(broker, nodes, listeners, tmp_path):
    node_id = new_id()
    node = plugged(nodes, tmp_path, node_id, store=protocol.FileStore(str(tmp_path / "flash")))
    listener = listen(listeners, broker.port, node_id)
    stop_sending = threading.Event()

    def sender() -> None:
        # A busy power meter, paced so the node's 200-event flash buffer never overflows
        # while the bridge is down.
        while not stop_sending.is_set() and len(node.sent) < 200:
            node.send()
            time.sleep(0.005)

    proc = bridge_process(broker, tmp_path / "bridge.log", str(node.link))
    thread = threading.Thread(target=sender)
    try:
        listener.wait(lambda _m: statuses(listener, node_id))
        thread.start()
        listener.wait(lambda _m: len(identities(listener, node_id)) >= 50)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        # The broker saw the connection die and published the will.
        listener.wait(lambda _m: statuses(listener, node_id)[-1]["state"] == "offline")
        proc = bridge_process(broker, tmp_path / "bridge.log", str(node.link))
        thread.join(30)
        wait_for(node.all_acked, 30, "every event acked after the restart")
        listener.wait(lambda _m: set(identities(listener, node_id)) == node.sent, 30)
        assert len(node.sent) == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        listener.wait(lambda _m: statuses(listener, node_id)[-1]["state"] == "offline")
        assert statuses(listener, node_id)[-1] == {"state": "offline", "boot": node.node.boot}
    finally:
        stop_sending.set()
        if thread.is_alive():
            thread.join(10)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
