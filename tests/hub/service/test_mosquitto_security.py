"""The generated broker config against a real Mosquitto: who may log in, write and read.

Every test runs Mosquitto with exactly the files `peershop mosquitto-config` writes,
started the way the systemd unit starts it (a pid file for reloads).  The attacks of
docs/threat-model.md's "Tested threats" are tried here, as a device with a valid login
(or a careless operator) would, against the hub, an agent and a serial node.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from devices.agent import Agent
from firmware_bridge.bridge import Bridge
from hub.config import Config, load_config
from hub.contract.allowlist import allowlist_payload, build_allowlist, load_or_create_key
from hub.contract.messages import HUB_STATUS_TOPIC, allowlist_topic, cmd_topic, event_topic
from hub.contract.mqtt import MqttLink, MqttSettings, Received
from hub.service.broker import find_mosquitto, free_port
from hub.service.service import Hub
from hub.store.models import DeadLetter, Event
from hub.store.outbox import enqueue
from tests.devices.test_agent import BOB, agent_config, badge
from tests.firmware_bridge.test_bridge import PtyNode
from tests.helpers import event_payload, wait_for
from tests.hub.admin.test_credentials import (
    HUB_PASSWORD,
    HUB_USER,
    add_device,
    peershop,
    write_ops_config,
)


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
        """SIGTERM, so Mosquitto saves its persistence file.  Mosquitto 2.0.11 loses a
        SIGTERM that comes just after it says it runs (it sets its run flag after
        that), so the signal is sent again until it has ended."""
        if self.process is not None:
            for _ in range(10):
                if self.process.poll() is not None:
                    break
                self.process.terminate()
                try:
                    self.process.wait(1)
                except subprocess.TimeoutExpired:
                    continue
            assert self.process.poll() is not None, "mosquitto ignored SIGTERM"
            if self._reader is not None:
                self._reader.join(5)
            assert self.process.stderr is not None
            self.process.stderr.close()
            self.process = None


class Client:
    """An MQTT client with a login; records what it receives and why it was refused."""

    def __init__(
        self,
        port: int,
        username: str | None,
        password: str | None,
        *topics: str,
        client_id: str | None = None,
    ):
        self.messages: list[Received] = []
        self._cond = threading.Condition()
        self.link = MqttLink(
            MqttSettings(port=port, username=username, password=password),
            client_id or f"{username or 'anon'}-{uuid.uuid4().hex[:6]}",
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
    config_path: Path
    broker_dir: Path
    broker: GeneratedBroker
    port: int
    passwords: dict[str, str]

    def client(
        self,
        username: str | None,
        *topics: str,
        password: str | None = None,
        client_id: str | None = None,
    ) -> Client:
        if password is None and username is not None:
            password = self.passwords[username]
        return Client(self.port, username, password, *topics, client_id=client_id)

    def config(self, **sections: dict[str, Any]) -> Config:
        """The hub's config (as ``peershop run`` reads it), with ``sections`` overridden."""
        return load_config(self.config_path, env={}, overrides=sections)

    def hub(self, **sections: dict[str, Any]) -> Hub:
        """A running hub with this shop's login, on the generated broker."""
        hub = Hub(self.config(**sections))
        hub.start()
        assert hub.wait_ready(10), hub.link.last_error
        return hub

    def add(self, device_id: str, *args: str) -> str:
        """A new login, usable once the broker has reloaded; its password."""
        mark = len(self.broker.log)
        password = add_device(self.config_path, device_id, *args).password
        self.broker.wait_log("Reloading config", "the broker to reload", start=mark)
        self.passwords[device_id] = password
        return password

    def restart_broker(self, **sections: dict[str, Any]) -> None:
        """Rewrite the broker files from the config with ``sections`` overridden, as the
        systemd unit does at every start, and start Mosquitto on them."""
        self.broker.stop()
        with self.config_path.open("a") as f:
            for name, values in sections.items():
                f.write(f"[{name}]\n")
                f.writelines(f"{key} = {value!r}\n" for key, value in values.items())
        made = peershop(self.config_path, "mosquitto-config", "--out", str(self.broker_dir))
        assert made.exit_code == 0, made.output
        self.broker.start()


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
        late.publish("peershop/probe", b"end")  # one login, one connection at a time
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
        result = peershop(shop.config_path, "device", "revoke", "lathe-node")
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
    creds = add_device(shop.config_path, "saw-node")
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


