"""Simulated devices for the demo and for developing without a shop.

Every simulated peershop device runs the *real* code: :class:`AgentStation` is a
:class:`~devices.agent.Agent` on gpiozero's MockFactory whose RDM6300 reads ``loop://``
(a simulated card is an RDM6300 frame written into that port) and whose current sensor
samples a simulated mains wave; :class:`SerialNodeSim` is a
:class:`~firmware_bridge.firmware.protocol.Node` on a pty pair with the
:class:`~firmware_bridge.bridge.Bridge` on the other end, in-process.  Off-the-shelf plugs
publish what Tasmota and Shelly firmware publish (docs/device-protocol.md, third-party devices).

:class:`ShopSimulation` drives them with members' behaviour (arriving at the door, using
tools with idle gaps, a task at the desk, one forgetting to sign out), scheduled in
simulated time: ``speed=60`` makes a simulated minute last a real second.  The hub is not
simulated and runs in real time.
"""

from __future__ import annotations

import abc
import json
import logging
import os
import random
import select
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from devices.agent import Agent
from devices.agent_config import parse_agent_config
from devices.rdm6300 import rdm6300_frame
from firmware_bridge.bridge import Bridge
from firmware_bridge.firmware.protocol import MemoryStore, Node
from hub.contract.mqtt import MqttLink, MqttSettings, Received, Will

log = logging.getLogger(__name__)


class SimClock:
    """Simulated time running ``speed`` times faster than the real clock."""

    def __init__(self, speed: float, stop: threading.Event | None = None):
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self.stop = stop or threading.Event()

    def sleep(self, sim_seconds: float) -> bool:
        """Wait ``sim_seconds`` of simulated time; ``False`` if the simulation stopped."""
        return not self.stop.wait(max(sim_seconds, 0) / self.speed)


# --- peershop devices -----------------------------------------------------------------------


class AgentStation:
    """A tool station or reader driven by the real agent on mock pins and ``loop://``.

    >>> st = AgentStation("drill-node", state_dir, 1883, interlock=True)  # doctest: +SKIP
    >>> st.tap("5E2A9C11"); st.set_watts(350)                             # doctest: +SKIP
    """

    def __init__(
        self,
        device_id: str,
        state_dir: Path,
        mqtt_port: int,
        *,
        mqtt_host: str = "127.0.0.1",
        interlock: bool = False,
        current_sensor: bool = False,
        buttons: dict[str, int] | None = None,
        policy: str = "tap",
        public_key: str | None = None,
    ):
        raw: dict[str, Any] = {
            "id": device_id,
            "state_dir": str(state_dir / device_id),
            "pin_factory": "mock",
            "policy": policy,
            "mqtt": {"host": mqtt_host, "port": mqtt_port},
            "reader": {"type": "rdm6300", "port": "loop://", "include_version": False},
            "indicator": {"led": 22, "buzzer": 24},
        }
        if public_key:
            raw["hub"] = {"public_key": public_key}
        if interlock:
            raw["interlock"] = {"pin": 5, "active_high": False, "no_cut_while_busy": True}
        if current_sensor:
            raw["current_sensor"] = {"running_w": 100, "idle_w": 40, "report_every": 5}
        if buttons:
            raw["buttons"] = buttons
        self.agent = Agent(parse_agent_config(raw))
        self._lock = threading.Lock()

    @property
    def device_id(self) -> str:
        return self.agent.cfg.id

    def start(self) -> AgentStation:
        self.agent.start()
        return self

    def close(self) -> None:
        self.agent.close()

    @property
    def granted(self) -> bool:
        return self.agent.interlock is not None and self.agent.interlock.is_enabled

    def tap(self, uid: str) -> None:
        """A card held to the reader for a moment: one RDM6300 frame."""
        with self._lock:
            self.agent.reader.serial.write(rdm6300_frame(bytes.fromhex("00" + uid)))

    def hold(self, uid: str, clock: SimClock, sim_seconds: float) -> None:
        """A card left on the reader: the RDM6300 repeats its frame while the tag is there."""
        deadline = time.monotonic() + sim_seconds / clock.speed
        while time.monotonic() < deadline and not clock.stop.is_set():
            self.tap(uid)
            clock.stop.wait(0.2)

    def press(self, name: str) -> None:
        """Press and release a station button (pulled up: pressed is low)."""
        pin = self.agent.pin_factory.pin(self.agent.cfg.buttons[name])
        pin.drive_low()
        pin.drive_high()

    def set_watts(self, watts: float) -> None:
        if self.agent.mains is not None:
            self.agent.mains.watts = watts


