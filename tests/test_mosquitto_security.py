"""The generated broker config against a real Mosquitto: who may log in, write and read.

Every test runs Mosquitto with exactly the files `peershop mosquitto-config` writes,
started the way the systemd unit starts it (a pid file for reloads).
"""

from __future__ import annotations

import json
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hub.broker import find_mosquitto, free_port
from hub.mqtt import MqttLink, MqttSettings, Received
from tests.helpers import wait_for
from tests.test_credentials import HUB_PASSWORD, HUB_USER, add_device, peershop, write_ops_config


class GeneratedBroker:
    """Mosquitto on the generated ``mosquitto.conf``, with its pid in the broker folder."""

    def __init__(self, broker_dir: Path):
        self.broker_dir = broker_dir
        self.process: subprocess.Popen[str] | None = None
        self.log: list[str] = []
        self._cond = threading.Condition()
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [find_mosquitto(), "-c", str(self.broker_dir / "mosquitto.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        (self.broker_dir / "mosquitto.pid").write_text(f"{self.process.pid}\n")
        self._reader = threading.Thread(target=self._read, args=(self.process,), daemon=True)
        self._reader.start()
        self.wait_log(" running", "mosquitto to start")

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stderr is not None
        for line in process.stderr:
            with self._cond:
                self.log.append(line.rstrip())
                self._cond.notify_all()
        with self._cond:
            self.log.append("<exited>")
            self._cond.notify_all()

    def wait_log(self, text: str, what: str, start: int = 0, timeout: float = 15) -> int:
        """Wait for a log line containing ``text`` after line ``start``; its index."""
        found: list[int] = []

        def seen() -> bool:
            for i in range(start, len(self.log)):
                if text in self.log[i]:
                    found.append(i)
                    return True
            return "<exited>" in self.log

        with self._cond:
            self._cond.wait_for(seen, timeout)
        assert found, f"timed out waiting for {what}; log tail: {self.log[-10:]}"
        return found[0]

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
                self.process.wait(10)
            if self._reader is not None:
                self._reader.join(5)
            assert self.process.stderr is not None
            self.process.stderr.close()
            self.process = None


class Client:
    """An MQTT client with a login; records what it receives and why it was refused."""

    def __init__(self, port: int, username: str | None, password: str | None, *topics: str):
        self.messages: list[Received] = []
        self._cond = threading.Condition()
        self.link = MqttLink(
            MqttSettings(port=port, username=username, password=password),
            f"{username or 'anon'}-{uuid.uuid4().hex[:6]}",
            on_message=self._on_message,
            subscriptions=topics,
            persistent=False,
        )
        self.connacks: list[str] = []  # every CONNACK's reason, refusals included
        handle_connect = self.link.client.on_connect

        def on_connect(client, userdata, flags, reason_code, props) -> None:
            self.connacks.append(str(reason_code))
            handle_connect(client, userdata, flags, reason_code, props)

        self.link.client.on_connect = on_connect
        self.link.start()

    def _on_message(self, msg: Received) -> None:
        with self._cond:
            self.messages.append(msg)
            self._cond.notify_all()

    def wait_topic(self, topic: str, timeout: float = 10) -> None:
        with self._cond:
            ok = self._cond.wait_for(lambda: topic in self.topics(), timeout)
        assert ok, f"no message on {topic}; got {self.topics()}"

    def topics(self) -> list[str]:
        return [m.topic for m in self.messages]

    def publish(self, topic: str, payload: bytes = b"{}", retain: bool = False) -> None:
        info = self.link.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(10)

    def close(self) -> None:
        self.link.stop()


@dataclass
class Shop:
    config: Path
    broker_dir: Path
    broker: GeneratedBroker
    port: int
    passwords: dict[str, str]

    def client(self, username: str | None, *topics: str, password: str | None = None) -> Client:
        if password is None and username is not None:
            password = self.passwords[username]
        return Client(self.port, username, password, *topics)


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[Shop]:
    port = free_port()
    config = write_ops_config(tmp_path, port=port)
    broker_dir = tmp_path / "data" / "broker"
    listen = ["--port", str(port), "--bind", "127.0.0.1"]
    made = peershop(config, "mosquitto-config", "--out", str(broker_dir), *listen)
    assert made.exit_code == 0, made.output
    passwords = {HUB_USER: HUB_PASSWORD}
    for device in ("laser-node", "lathe-node"):
        passwords[device] = add_device(config, device).password
    broker = GeneratedBroker(broker_dir)
    broker.start()
    try:
        yield Shop(config, broker_dir, broker, port, passwords)
    finally:
        broker.stop()


def refused(client: Client, after: int = 0) -> str:
    """Wait for the broker to answer ``client``'s next login (after ``after`` CONNACKs);
    assert it refused, and return the reason."""
    wait_for(lambda: len(client.connacks) > after, 10, "the broker to answer the login")
    reason = client.connacks[after]
    assert reason in ("Not authorized", "Bad user name or password"), reason
    return reason


def test_devices_and_the_hub_log_in_with_their_credentials(shop: Shop):
    for user in (HUB_USER, "laser-node", "lathe-node"):
        client = shop.client(user)
        try:
            assert client.link.wait_connected(10), client.link.last_error
        finally:
            client.close()


def test_anonymous_clients_are_refused(shop: Shop):
    client = shop.client(None)
    try:
        refused(client)
        assert client.link.counters.connects == 0
    finally:
        client.close()


def test_a_wrong_password_is_refused(shop: Shop):
    client = shop.client("laser-node", password=shop.passwords["lathe-node"])
    try:
        assert refused(client) in ("Not authorized", "Bad user name or password")
        assert client.link.counters.connects == 0
    finally:
        client.close()


def test_a_device_cannot_publish_as_another_device(shop: Shop):
    hub = shop.client(HUB_USER, "peershop/#")
    try:
        assert hub.link.wait_subscribed(10)
        forged_badge = json.dumps({"boot": 1, "seq": 0, "type": "badge", "uid": "04A1B2C3"})
        for topic, payload in (
            ("peershop/dev/lathe-node/event", forged_badge.encode()),
            ("peershop/dev/lathe-node/status", b'{"state":"offline","boot":1}'),
            ("peershop/hub/status", b'{"state":"offline"}'),
            ("peershop/tool/laser-1/state", b'{"state":"free"}'),
            ("peershop/dev/lathe-node/cmd", b'{"re":0,"action":"grant"}'),
        ):
            laser = shop.client("laser-node")
            try:
                assert laser.link.wait_connected(10)
                info = laser.link.publish(topic, payload, qos=1, retain=True)
                # Mosquitto answers a denied QoS 1 publish with reason 0x87, on which
                # paho drops the connection; either way this publish is done.
                wait_for(
                    lambda info=info, laser=laser: (
                        info.is_published() or laser.link.counters.disconnects
                    ),
                    10,
                    f"the broker's answer to a publish on {topic}",
                )
            finally:
                laser.close()
        # Its own event goes through.  Anything forged would have reached the hub first:
        # each forged publish was answered before this login.
        laser = shop.client("laser-node")
        try:
            assert laser.link.wait_connected(10)
            laser.publish("peershop/dev/laser-node/event", b'{"boot":1,"seq":0,"type":"power"}')
        finally:
            laser.close()
        hub.wait_topic("peershop/dev/laser-node/event")
        assert hub.topics() == ["peershop/dev/laser-node/event"]
    finally:
        hub.close()

    # Nothing forged was retained either: a late subscriber finds none of it.
    late = shop.client(HUB_USER, "peershop/#")
    try:
        assert late.link.wait_subscribed(10)
        hub_probe = shop.client(HUB_USER)
        try:
            assert hub_probe.link.wait_connected(10)
            hub_probe.publish("peershop/probe", b"end")
        finally:
            hub_probe.close()
        late.wait_topic("peershop/probe")
        assert late.topics() == ["peershop/probe"]
    finally:
        late.close()


def test_a_device_reads_only_its_own_commands_allowlist_and_the_hub_status(shop: Shop):
    laser = shop.client("laser-node", "peershop/#", "tele/#", "#")
    hub = shop.client(HUB_USER)
    try:
        assert laser.link.wait_subscribed(10) and hub.link.wait_connected(10)
        hub.publish("peershop/dev/lathe-node/cmd", b'{"re":1,"action":"grant"}')
        hub.publish("peershop/dev/lathe-node/allowlist", b'{"version":1}', retain=True)
        hub.publish("peershop/dev/lathe-node/event", b"{}")
        hub.publish("tele/lathe_plug/SENSOR", b"{}")
        hub.publish("peershop/dev/laser-node/allowlist", b'{"version":1}', retain=True)
        hub.publish("peershop/hub/status", b'{"state":"online"}', retain=True)
        hub.publish("peershop/dev/laser-node/cmd", b'{"re":1,"action":"grant"}')
        laser.wait_topic("peershop/dev/laser-node/cmd")
        assert sorted(set(laser.topics())) == [
            "peershop/dev/laser-node/allowlist",
            "peershop/dev/laser-node/cmd",
            "peershop/hub/status",
        ]
    finally:
        hub.close()
        laser.close()


def test_the_hub_reads_and_writes_every_topic_it_needs(shop: Shop):
    hub = shop.client(HUB_USER, "peershop/#", "tele/#", "stat/#", "homeassistant/#")
    try:
        assert hub.link.wait_subscribed(10)
        assert hub.link.last_error is None  # no subscription refused
        for topic in (
            "cmnd/laser_plug/POWER",
            "homeassistant/switch/peershop/laser-1/config",
            "peershop/tool/laser-1/state",
            "tele/laser_plug/SENSOR",
        ):
            hub.publish(topic)
        hub.wait_topic("tele/laser_plug/SENSOR")
        assert "homeassistant/switch/peershop/laser-1/config" in hub.topics()
        assert "peershop/tool/laser-1/state" in hub.topics()
    finally:
        hub.close()


def test_a_revoked_device_is_cut_off_at_the_reload(shop: Shop):
    lathe = shop.client("lathe-node")
    try:
        assert lathe.link.wait_connected(10)
        mark = len(shop.broker.log)
        result = peershop(shop.config, "device", "revoke", "lathe-node")
        assert result.exit_code == 0, result.output
        assert "reloads" in result.stderr  # the command found the broker and signalled it
        shop.broker.wait_log("Reloading config", "the broker to reload", start=mark)
        # The live connection is dropped and the next login is refused.
        wait_for(lambda: lathe.link.counters.disconnects, 10, "the revoked device's drop")
        refused(lathe, after=1)
    finally:
        lathe.close()
    laser = shop.client("laser-node")
    try:
        assert laser.link.wait_connected(10), "other devices keep their access"
    finally:
        laser.close()


def test_a_new_device_can_log_in_after_the_reload_without_a_restart(shop: Shop):
    mark = len(shop.broker.log)
    creds = add_device(shop.config, "saw-node")
    shop.broker.wait_log("Reloading config", "the broker to reload", start=mark)
    saw = Client(shop.port, "saw-node", creds.password)
    try:
        assert saw.link.wait_connected(10), saw.link.last_error
    finally:
        saw.close()


def test_the_hubs_queue_loses_nothing_while_it_is_away_even_across_a_broker_restart(
    shop: Shop,
):
    """More events than Mosquitto's default queue (1000) wait for the hub's session."""
    events = 1500
    settings = MqttSettings(port=shop.port, username=HUB_USER, password=HUB_PASSWORD)
    received: list[Received] = []
    done = threading.Event()

    def collect(msg: Received) -> None:
        received.append(msg)
        if len({m.payload for m in received}) >= events:
            done.set()

    def hub_link() -> MqttLink:
        return MqttLink(
            settings,
            "peershop-hub-queue",
            on_message=collect,
            subscriptions=["peershop/dev/+/event"],
            persistent=True,
        )

    first = hub_link()
    first.start()
    assert first.wait_subscribed(10)
    first.stop()  # a clean disconnect: the session and its subscription stay

    laser = shop.client("laser-node")
    try:
        assert laser.link.wait_connected(10)
        infos = [
            laser.link.publish("peershop/dev/laser-node/event", f'{{"seq":{i}}}'.encode(), qos=1)
            for i in range(events)
        ]
        for info in infos:
            info.wait_for_publish(30)
    finally:
        laser.close()

    shop.broker.stop()  # SIGTERM: Mosquitto writes its persistence file
    shop.broker.start()

    second = hub_link()
    second.start()
    try:
        assert done.wait(60), f"only {len({m.payload for m in received})} of {events} arrived"
    finally:
        second.stop()