# -- the hub's session belongs to the hub's login (issue 13, item 1) ---------------------

DOOR_TAP = {"type": "badge", "uid": "04A1B2C3"}


def stored_seqs(hub: Hub, device_id: str) -> list[int]:
    with hub.sm() as session:
        rows = session.scalars(select(Event.seq).where(Event.device_id == device_id))
        return sorted(rows)


def tap(client: Client, device_id: str, seqs: range) -> None:
    """Door taps, each acknowledged by the broker before this returns."""
    for seq in seqs:
        client.publish(event_topic(device_id), event_payload(1, seq, **DOOR_TAP))


def take_over_the_hubs_session(shop: Shop) -> Client:
    """Another device's login, connecting with the hub's client id and a clean start (which
    wipes a session it takes over): what a device that read the docs could do."""
    attacker = shop.client("lathe-node", client_id=shop.config().mqtt.client_id)
    assert attacker.link.wait_connected(10), attacker.link.last_error
    return attacker


def test_a_device_connecting_as_the_hub_loses_no_event_while_the_hub_runs(shop: Shop):
    hub = shop.hub()
    door = shop.client("laser-node")
    try:
        assert door.link.wait_connected(10)
        tap(door, "laser-node", range(0, 5))
        attacker = take_over_the_hubs_session(shop)
        try:
            tap(door, "laser-node", range(5, 10))  # acknowledged while the attacker is on
        finally:
            attacker.close()
        assert hub.wait_ready(10)
        tap(door, "laser-node", range(10, 15))
        wait_for(lambda: 14 in stored_seqs(hub, "laser-node"), 20, "the last tap stored")
        assert stored_seqs(hub, "laser-node") == list(range(15))
        assert hub.link.counters.disconnects == 0  # the hub was never pushed off
    finally:
        door.close()
        hub.stop()


def test_a_device_connecting_as_the_hub_loses_no_event_queued_while_the_hub_is_down(shop: Shop):
    shop.hub().stop()  # a clean stop: the session and its queue stay at the broker
    door = shop.client("laser-node")
    try:
        assert door.link.wait_connected(10)
        tap(door, "laser-node", range(0, 5))  # queued for the hub
        take_over_the_hubs_session(shop).close()
        hub = shop.hub()
        try:
            tap(door, "laser-node", range(5, 6))  # sent after the hub is back: the marker
            wait_for(lambda: 5 in stored_seqs(hub, "laser-node"), 20, "the marker stored")
            assert stored_seqs(hub, "laser-node") == list(range(6))
        finally:
            hub.stop()
    finally:
        door.close()


def test_an_agent_a_serial_node_and_plugs_work_with_their_own_client_ids(
    shop: Shop, tmp_path: Path
):
    """The broker takes each login's username as its client id: whatever id a device is
    configured with (the agent's is its device id, the bridge's ``bridge-{id}``, a
    Tasmota's ``DVES_…``), it connects, and only a second connection of the same login
    replaces it."""
    tasmota = shop.add("laser-plug", "--tasmota", "laser_plug")
    hub = shop.client(HUB_USER, "peershop/dev/+/event", "tele/#")
    agent = device_agent(tmp_path, shop, "laser-node")
    node = PtyNode("lathe-node", tmp_path / "usb-lathe-node")
    node.plug()
    bridge = Bridge(
        MqttSettings(port=shop.port),
        [str(node.link)],
        passwords={"lathe-node": shop.passwords["lathe-node"]},
    )
    plug = Client(shop.port, "laser-plug", tasmota, client_id="DVES_4B2A1C")
    try:
        assert hub.link.wait_subscribed(10)
        agent.start()
        bridge.start()
        assert plug.link.wait_connected(10), plug.link.last_error
        wait_for(lambda: agent.can_send, 10, "the agent to connect")
        agent.emit("button", name="start")
        node.send("badge", uid="04a1b2c3d4")
        plug.publish("tele/laser_plug/SENSOR", b'{"ENERGY":{"Power":812,"Total":1.5}}')
        for topic in (
            "peershop/dev/laser-node/event",
            "peershop/dev/lathe-node/event",
            "tele/laser_plug/SENSOR",
        ):
            hub.wait_topic(topic)
        wait_for(node.all_acked, 10, "the node's badge acked after its PUBACK")
        assert agent.link.counters.disconnects == plug.link.counters.disconnects == 0
    finally:
        plug.close()
        bridge.stop()
        node.unplug()
        agent.close()
        hub.close()