class SerialNodeSim:
    """A microcontroller tool node (``protocol.Node``) behind ``peershop bridge`` on a pty."""

    def __init__(self, node_id: str, mqtt_port: int, *, mqtt_host: str = "127.0.0.1"):
        self.master, self._slave = os.openpty()
        path = os.ttyname(self._slave)
        self.granted = False
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.node = Node(
            node_id,
            "1.0.0",
            self._write,
            MemoryStore(),
            lambda: int(time.monotonic() * 1000),
            on_command=self._on_command,
            kind=["reader", "interlock", "power"],
            wall_clock=time.time,  # a node whose clock is set: it says ts
        )
        self.bridge = Bridge(MqttSettings(host=mqtt_host, port=mqtt_port), [path], node_id=node_id)
        self._thread = threading.Thread(target=self._run, name=f"node-{node_id}", daemon=True)

    def _write(self, frame: bytes) -> None:
        try:
            os.write(self.master, frame)
        except OSError:
            pass  # closing

    def _on_command(self, command: dict[str, Any]) -> None:
        action = command.get("action")
        if action == "grant":
            self.granted = True
        elif action in ("release", "lock"):
            self.granted = False

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.05)
            with self._lock:
                if ready:
                    try:
                        self.node.feed(os.read(self.master, 4096))
                    except OSError:
                        return
                self.node.poll()

    def start(self) -> SerialNodeSim:
        self.bridge.start()
        with self._lock:
            self.node.start()
        self._thread.start()
        return self

    def send(self, event_type: str, **fields: Any) -> None:
        with self._lock:
            self.node.send_event(event_type, **fields)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.bridge.stop()
        os.close(self.master)
        os.close(self._slave)


# --- off-the-shelf plugs ---------------------------------------------------------------------


class _Plug(abc.ABC):
    def __init__(self, client_id: str, port: int, host: str, will: Will, subscriptions):
        self.watts = 0.0
        self.on = True
        self.wh_total = random.uniform(1000, 50000)
        self._last = time.monotonic()
        self.link = MqttLink(
            MqttSettings(host=host, port=port),
            f"{client_id}-{uuid.uuid4().hex[:6]}",
            on_message=self._on_message,
            on_connected=lambda _sp: self._online(),
            subscriptions=subscriptions,
            will=will,
            persistent=False,
        )

    def _advance(self) -> None:
        now = time.monotonic()
        self.wh_total += (self.watts if self.on else 0.0) * (now - self._last) / 3600
        self._last = now

    def start(self):
        self.link.start()
        return self

    def close(self) -> None:
        self.link.stop()

    @abc.abstractmethod
    def _online(self) -> None:
        """Announce the plug as its firmware does on connect."""

    @abc.abstractmethod
    def _on_message(self, msg: Received) -> None:
        """Obey a switching command in the plug's own format."""


