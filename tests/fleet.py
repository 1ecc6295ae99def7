"""A fleet of ten devices streaming 20,000 paced QoS 1 events, and the shop it streams to.

Used by the durability and fault tests (``tests/scenarios/test_durability.py``,
``tests/faults/``): :class:`Fleet` of simulated devices (an outbox tracked by PUBACK),
:class:`AgentFleet` of real agents (``devices/agent.py``, its SQLite outbox, mock pins),
and :class:`Shop`, a private broker and a ``peershop run`` process on the test pass's
database.
"""

from __future__ import annotations

import threading
import time
import uuid
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from devices.agent import Agent
from devices.agent_config import parse_agent_config
from hub.contract.messages import event_topic
from hub.contract.mqtt import MqttLink, MqttSettings
from hub.service.broker import PrivateBroker
from tests.conftest import database_url
from tests.helpers import HubProcess, StoredRows, event_payload, wait_for, write_config

DEVICES = 10
PER_DEVICE = 2_000
TOTAL = DEVICES * PER_DEVICE
BOOT = 3
RATE = 2_000.0  # events/s offered by the whole fleet: slow enough to span the outages


class SimulatedDevice:
    """One MQTT device with an outbox: an event leaves it only when the broker PUBACKs it.

    paho resends a publish that was in flight when the connection dropped, but a publish
    made while the broker is down returns ``MQTT_ERR_NO_CONN`` and its
    ``wait_for_publish()`` raises at once, although paho still sends it after the
    reconnect.  A real device (the agent's store-and-forward outbox) does not rely on
    either: it keeps every event until its PUBACK and republishes what is left.  So does
    this one, tracking PUBACKs by packet id; a second copy is harmless by the protocol's
    identity rule.
    """

    boot = BOOT

    def __init__(self, port: int, device_id: str):
        self.device_id = device_id
        self.topic = event_topic(device_id)
        self._lock = threading.Lock()
        self._seq_of_mid: dict[int, int] = {}
        self._acked_mids: set[int] = set()
        self.unacked: set[int] = set()
        self.sent: set[int] = set()
        self.offline_publishes = 0  # publishes paho accepted while disconnected
        self.link = MqttLink(
            MqttSettings(port=port),
            f"dev-{device_id}-{uuid.uuid4().hex[:6]}",
            on_published=self._on_puback,
            persistent=False,
        )
        self.link.start()
        assert self.link.wait_connected(10), f"device {device_id} could not connect"

    def _on_puback(self, mid: int) -> None:
        with self._lock:
            seq = self._seq_of_mid.pop(mid, None)
            if seq is None:  # the PUBACK beat publish() returning its mid
                self._acked_mids.add(mid)
            else:
                self.unacked.discard(seq)

    def publish(self, seq: int) -> None:
        info = self.link.publish(self.topic, event_payload(BOOT, seq, ts=round(time.time(), 6)))
        with self._lock:
            if info.rc != 0:
                self.offline_publishes += 1
            self.sent.add(seq)
            if info.mid in self._acked_mids:
                self._acked_mids.discard(info.mid)
                self.unacked.discard(seq)
            else:
                self._seq_of_mid[info.mid] = seq
                self.unacked.add(seq)

    def pending(self) -> list[int]:
        with self._lock:
            return sorted(self.unacked)

    def close(self) -> None:
        self.link.stop()


class PacedFleet(ABC):
    """``DEVICES`` members, each producing ``PER_DEVICE`` events on its own thread, paced
    so the fleet offers ``rate`` events/s in all.  Subclasses say how a member is named,
    how it produces event ``seq``, and how many events the fleet has produced."""

    def __init__(self, members: list[Any], rate: float):
        self.members = members
        self._interval = len(members) / rate
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(m,), name=f"emit-{self.name(m)}", daemon=True)
            for m in members
        ]

    @abstractmethod
    def name(self, member: Any) -> str:
        """The name of a member (its thread is named after it)."""

    @abstractmethod
    def emit(self, member: Any, seq: int) -> None:
        """Produce event ``seq`` of ``member``."""

    @property
    @abstractmethod
    def published(self) -> int:
        """How many events the fleet has produced so far."""

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def _run(self, member: Any) -> None:
        started = time.monotonic()
        for seq in range(PER_DEVICE):
            # a rate limiter, not a wait for something: devices produce at their own pace
            delay = started + seq * self._interval - time.monotonic()
            if self._stop.wait(max(delay, 0)):
                return
            self.emit(member, seq)

    def expected(self) -> set[tuple[str, int, int]]:
        return {(self.name(m), m.boot, s) for m in self.members for s in range(PER_DEVICE)}

    def join_emitters(self) -> None:
        """Wait until every member has produced all its events."""
        for thread in self._threads:
            thread.join(120)
            assert not thread.is_alive(), f"{thread.name} did not finish"
        assert self.published == TOTAL

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            if thread.ident is not None:
                thread.join(10)
        for member in self.members:
            member.close()