# -- a device cannot switch its own tool on (item 2) --------------------------------------


def device_agent(tmp_path: Path, shop: Shop, device_id: str, **extra: Any) -> Agent:
    """An agent on mock pins with the device's own login on the generated broker."""
    mqtt = {"host": "127.0.0.1", "port": shop.port, "username": device_id}
    mqtt["password"] = shop.passwords[device_id]
    return Agent(agent_config(tmp_path, shop.port, device_id, mqtt=mqtt, **extra))


def test_a_device_cannot_switch_its_own_tool_on(shop: Shop, tmp_path: Path):
    """The agent takes a grant only as the hub's reply to a badge it waits on, with a
    max_s, and never while locked; and the broker lets no device write its own cmd."""
    hub = shop.client(HUB_USER, "peershop/dev/laser-node/event")
    agent = device_agent(tmp_path, shop, "laser-node", decide_timeout=30)
    cmd = cmd_topic("laser-node")
    denies: list[float] = []  # the reader's red blinks, as the member sees them
    show_deny = agent.indicator.deny
    agent.indicator.deny = lambda: (denies.append(time.monotonic()), show_deny())

    def badge_seq() -> int:
        """Tap a card; the seq of its badge event, as the hub sees it."""
        seen = len(hub.messages)
        badge(agent, BOB)
        wait_for(lambda: len(hub.messages) > seen, 10, "the badge at the hub")
        events = [json.loads(m.payload) for m in hub.messages[seen:]]
        return next(e["seq"] for e in events if e["type"] == "badge")

    def send(command: dict[str, Any]) -> None:
        hub.publish(cmd, json.dumps(command).encode())

    def blinked(times: int) -> None:
        wait_for(lambda: len(denies) == times, 10, f"deny blink {times}")

    try:
        assert hub.link.wait_subscribed(10)
        hub.publish(HUB_STATUS_TOPIC, b'{"state":"online"}', retain=True)
        agent.start()
        wait_for(lambda: agent.can_send, 10, "the agent to connect")

        # 1. The device answers its own badge, on its own connection; then the hub denies.
        seq = badge_seq()
        forged = json.dumps({"re": seq, "action": "grant", "max_s": 3600}).encode()
        info = agent.link.publish(cmd, forged, qos=1)
        wait_for(
            lambda: info.is_published() or agent.link.counters.disconnects,
            10,
            "the broker's answer to the forged grant",
        )
        send({"re": seq, "action": "deny", "reason": "locked_out"})
        blinked(1)  # the hub's answer counts: nothing answered the badge before it
        assert not agent.interlock.is_enabled

        # 2. A grant that answers no badge: none at all, and one of a badge never sent.
        send({"action": "grant", "member": "Nobody", "max_s": 3600})
        send({"re": 999, "action": "grant", "member": "Nobody", "max_s": 3600})
        send({"action": "deny"})  # blinks once everything before it was handled
        blinked(2)
        assert not agent.interlock.is_enabled

        # 3. A grant while the tool is locked for maintenance, for a badge tapped before.
        seq = badge_seq()
        send({"action": "lock"})
        send({"re": seq, "action": "grant", "max_s": 3600})
        send({"action": "deny"})
        blinked(3)
        assert not agent.interlock.is_enabled and agent.indicator.state == "locked"
        send({"action": "unlock"})
        wait_for(lambda: agent.indicator.state == "ready", 10, "the unlock")

        # 4. A grant with no time limit: refused, the member sees a deny.
        seq = badge_seq()
        send({"re": seq, "action": "grant", "member": "Bob"})
        send({"action": "deny"})
        blinked(5)
        assert not agent.interlock.is_enabled

        # The hub's reply to a badge, with its max_s, switches the tool on.
        seq = badge_seq()
        send({"re": seq, "action": "grant", "member": "Bob", "max_s": 3600})
        wait_for(lambda: agent.interlock.is_enabled, 10, "the hub's grant")
    finally:
        agent.close()
        hub.close()


# -- plug prefixes (item 5) ----------------------------------------------------------------