class TasmotaPlug(_Plug):
    """A Tasmota-flashed plug as it comes: ``tele/{topic}/SENSOR`` (cumulative
    ``ENERGY.Total`` in kWh) every ``tele_period`` seconds, Tasmota's ``TelePeriod``
    (300 from the factory; the docs tell operators to set 10), and ``stat/{topic}/POWER``
    when its relay is switched.  Call :meth:`tick` often; it reports when the period is up.
    """

    def __init__(
        self, topic: str, port: int, host: str = "127.0.0.1", *, tele_period: float = 300.0
    ):
        self.topic = topic
        self.tele_period = tele_period
        self._reported: float | None = None
        super().__init__(
            f"tasmota-{topic}",
            port,
            host,
            Will(f"tele/{topic}/LWT", b"Offline"),
            [f"cmnd/{topic}/POWER", f"cmnd/{topic}/STATUS"],
        )

    def _online(self) -> None:
        self.link.publish(f"tele/{self.topic}/LWT", b"Online", qos=1, retain=True)

    def _on_message(self, msg: Received) -> None:
        if msg.topic.endswith("/STATUS"):
            if msg.payload.strip() == b"10":  # Status 10: the sensors, now
                body = json.dumps({"StatusSNS": self._sensor()}).encode()
                self.link.publish(f"stat/{self.topic}/STATUS10", body, qos=1)
            return
        self._advance()
        self.on = msg.payload.strip().upper() in (b"ON", b"1", b"TRUE")
        state = b"ON" if self.on else b"OFF"
        self.link.publish(f"stat/{self.topic}/RESULT", b'{"POWER":"%s"}' % state, qos=1)
        self.link.publish(f"stat/{self.topic}/POWER", state, qos=1)

    def tick(self) -> None:
        """Report if ``tele_period`` has passed since the last report (real time)."""
        now = time.monotonic()
        if self._reported is None or now - self._reported >= self.tele_period:
            self._reported = now
            self.report()

    def _sensor(self) -> dict[str, Any]:
        self._advance()
        w = self.watts if self.on else 0.0
        return {
            "Time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
            "ENERGY": {"Total": round(self.wh_total / 1000, 5), "Power": round(w), "Voltage": 231},
        }

    def report(self) -> None:
        body = json.dumps(self._sensor()).encode()
        self.link.publish(f"tele/{self.topic}/SENSOR", body, qos=1)


class ShellyPlug(_Plug):
    """A Shelly Gen2+ plug with factory MQTT settings: ``NotifyStatus`` on
    ``{prefix}/events/rpc`` with what changed only (``apower`` when the load moves,
    ``aenergy`` once a minute, ``output`` when the relay flips).  ``status_ntf`` is
    Shelly's "Generic status update over MQTT" (off from the factory): the whole status
    on ``{prefix}/status/switch:0`` at every report as well.  Call :meth:`tick` often."""

    def __init__(
        self, prefix: str, port: int, host: str = "127.0.0.1", *, status_ntf: bool = False
    ):
        self.prefix = prefix
        self.status_ntf = status_ntf
        self._apower: float | None = None  # last apower notified
        self._minute: int | None = None  # the minute of the last aenergy notified
        super().__init__(
            f"shelly-{prefix}",
            port,
            host,
            Will(f"{prefix}/online", b"false"),
            [f"{prefix}/rpc"],
        )

    def _online(self) -> None:
        self.link.publish(f"{self.prefix}/online", b"true", qos=1, retain=True)

    def _on_message(self, msg: Received) -> None:
        try:
            req = json.loads(msg.payload)
            if req.get("method") == "Switch.Set":
                self._advance()
                self.on = bool(req["params"]["on"])
                self._notify({"id": 0, "output": self.on, "source": "MQTT"})
            elif req.get("method") == "Switch.GetStatus":
                reply = {"id": req["id"], "src": self.prefix, "result": self._status()}
                self.link.publish(f"{req['src']}/rpc", json.dumps(reply).encode(), qos=1)
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("shelly %s: bad rpc %r", self.prefix, msg.payload[:100])

    def _notify(self, switch: dict[str, Any]) -> None:
        frame = {
            "src": self.prefix,
            "dst": f"{self.prefix}/events",
            "method": "NotifyStatus",
            "params": {"ts": round(time.time(), 2), "switch:0": switch},
        }
        self.link.publish(f"{self.prefix}/events/rpc", json.dumps(frame).encode(), qos=1)

    def _aenergy(self) -> dict[str, Any]:
        minute = int(time.time()) // 60 * 60
        return {"by_minute": [0.0, 0.0, 0.0], "minute_ts": minute, "total": round(self.wh_total, 3)}

    def tick(self) -> None:
        """Notify what changed: the power when it moved, the counter at each new minute."""
        self._advance()
        w = round(self.watts if self.on else 0.0, 1)
        if self._apower is None or abs(w - self._apower) >= 0.5:
            self._apower = w
            self._notify({"id": 0, "apower": w, "current": round(w / 231.2, 3)})
        minute = int(time.time()) // 60
        if self._minute != minute:
            self._minute = minute
            self._notify({"id": 0, "aenergy": self._aenergy()})
        if self.status_ntf:
            self.report()

    def report(self) -> None:
        """The whole status on ``{prefix}/status/switch:0``, as ``Switch.GetStatus``."""
        body = json.dumps(self._status()).encode()
        self.link.publish(f"{self.prefix}/status/switch:0", body, qos=1)

    def _status(self) -> dict[str, Any]:
        self._advance()
        w = self.watts if self.on else 0.0
        return {
            "id": 0,
            "source": "init",
            "output": self.on,
            "apower": round(w, 1),
            "voltage": 231.2,
            "aenergy": self._aenergy(),
        }


