"""``peershop agent`` (devices/agent.py) against a real Mosquitto and, where it matters, a real hub.

The agent runs with gpiozero's MockFactory and an RDM6300 on ``loop://`` (in-process) or
on a pty (as a subprocess, for SIGKILL and SIGTERM); a badge is an RDM6300 frame written
into the port.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from devices.agent import Agent
from devices.agent_config import parse_agent_config
from devices.rdm6300 import rdm6300_frame
from hub.contract.allowlist import build_allowlist, load_or_create_key, public_key_b64
from hub.contract.messages import (
    HUB_STATUS_TOPIC,
    allowlist_topic,
    cmd_topic,
    event_topic,
    parse_timestamp,
    status_topic,
)
from hub.errors import ConfigError
from hub.service.service import Hub
from hub.shopfile.apply import apply_shop
from hub.shopfile.parse import parse_shop_file
from hub.store.db import make_engine, migrate, session_factory
from hub.store.models import BadgeDecision, Event
from tests.helpers import REPO, Device, Listener, wait_for

BOB, DANA, FARAH = "5E2A9C11", "8A11F0C3", "1B7E44D2"  # 4-byte badges in examples/shop.yaml


def frame(uid: str) -> bytes:
    """What an RDM6300 sends for a 4-byte tag (version byte 00)."""
    return rdm6300_frame(bytes.fromhex("00" + uid))


def agent_config(tmp_path: Path, port: int, device_id: str, **extra):
    raw = {
        "id": device_id,
        "state_dir": str(tmp_path / f"state-{device_id}"),
        "pin_factory": "mock",
        "decide_timeout": 1.5,
        "mqtt": {"host": "127.0.0.1", "port": port},
        "reader": {
            "type": "rdm6300",
            "port": "loop://",
            "include_version": False,
            "hold_time": 0.2,
        },
        "interlock": {"pin": 5, "active_high": False},
        "indicator": {"led": 22},
    }
    raw.update(extra)
    return parse_agent_config(raw)


def badge(agent: Agent, uid: str) -> None:
    """Present a tag and take it away again (the reader reports ``badge_removed``)."""
    removed = agent.counters["events"] + 2
    agent.reader.serial.write(frame(uid))
    wait_for(lambda: agent.counters["events"] >= removed, 10, f"badge {uid} on and off")


def set_hub_status(broker_port: int, state: str) -> None:
    dev = Device(broker_port, "hub-status-setter")
    dev.send(json.dumps({"state": state}).encode(), topic=HUB_STATUS_TOPIC, retain=True)
    dev.close()


# --- configuration ----------------------------------------------------------------------


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError) as err:
        parse_agent_config({"id": "x1", "reader": {"type": "x"}})
    assert str(err.value) == (
        "config key agent.reader.type: must be one of rdm6300, pn532, wiegand, keyboard_wedge, "
        "not 'x'"
    )
    with pytest.raises(ConfigError, match=r"agent.interlock.pin: is required"):
        parse_agent_config({"id": "x1", "interlock": {}})
    with pytest.raises(ConfigError, match=r"agent.id"):
        parse_agent_config({"id": "Not An Id"})
    with pytest.raises(ConfigError, match=r"agent.mqtt.port"):
        parse_agent_config({"id": "x1", "mqtt": {"port": 0}})
    with pytest.raises(ConfigError, match=r"agent.hub.public_key"):
        parse_agent_config({"id": "x1", "hub": {"public_key": "bm90IGEga2V5"}})
    with pytest.raises(ConfigError, match=r"agent.indicator.buzzer: GPIO5 is already used"):
        parse_agent_config(
            {"id": "x1", "interlock": {"pin": 5}, "indicator": {"led": 6, "buzzer": 5}}
        )
    with pytest.raises(ConfigError, match=r"agent.reader.colour: unknown key"):
        parse_agent_config({"id": "x1", "reader": {"type": "rdm6300", "colour": "red"}})


def test_example_config_is_valid():
    cfg = parse_agent_config(
        __import__("tomllib").loads((REPO / "examples" / "agent.toml").read_text()),
        base=REPO / "examples",
    )
    assert cfg.id == "laser-node" and cfg.kind == ["reader", "interlock", "power"]


# --- protocol ---------------------------------------------------------------------------


def test_birth_events_and_replies(tmp_path, broker):
    device_id = f"t-{uuid.uuid4().hex[:6]}"
    listener = Listener(broker.port, f"peershop/dev/{device_id}/#")
    hub = Device(broker.port, "fake-hub")
    set_hub_status(broker.port, "online")
    agent = Agent(agent_config(tmp_path, broker.port, device_id, decide_timeout=10)).start()
    try:
        birth = listener.wait(
            lambda ms: [m for m in ms if m.topic == status_topic(device_id)], timeout=10
        )[0]
        body = json.loads(birth.payload)
        assert body == {
            "state": "online",
            "boot": 1,
            "fw": agent.cfg.fw,
            "kind": ["reader", "interlock"],
        }
        badge(agent, BOB)
        ev = listener.wait(lambda ms: [m for m in ms if m.topic.endswith("/event")])[0]
        event = json.loads(ev.payload)
        assert (event["boot"], event["seq"], event["type"], event["uid"]) == (1, 0, "badge", BOB)
        assert "replay" not in event
        assert not agent.interlock.is_enabled
        hub.send(b'{"re":0,"action":"grant","member":"Bob O.","max_s":600}', cmd_topic(device_id))
        wait_for(lambda: agent.interlock.is_enabled, 10, "the grant")
        assert agent.indicator.state == "grant"
        hub.send(b'{"action":"release"}', cmd_topic(device_id))
        wait_for(lambda: not agent.interlock.is_enabled, 10, "the release")
        hub.send(b'{"action":"lock"}', cmd_topic(device_id))
        wait_for(lambda: agent.indicator.state == "locked", 10, "the lock")
        wait_for(lambda: agent.outbox_size == 0, 10, "PUBACK of the events")
        hub.send(b'{"action":"rebirth"}', cmd_topic(device_id))
        listener.wait(
            lambda ms: len([m for m in ms if m.topic == status_topic(device_id)]) >= 2, timeout=10
        )
    finally:
        agent.close()
        hub.close()
    offline = listener.wait(
        lambda ms: [m for m in ms if m.topic == status_topic(device_id) and b"offline" in m.payload]
    )
    assert json.loads(offline[0].payload) == {"state": "offline", "boot": 1}
    listener.close()


# --- offline decisions from the allow-list ----------------------------------------------


@pytest.fixture
def signing_key(tmp_path):
    return load_or_create_key(tmp_path / "hub.key")


def test_the_birth_tells_an_online_hub_the_clock_and_goes_again_before_a_replay(tmp_path, broker):
    """The Pi's clock goes into the birth only for a hub that is online (one that waited
    at the broker for a hub that is down would add the wait to the clock's error); when
    the hub comes back, the agent is born again with its clock, ahead of its buffer."""
    set_hub_status(broker.port, "offline")
    device_id = f"clk-{uuid.uuid4().hex[:6]}"
    listener = Listener(broker.port, f"peershop/dev/{device_id}/#")
    agent = Agent(agent_config(tmp_path, broker.port, device_id)).start()
    try:
        wait_for(lambda: agent.hub_online is False, 10, "the hub's offline status")
        listener.wait(lambda ms: any(m.topic == status_topic(device_id) for m in ms))
        [birth] = listener.payloads(status_topic(device_id))
        assert birth["state"] == "online" and "ts" not in birth
        badge(agent, BOB)  # decided alone, buffered
        assert listener.payloads(event_topic(device_id)) == []
        set_hub_status(broker.port, "online")
        listener.wait(lambda ms: any(m.topic == event_topic(device_id) for m in ms))
        sent = [(m.topic, json.loads(m.payload)) for m in listener.messages]
        births = [body for topic, body in sent if topic == status_topic(device_id)]
        assert len(births) == 2 and births[1]["boot"] == birth["boot"]
        ts = parse_timestamp(births[1]["ts"])
        assert abs(ts - datetime.now(UTC)) < timedelta(minutes=1)  # the test's own clock
        first_event = next(i for i, (topic, _) in enumerate(sent) if topic.endswith("/event"))
        assert sent[first_event][1]["replay"] is True
        assert sent[first_event - 1] == (status_topic(device_id), births[1])
    finally:
        agent.close()
        listener.close()


def _offline_agent(tmp_path, broker, signing_key, device_id):
    cfg = agent_config(
        tmp_path,
        broker.port,
        device_id,
        tool="drillpress-1",
        maintainers=[FARAH],
        hub={"public_key": public_key_b64(signing_key)},
    )
    return Agent(cfg).start()


def test_allowlist_valid_forged_expired(tmp_path, broker, signing_key):
    set_hub_status(broker.port, "offline")
    now = datetime.now(UTC)
    device_id = f"al-{uuid.uuid4().hex[:6]}"
    sender = Device(broker.port, "allowlist-sender")
    agent = _offline_agent(tmp_path, broker, signing_key, device_id)
    try:
        wait_for(lambda: agent.hub_online is False, 10, "the hub's offline status")

        # No list yet: only a maintainer gets in.
        badge(agent, BOB)
        wait_for(lambda: agent.counters["local_decisions"] == 1, 10, "a local decision")
        assert not agent.interlock.is_enabled
        badge(agent, FARAH)
        wait_for(lambda: agent.interlock.is_enabled, 10, "the maintainer's grant")
        badge(agent, FARAH)  # tap off, decided locally too
        wait_for(lambda: not agent.interlock.is_enabled, 10, "the maintainer's tap off")

        # A forged list (one byte of a digest changed) is refused.
        good = build_allowlist("drillpress-1", 3, [BOB], now, now + timedelta(days=1), signing_key)
        forged = dict(
            good, uids=[good["uids"][0][:-1] + ("0" if good["uids"][0][-1] != "0" else "1")]
        )
        sender.send(json.dumps(forged).encode(), allowlist_topic(device_id), retain=True)
        sender.flush()
        # An expired one is refused as well.
        expired = build_allowlist(
            "drillpress-1", 4, [BOB], now - timedelta(days=2), now - timedelta(days=1), signing_key
        )
        sender.send(json.dumps(expired).encode(), allowlist_topic(device_id), retain=True)
        sender.flush()
        # Then the valid one is taken.
        sender.send(json.dumps(good).encode(), allowlist_topic(device_id), retain=True)
        wait_for(lambda: agent.allowlist is not None, 10, "the valid allow-list")
        assert agent.allowlist["version"] == 3

        badge(agent, DANA)  # not on the list
        wait_for(lambda: agent.counters["local_decisions"] == 4, 10, "a local decision")
        assert not agent.interlock.is_enabled
        badge(agent, BOB)  # on the list
        wait_for(lambda: agent.interlock.is_enabled, 10, "the grant from the list")

        # A list that has expired since it came means deny, except for maintainers.
        agent.allowlist = expired
        assert not agent.decide_offline(BOB)
        assert agent.decide_offline(FARAH)
        agent.allowlist = forged
        assert not agent.decide_offline(BOB)
        agent.allowlist = good
        assert agent.decide_offline(BOB) and not agent.decide_offline(DANA)
        # Nothing was published while the hub was offline: all buffered.
        assert agent.outbox_size == agent.counters["events"] > 0
    finally:
        agent.close()
        sender.send(b"", allowlist_topic(device_id), retain=True)
        sender.close()


def test_no_reply_in_time_decides_from_the_list(tmp_path, broker, signing_key):
    set_hub_status(broker.port, "online")  # the hub says online but never answers
    device_id = f"slow-{uuid.uuid4().hex[:6]}"
    agent = _offline_agent(tmp_path, broker, signing_key, device_id)
    try:
        wait_for(lambda: agent.hub_online is True and agent.can_send, 10, "the connection")
        badge(agent, FARAH)
        wait_for(lambda: agent.interlock.is_enabled, 10, "the grant after decide_timeout")
        assert agent.counters["local_decisions"] == 1
        wait_for(lambda: agent.outbox_size == 0, 10, "the live badge to be delivered")
    finally:
        agent.close()


# --- with the real hub: outage and replay ----------------------------------------------


def _shop_hub(cfg) -> Hub:
    engine = make_engine(cfg.db.url)
    migrate(engine)
    with session_factory(engine).begin() as session:
        apply_shop(session, parse_shop_file(REPO / "examples" / "shop.yaml"))
    engine.dispose()
    hub = Hub(cfg)
    hub.start()
    assert hub.wait_ready(15)
    return hub


def test_hub_offline_then_back_replays_exactly_once(tmp_path, broker, hub_config):
    hub = _shop_hub(hub_config)
    key = public_key_b64(load_or_create_key(hub_config.site.data_dir / "hub-signing.key"))
    cfg = agent_config(
        tmp_path,
        broker.port,
        "drill-node",
        tool="drillpress-1",
        hub={"public_key": key},
        decide_timeout=5,
    )
    agent = Agent(cfg).start()
    sm = session_factory(hub.engine)

    def stored() -> int:
        with sm() as s:
            return s.scalar(select(func.count()).where(Event.device_id == "drill-node"))

    try:
        wait_for(lambda: agent.hub_online and agent.allowlist is not None, 15, "hub and list")
        badge(agent, BOB)  # the hub grants (drill press: no training needed)
        wait_for(lambda: agent.interlock.is_enabled, 10, "the hub's grant")
        assert agent.counters["local_decisions"] == 0
        badge(agent, BOB)  # tap off
        wait_for(lambda: not agent.interlock.is_enabled, 10, "the hub's tap off")
        wait_for(lambda: stored() == 4, 15, "4 events stored")

        hub.stop()  # publishes offline
        wait_for(lambda: agent.hub_online is False, 10, "the hub's offline status")
        badge(agent, DANA)  # on the list (no training needed): granted locally
        wait_for(lambda: agent.interlock.is_enabled, 10, "the local grant")
        badge(agent, DANA)  # tap off locally
        wait_for(lambda: not agent.interlock.is_enabled, 10, "the local tap off")
        assert agent.counters["events"] == 8
        assert agent.outbox_size == 4 and agent.counters["local_decisions"] == 2

        cmds = Listener(broker.port, cmd_topic("drill-node"))
        hub = Hub(hub_config)  # back
        hub.start()
        assert hub.wait_ready(15)
        sm = session_factory(hub.engine)
        wait_for(lambda: stored() == 8 and agent.outbox_size == 0, 20, "the replay")
        agent.handle_command({"action": "rebirth"})  # sends nothing twice into the log
        wait_for(lambda: agent.counters["published"] >= 8, 10, "the rebirth")
        with sm() as s:
            rows = s.execute(
                select(Event.boot, Event.seq, Event.replay)
                .where(Event.device_id == "drill-node")
                .order_by(Event.seq)
            ).all()
            assert [(r.seq, r.replay) for r in rows] == [(i, i >= 4) for i in range(8)]
            recorded = s.scalars(
                select(BadgeDecision.seq).where(
                    BadgeDecision.device_id == "drill-node", BadgeDecision.seq >= 4
                )
            ).all()
        assert sorted(recorded) == [4, 6]  # the replayed badges are on record...
        # ...but answered with nothing: the member was served by the agent long ago.
        replies = [json.loads(m.payload) for m in cmds.messages]
        assert [r.get("re") for r in replies if r.get("re", -1) >= 4] == []
        assert not agent.interlock.is_enabled  # no new grant came for the replays
        cmds.close()
    finally:
        agent.close()
        hub.stop()


# --- as a process: SIGKILL and SIGTERM ----------------------------------------------------


class AgentProcess:
    """``peershop agent -c`` with mock pins and an RDM6300 on a pty the test writes to."""

    def __init__(self, tmp_path: Path, device_id: str, mqtt_port: int):
        self.master, slave = os.openpty()
        self.slave_path = os.ttyname(slave)
        self._slave = slave
        self.state = tmp_path / "state"
        self.toml = tmp_path / "agent.toml"
        self.device_id = device_id
        self.write_config(mqtt_port)
        self.proc: subprocess.Popen[str] | None = None

    def write_config(self, mqtt_port: int) -> None:
        self.toml.write_text(
            f'id = "{self.device_id}"\nstate_dir = "{self.state}"\npin_factory = "mock"\n'
            f'[mqtt]\nhost = "127.0.0.1"\nport = {mqtt_port}\n'
            f'[reader]\ntype = "rdm6300"\nport = "{self.slave_path}"\ninclude_version = false\n'
            "[interlock]\npin = 17\nactive_high = false\nno_cut_while_busy = true\n"
        )

    def start(self) -> None:
        # PYTHONFAULTHANDLER: an agent that hangs and is aborted prints every thread's stack
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hub.cli", "agent", "-c", str(self.toml)],
            cwd=REPO,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONFAULTHANDLER": "1"},
        )
        # The log is read all the time, so a full pipe never blocks the agent's logging.
        self.log: list[str] = []
        self._started = threading.Event()
        self._reader = threading.Thread(target=self._read_log, args=(self.proc,), daemon=True)
        self._reader.start()

    def _read_log(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            self.log.append(line)
            if line.startswith(f"peershop agent {self.device_id}"):
                self._started.set()
        proc.stderr.close()
        self._started.set()  # it exited: wait_started says so

    def wait_started(self) -> None:
        """Wait until the agent says it runs (its reader port is open by then)."""
        assert self.proc is not None
        self._started.wait(60)
        if self.proc.poll() is not None:
            raise AssertionError(f"the agent exited with {self.proc.returncode}")

    def stop(self, timeout: float) -> int:
        """SIGTERM, then the exit status; one that does not stop in time is aborted, and
        the assertion shows its log with the stack of every thread."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            status = self.proc.wait(timeout)
            self._reader.join(10)  # the whole log, to its last line
            return status
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)
            self.proc.wait(10)
            raise AssertionError(
                f"the agent did not stop within {timeout} s:\n" + "".join(self.log[-200:])
            ) from None

    def outbox(self) -> int:
        """Events waiting for a PUBACK (acknowledged ones stay for the resend window)."""
        db = sqlite3.connect(self.state / "agent.db")
        try:
            return db.execute("SELECT count(*) FROM outbox WHERE acked_at IS NULL").fetchone()[0]
        except sqlite3.OperationalError:
            return 0
        finally:
            db.close()

    def badge(self, uid: str) -> None:
        os.write(self.master, frame(uid))

    def close(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        os.close(self.master)
        os.close(self._slave)


def test_sigkill_loses_nothing(tmp_path, broker):
    from hub.service.broker import free_port

    device_id = f"kill-{uuid.uuid4().hex[:6]}"
    set_hub_status(broker.port, "online")
    proc = AgentProcess(tmp_path, device_id, free_port())  # no broker there: all buffered
    listener = Listener(broker.port, f"peershop/dev/{device_id}/event")
    try:
        proc.start()
        proc.wait_started()
        for i, uid in enumerate((BOB, DANA, FARAH)):
            proc.badge(uid)
            # the badge, then badge_removed once the tag has left
            wait_for(lambda n=2 * i + 2: proc.outbox() == n, 20, f"{2 * i + 2} events stored")
        proc.proc.send_signal(signal.SIGKILL)  # a power cut
        proc.proc.wait(10)
        proc.write_config(broker.port)
        proc.start()
        got = listener.wait(lambda ms: len(ms) >= 6 and ms, timeout=20)
        events = sorted((json.loads(m.payload) for m in got), key=lambda e: e["seq"])
        assert [(e["boot"], e["seq"], e["type"], e["uid"], e["replay"]) for e in events] == [
            (1, 0, "badge", BOB, True),
            (1, 1, "badge_removed", BOB, True),
            (1, 2, "badge", DANA, True),
            (1, 3, "badge_removed", DANA, True),
            (1, 4, "badge", FARAH, True),
            (1, 5, "badge_removed", FARAH, True),
        ]
        wait_for(lambda: proc.outbox() == 0, 20, "the outbox to empty on PUBACK")
    finally:
        proc.close()
        listener.close()


def test_sigterm_cuts_the_relay_and_says_offline(tmp_path, broker):
    device_id = f"term-{uuid.uuid4().hex[:6]}"
    set_hub_status(broker.port, "online")
    listener = Listener(broker.port, f"peershop/dev/{device_id}/#")
    hub = Device(broker.port, "fake-hub-term")
    proc = AgentProcess(tmp_path, device_id, broker.port)
    try:
        proc.start()
        proc.wait_started()
        listener.wait(lambda ms: any(m.topic.endswith("/status") for m in ms), timeout=20)
        proc.badge(BOB)
        listener.wait(lambda ms: any(m.topic.endswith("/event") for m in ms), timeout=10)
        hub.send(b'{"re":0,"action":"grant","member":"Bob","max_s":600}', cmd_topic(device_id))
        hub.flush()
        assert proc.stop(60) == 0  # a loaded CI machine stops slowly; it must stop
        err = "".join(proc.log)
        assert "relay off" in err
        # the retained offline status it left, once the broker has passed it on
        listener.wait(
            lambda ms: [m for m in ms if m.topic.endswith("/status") and b"offline" in m.payload],
            timeout=10,
        )
        statuses = [json.loads(m.payload) for m in listener.messages if m.topic.endswith("/status")]
        assert statuses[-1] == {"state": "offline", "boot": 1}
    finally:
        hub.close()
        proc.close()
        listener.close()