def test_a_plug_cannot_be_given_the_hubs_topics(shop: Shop):
    """`device add X --shelly peershop` would have let plug X write `peershop/#`: every
    device's events and commands.  It is refused, and the login never exists."""
    mark = len(shop.broker.log)
    result = peershop(shop.config_path, "device", "add", "rogue-plug", "--shelly", "peershop")
    assert result.exit_code != 0 and "'peershop' overlaps peershop/" in result.output
    assert "rogue-plug" not in (shop.broker_dir / "passwords").read_text()
    assert "rogue-plug" not in (shop.broker_dir / "acl").read_text()
    assert not any("Reloading config" in line for line in shop.broker.log[mark:])


# -- the broker's limits (item 8) ------------------------------------------------------------


def broker_rss_mb(shop: Shop) -> float:
    assert shop.broker.process is not None
    status = Path(f"/proc/{shop.broker.process.pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def test_a_packet_over_the_cap_is_refused_and_never_queued_for_the_hub(shop: Shop):
    shop.hub().stop()  # the hub is away; its session would queue what comes
    before = broker_rss_mb(shop)
    big = bytes(10 << 20)  # 10 MB, ten times broker.max_packet_size
    for _ in range(5):
        flooder = shop.client("laser-node")
        try:
            assert flooder.link.wait_connected(10)
            # its own client, not one that keeps to the broker's maximum as ours does
            info = flooder.link.client.publish(event_topic("laser-node"), big, qos=1)
            wait_for(
                lambda info=info, f=flooder: info.is_published() or f.link.counters.disconnects,
                20,
                "the broker's answer to 10 MB",
            )
            assert not info.is_published()  # refused: the broker dropped the connection
        finally:
            flooder.close()
    assert broker_rss_mb(shop) - before < 20  # 5 x 10 MB queued would be over 50
    door = shop.client("laser-node")
    hub = shop.hub()
    try:
        assert door.link.wait_connected(10)
        tap(door, "laser-node", range(0, 1))
        wait_for(lambda: stored_seqs(hub, "laser-node") == [0], 20, "the tap after the flood")
        with hub.sm() as session:  # the hub never got any of it, not even as a dead letter
            assert session.scalar(select(func.count(DeadLetter.id))) == 0
    finally:
        hub.stop()
        door.close()


def test_the_queue_kept_for_an_absent_hub_is_capped(shop: Shop):
    limit = 4 << 20
    shop.restart_broker(broker={"max_queued_bytes": limit})
    shop.hub().stop()
    before = broker_rss_mb(shop)
    mark = len(shop.broker.log)
    flooder = shop.client("laser-node")
    try:
        assert flooder.link.wait_connected(10)
        for _ in range(20):  # 20 x 900 KB: under the packet cap, five times the queue cap
            flooder.publish(event_topic("laser-node"), bytes(900_000))
    finally:
        flooder.close()
    # Mosquitto says whose messages it drops: the hub's, by its login.
    shop.broker.wait_log(
        f"Outgoing messages are being dropped for client {HUB_USER}", "the drop", start=mark
    )
    assert broker_rss_mb(shop) - before < 12  # 18 MB held before the cap
    hub = shop.hub()
    door = shop.client("laser-node")
    try:
        assert door.link.wait_connected(10)
        tap(door, "laser-node", range(0, 1))
        wait_for(lambda: stored_seqs(hub, "laser-node") == [0], 20, "a tap after the hub is back")
        with hub.sm() as session:  # what was queued reached the hub as dead letters
            held = session.scalar(select(func.sum(DeadLetter.size))) or 0
        assert 0 < held <= limit + 1_048_576  # Mosquitto takes one more while below the cap
    finally:
        door.close()
        hub.stop()


def test_a_big_shops_signed_allow_list_fits_under_the_packet_cap(shop: Shop, tmp_path: Path):
    """The hub's largest message: 5,000 members' badges in one signed list (~320 KB)."""
    key = load_or_create_key(tmp_path / "hub.key")
    now = datetime.now(UTC)
    uids = [f"{n:08X}" for n in range(5000)]
    payload = allowlist_payload(
        build_allowlist("laser-1", 1, uids, now, now + timedelta(days=7), key)
    )
    assert len(payload) > 300_000
    device = shop.client("laser-node", allowlist_topic("laser-node"))
    hub = shop.client(HUB_USER)
    try:
        assert device.link.wait_subscribed(10) and hub.link.wait_connected(10)
        hub.publish(allowlist_topic("laser-node"), payload, retain=True)
        device.wait_topic(allowlist_topic("laser-node"))
        assert device.messages[0].payload == payload
    finally:
        hub.close()
        device.close()


def test_a_message_too_big_for_the_broker_does_not_cut_the_hub_off(
    shop: Shop, caplog: pytest.LogCaptureFixture
):
    """An allow-list over broker.max_packet_size: sent, Mosquitto would drop the hub's
    connection, and the hub would send it again at every reconnect: ingest would stop."""
    shop.restart_broker(broker={"max_packet_size": 65_536, "max_queued_bytes": 1 << 20})
    listener = shop.client("laser-node", allowlist_topic("laser-node"), cmd_topic("laser-node"))
    hub = shop.hub()  # it learns the broker's maximum from its CONNACK
    try:
        assert listener.link.wait_subscribed(10)
        with hub.sm.begin() as session:
            enqueue(session, allowlist_topic("laser-node"), bytes(70_000), retain=True)
            enqueue(session, cmd_topic("laser-node"), b'{"action":"unlock"}')
        hub.outbox.notify()
        listener.wait_topic(cmd_topic("laser-node"))
        assert listener.topics() == [cmd_topic("laser-node")]
        assert hub.link.counters.disconnects == 0 and hub.outbox.too_large == 1
        assert "over the broker's maximum packet size of 65536 bytes" in caplog.text
        wait_for(lambda: hub.outbox.pending() == 0, 10, "the outbox to empty")
    finally:
        hub.stop()
        listener.close()


# -- implausible power readings (item 13) ----------------------------------------------------


def test_implausible_power_readings_are_dead_letters_with_the_reason(shop: Shop):
    tasmota = shop.add("laser-plug", "--tasmota", "laser_plug")
    shelly = shop.add("saw-plug", "--shelly", "shelly-saw")
    shop_file = shop.config_path.parent / "shop.yaml"
    shop_file.write_text(
        "tools:\n"
        "  - {id: laser-1, devices: [laser-node, {tasmota: laser_plug}]}\n"
        "  - {id: saw-1, devices: [{shelly: shelly-saw}]}\n"
    )
    assert peershop(shop.config_path, "load", str(shop_file)).exit_code == 0
    hub = shop.hub()
    node = shop.client("laser-node")
    plug = Client(shop.port, "laser-plug", tasmota)
    saw = Client(shop.port, "saw-plug", shelly)
    try:
        for client in (node, plug, saw):
            assert client.link.wait_connected(10)
        node.publish(event_topic("laser-node"), event_payload(1, 0, w=1e300))
        node.publish(event_topic("laser-node"), event_payload(1, 1, w=-1e300))
        node.publish(event_topic("laser-node"), event_payload(1, 2, w=800.0, wh_total=1e300))
        node.publish(event_topic("laser-node"), event_payload(1, 3, w=800.0, wh_total=1500.0))
        plug.publish("tele/laser_plug/SENSOR", b'{"ENERGY":{"Power":1e300,"Total":1.5}}')
        saw.publish("shelly-saw/status/switch:0", b'{"apower":40,"aenergy":{"total":1e300}}')
        plug.publish("tele/laser_plug/SENSOR", b'{"ENERGY":{"Power":812,"Total":1.6}}')
        saw.publish("shelly-saw/status/switch:0", b'{"apower":40,"aenergy":{"total":10}}')
        wait_for(lambda: hub.counters.dead_letters >= 5, 20, "five dead letters")
        wait_for(lambda: count_events(hub) == 3, 20, "the three plausible readings")
        with hub.sm() as session:
            reasons = sorted(session.scalars(select(DeadLetter.reason)))
            watts = [data["w"] for data in session.scalars(select(Event.data))]
        assert sorted(watts) == [40.0, 800.0, 812.0]
    finally:
        for client in (node, plug, saw):
            client.close()
        hub.stop()
    watts = "W, outside the plausible 0 to 100000 W (ingest.min_power_w, ingest.max_power_w)"
    counter = "Wh, outside the plausible 0 to 1e+10 Wh (ingest.max_wh_total)"
    assert reasons == sorted(
        [
            f"field 'w' is 1e+300 {watts}",
            f"field 'w' is -1e+300 {watts}",
            f"field 'wh_total' is 1e+300 {counter}",
            f"ENERGY.Power is 1e+300 {watts}",
            f"aenergy.total is 1e+300 {counter}",
        ]
    )


def count_events(hub: Hub) -> int:
    with hub.sm() as session:
        return session.scalar(select(func.count(Event.id))) or 0