# --- the shop's members -------------------------------------------------------------------------


@dataclass(frozen=True)
class SimMember:
    handle: str
    uid: str  # a 4-byte badge, as a 125 kHz reader reports it


# Members of examples/shop.yaml with 4-byte (125 kHz) badges, and what they are trained on.
MEMBERS = {
    "bob": SimMember("bob", "5E2A9C11"),
    "dana": SimMember("dana", "8A11F0C3"),
    "farah": SimMember("farah", "1B7E44D2"),
    "gus": SimMember("gus", "C0FFEE42"),
    "ivan": SimMember("ivan", "73AB0F19"),
    "kai": SimMember("kai", "2D9C6E80"),
    "mo": SimMember("mo", "9F3B7C21"),
}
LATHE_UIDS = {"hana": "04E5F60718293A", "emeka": "04C3D2E1F00A17", "ivan": "73AB0F19"}
UNKNOWN_CARD = "DEADBEEF"


class ShopSimulation:
    """The demo shop of examples/shop.yaml, alive: every device and its members.

    Devices: ``door-reader`` (sign in/out), ``desk-reader`` (task station with buttons),
    ``drill-node``, ``laser-node`` and ``saw-node`` (agents with relay and current sensor),
    ``lathe-node`` (serial node behind the bridge), Tasmota plugs ``laser_extractor`` and
    ``printer2_plug``, Shelly plugs ``shellyplugs-printer1`` and ``shellyplus1pm-compressor``.
    """

    def __init__(
        self,
        mqtt_port: int,
        state_dir: Path,
        *,
        speed: float = 60.0,
        mqtt_host: str = "127.0.0.1",
        seed: int | None = None,
        public_key: str | None = None,
        on_note: Callable[[str], None] | None = None,
    ):
        self.clock = SimClock(speed)
        self.random = random.Random(seed)
        self.note = on_note or (lambda text: log.info("sim: %s", text))
        self._threads: list[threading.Thread] = []
        self._devices: list[Any] = []
        port, host = mqtt_port, mqtt_host
        key = {"public_key": public_key, "mqtt_host": host}
        try:
            self.door = self._add(AgentStation("door-reader", state_dir, port, **key))
            self.desk = self._add(
                AgentStation(
                    "desk-reader",
                    state_dir,
                    port,
                    **key,
                    buttons={"task:empty-dust": 6, "task:sweep-floor": 13},
                )
            )
            tool = {"interlock": True, "current_sensor": True, **key}
            self.drill = self._add(AgentStation("drill-node", state_dir, port, **tool))
            self.laser = self._add(AgentStation("laser-node", state_dir, port, **tool))
            self.saw = self._add(
                AgentStation("saw-node", state_dir, port, policy="card_present", **tool)
            )
            self.lathe = self._add(SerialNodeSim("lathe-node", port, mqtt_host=host))
            # the Tasmotas set up as docs/plugs.md says (TelePeriod 10); the Shellys as
            # they come from the factory
            tasmota = {"tele_period": 10.0}
            self.extractor = self._add(TasmotaPlug("laser_extractor", port, host, **tasmota))
            self.printer2 = self._add(TasmotaPlug("printer2_plug", port, host, **tasmota))
            self.printer1 = self._add(ShellyPlug("shellyplugs-printer1", port, host))
            self.compressor = self._add(ShellyPlug("shellyplus1pm-compressor", port, host))
        except BaseException:
            self.close()
            raise
        self.signed_in: set[str] = set()
        self._door_lock = threading.Lock()

    def _add(self, device: Any) -> Any:
        self._devices.append(device)
        return device

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> ShopSimulation:
        for device in self._devices:
            device.start()
        for name, target in (
            ("plugs", self._plugs),
            ("drill", self._drill_users),
            ("laser", self._laser_users),
            ("saw", self._saw_users),
            ("lathe", self._lathe_users),
            ("printers", self._printers),
            ("desk", self._desk),
            ("door", self._visitors),
        ):
            thread = threading.Thread(target=self._guard(target), name=f"sim-{name}", daemon=True)
            self._threads.append(thread)
            thread.start()
        return self

    def close(self) -> None:
        self.clock.stop.set()
        for thread in self._threads:
            thread.join(10)
        for device in reversed(self._devices):
            try:
                device.close()
            except Exception:
                log.exception("closing %r failed", device)
        self._devices.clear()

    def _guard(self, fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except Exception:
                if not self.clock.stop.is_set():
                    log.exception("simulation %s failed", fn.__name__)

        return run

    # -- behaviour (simulated time) -------------------------------------------------------------

    def _sign_in(self, m: SimMember) -> None:
        with self._door_lock:
            if m.handle in self.signed_in:
                return
            self.signed_in.add(m.handle)
        self.door.tap(m.uid)
        self.note(f"{m.handle} signs in at the door")
        self.clock.sleep(30)

    def _sign_out(self, m: SimMember) -> None:
        with self._door_lock:
            if m.handle not in self.signed_in:
                return
            self.signed_in.discard(m.handle)
        self.door.tap(m.uid)
        self.note(f"{m.handle} signs out")

    def _work(self, station: AgentStation, busy_w: float, minutes: float) -> None:
        """Power with idle gaps: cutting, setting up, cutting again."""
        end = minutes * 60
        spent = 0.0
        while spent < end and not self.clock.stop.is_set():
            run = self.random.uniform(3, 12) * 60
            station.set_watts(busy_w * self.random.uniform(0.85, 1.1))
            self.clock.sleep(run)
            gap = self.random.uniform(1, 4) * 60
            station.set_watts(self.random.uniform(10, 30))  # idle: fans, standby
            self.clock.sleep(gap)
            spent += run + gap
        station.set_watts(0)

    def _use_tap_tool(self, station: AgentStation, m: SimMember, busy_w: float, what: str) -> None:
        self._sign_in(m)
        station.tap(m.uid)
        if not self._wait_granted(station):
            self.note(f"{m.handle} was not let onto the {what}")
            return
        self.note(f"{m.handle} uses the {what}")
        self._work(station, busy_w, self.random.uniform(15, 45))
        station.tap(m.uid)  # tap off
        self.clock.sleep(60)

    def _wait_granted(self, station: AgentStation) -> bool:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if station.granted:
                return True
            if self.clock.stop.wait(0.05):
                return False
        return False

    def _drill_users(self) -> None:
        people = [MEMBERS[h] for h in ("bob", "farah", "mo", "ivan")]
        while not self.clock.stop.is_set():
            m = self.random.choice(people)
            self._use_tap_tool(self.drill, m, 450, "drill press")
            self.clock.sleep(self.random.uniform(5, 20) * 60)

    def _laser_users(self) -> None:
        self.clock.sleep(2 * 60)
        people = [MEMBERS["dana"], MEMBERS["gus"], MEMBERS["bob"]]  # bob is not inducted
        while not self.clock.stop.is_set():
            m = self.random.choice(people)
            self.extractor.watts = 180
            self._use_tap_tool(self.laser, m, 900, "laser cutter")
            self.extractor.watts = 0
            self.clock.sleep(self.random.uniform(10, 30) * 60)

    def _saw_users(self) -> None:
        self.clock.sleep(4 * 60)
        while not self.clock.stop.is_set():
            m = self.random.choice([MEMBERS["kai"], MEMBERS["mo"]])  # mo is not inducted
            self._sign_in(m)
            cut = self.random.uniform(3, 8) * 60
            self.note(f"{m.handle} puts a card on the table saw's reader")
            worker = threading.Thread(target=self.saw.hold, args=(m.uid, self.clock, cut))
            worker.start()
            if self._wait_granted(self.saw):
                self.saw.set_watts(1500)
            worker.join()
            self.saw.set_watts(0)
            self.clock.sleep(self.random.uniform(15, 40) * 60)

    def _lathe_users(self) -> None:
        self.clock.sleep(60)
        while not self.clock.stop.is_set():
            handle = self.random.choice(list(LATHE_UIDS))
            uid = LATHE_UIDS[handle]
            self.lathe.send("badge", uid=uid)
            self.note(f"{handle} puts a card on the lathe")
            minutes = self.random.uniform(10, 30)
            for _ in range(int(minutes)):
                w = self.random.uniform(600, 900) if self.lathe.granted else 0.0
                self.lathe.send("power", w=round(w, 1))
                if not self.clock.sleep(60):
                    return
            self.lathe.send("badge_removed", uid=uid)
            self.lathe.send("power", w=0.0)
            self.clock.sleep(self.random.uniform(20, 60) * 60)

    def _printers(self) -> None:
        # A long print on the Prusa (Shelly), short ones on the Ender (Tasmota), and the
        # compressor kicking in now and then.
        self.printer1.watts = 120
        while not self.clock.stop.is_set():
            self.printer2.watts = self.random.choice([0, 0, 95, 110])
            self.compressor.watts = self.random.choice([0, 0, 0, 1100])
            if not self.clock.sleep(5 * 60):
                return

    def _plugs(self) -> None:
        while not self.clock.stop.wait(1.0):  # plugs report in real time, like telemetry
            for plug in (self.extractor, self.printer2, self.printer1, self.compressor):
                plug.tick()

    def _desk(self) -> None:
        self.clock.sleep(3 * 60)
        while not self.clock.stop.is_set():
            m = MEMBERS[self.random.choice(["farah", "ivan", "bob"])]
            self._sign_in(m)
            task = self.random.choice(list(self.desk.agent.cfg.buttons))
            self.desk.press(task)
            self.desk.tap(m.uid)
            self.note(f"{m.handle} starts '{task.removeprefix('task:')}' at the desk")
            self.clock.sleep(self.random.uniform(20, 40) * 60)
            self.desk.tap(m.uid)
            self.note(f"{m.handle} is done at the desk")
            self.clock.sleep(self.random.uniform(30, 90) * 60)

    def _visitors(self) -> None:
        # Arrivals first, so the floor fills; one forgets to sign out (the hub's automatic
        # sign-out at presence.auto_signout ends that), one unknown card tries the door.
        for handle in ("bob", "kai", "dana"):
            self._sign_in(MEMBERS[handle])
        self.note("mo forgets to sign out later")
        self._sign_in(MEMBERS["mo"])
        self.door.tap(UNKNOWN_CARD)
        self.note("an unknown card tries the door")
        while self.clock.sleep(self.random.uniform(20, 60) * 60):
            m = MEMBERS[self.random.choice(["bob", "kai", "dana", "gus", "farah"])]
            if m.handle in self.signed_in:
                self._sign_out(m)
            else:
                self._sign_in(m)