class Fleet(PacedFleet):
    """``DEVICES`` simulated devices ``dur-00``… publishing at ``rate`` events/s in all."""

    def __init__(self, port: int, rate: float = RATE):
        self.devices = [SimulatedDevice(port, f"dur-{i:02d}") for i in range(DEVICES)]
        super().__init__(self.devices, rate)

    def name(self, member: SimulatedDevice) -> str:
        return member.device_id

    def emit(self, member: SimulatedDevice, seq: int) -> None:
        member.publish(seq)

    @property
    def published(self) -> int:
        return sum(len(d.sent) for d in self.devices)

    def finish(self, rounds: int = 4) -> None:
        """Wait until every event is published and PUBACKed, republishing leftovers."""
        self.join_emitters()
        for _ in range(rounds):
            try:
                wait_for(
                    lambda: not any(d.pending() for d in self.devices),
                    timeout=15,
                    what="PUBACKs for every event",
                )
                return
            except AssertionError:
                for device in self.devices:
                    wait_for(device.link.wait_connected, timeout=30, what="device reconnect")
                    for seq in device.pending():
                        device.publish(seq)
        raise AssertionError(f"events never PUBACKed: {[d.pending()[:5] for d in self.devices]}")


class AgentFleet(PacedFleet):
    """``DEVICES`` real agents ``ag-00``… (no drivers, mock pins) emitting power events;
    what they do with them is the agent's code: the SQLite outbox, the PUBACK
    bookkeeping, the resends after a reconnect."""

    def __init__(self, tmp_path: Path, port: int, rate: float = RATE):
        self.agents = [
            Agent(
                parse_agent_config(
                    {
                        "id": f"ag-{i:02d}",
                        "state_dir": str(tmp_path / f"agent-{i:02d}"),
                        "pin_factory": "mock",
                        "mqtt": {"host": "127.0.0.1", "port": port},
                    }
                )
            )
            for i in range(DEVICES)
        ]
        super().__init__(self.agents, rate)
        for agent in self.agents:
            agent.start()
        for agent in self.agents:
            wait_for(lambda a=agent: a.can_send, timeout=15, what=f"{agent.cfg.id} connected")

    def name(self, member: Agent) -> str:
        return member.cfg.id

    def emit(self, member: Agent, seq: int) -> None:
        member.emit("power", w=float(seq % 1000))

    @property
    def published(self) -> int:
        """Events emitted (each in its agent's outbox from then on)."""
        return sum(a.counters["events"] for a in self.agents)

    def finish(self) -> None:
        """Wait until every event is emitted and the broker has PUBACKed it: the agents
        resend on their own, nothing here publishes."""
        self.join_emitters()
        wait_for(
            lambda: all(a.outbox_size == 0 for a in self.agents),
            timeout=90,
            what="PUBACKs for every event",
        )


class Shop:
    """A private broker, a hub process on the pass's database, and a fleet, cleaned up
    after (``with Shop(tmp_path) as shop:``)."""

    def __init__(self, tmp_path: Path):
        self.broker = PrivateBroker(tmp_path / "mosquitto").start()
        db_url = database_url(tmp_path / "data")
        self.rows = StoredRows(db_url)
        config = write_config(
            tmp_path / "peershop.toml",
            data_dir=tmp_path / "data",
            port=self.broker.port,
            db_url=db_url,
            client_id=f"peershop-hub-{uuid.uuid4().hex[:8]}",
        )
        self.hub = HubProcess(config, tmp_path / "hub.log")
        self.fleet: Fleet | AgentFleet | None = None

    def __enter__(self) -> Shop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start_hub(self) -> None:
        self.hub.start(self.broker.port)

    def start_fleet(self, rate: float = RATE) -> Fleet:
        self.fleet = fleet = Fleet(self.broker.port, rate)
        fleet.start()
        return fleet

    def _query(self, sql: str) -> list[tuple]:
        return self.rows.query(sql)  # the hub has made the tables before its birth

    def stored(self) -> int:
        rows = self._query("SELECT count(*) FROM events")
        return rows[0][0] if rows else 0

    def identities(self) -> list[tuple[str, int, int]]:
        return [tuple(r) for r in self._query("SELECT device_id, boot, seq FROM events")]

    def dead_letters(self) -> int:
        return self._query("SELECT count(*) FROM dead_letters")[0][0]

    def wait_stored(self, at_least: int, timeout: float = 90) -> int:
        return wait_for(
            lambda: (n := self.stored()) >= at_least and n,
            timeout=timeout,
            what=f"{at_least} stored events (hub log: {self.hub.log})",
        )

    def assert_exactly_once(self) -> None:
        assert self.fleet is not None
        self.fleet.finish()
        self.wait_stored(TOTAL)
        rows = self.identities()
        assert len(rows) == TOTAL, f"{len(rows) - TOTAL:+d} events against what was sent"
        assert set(rows) == self.fleet.expected()
        assert self.dead_letters() == 0

    def close(self) -> None:
        try:
            if self.fleet is not None:
                self.fleet.close()
            proc = self.hub.proc
            if proc is not None and proc.poll() is None:
                self.hub.terminate()
        finally:
            self.rows.close()
            self.broker.stop()
