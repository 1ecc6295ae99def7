"""``peershop agent``: a Raspberry Pi at a tool, speaking docs/device-protocol.md like any node.

The agent wires the drivers of ``devices/`` (reader, interlock, indicator, current sensor
or running input, buttons) to the broker:

* **Status.** A retained birth ``{"state":"online","boot":B,"fw":…,"kind":[…],"ts":…}`` on
  every connect, the matching last will, and ``offline`` on a clean stop.  ``boot`` is
  counted in the state folder at every start.  ``ts`` (the Pi's clock) is sent while the
  hub is online, and the birth goes again when the hub comes (back) online, ahead of the
  buffered events: the hub learns the clock's offset from it and corrects their times.
* **Store-and-forward.** Every event is committed to a local SQLite outbox
  (:mod:`devices.outbox`) before it is published, and marked acknowledged on the broker's
  PUBACK.  While the broker is unreachable or ``peershop/hub/status`` says ``offline``,
  events stay in the outbox; they are sent once the hub is back (or at the next start),
  marked ``"replay": true``.  A power cut or SIGKILL loses nothing.  After every
  reconnect the events acknowledged in the last ``resend_window_s`` are sent again too: a
  broker killed outright loses what it PUBACKed since its last autosave.
* **Decisions.** A badge is sent to the hub and the agent waits up to ``decide_timeout``
  for the ``cmd`` reply with ``re`` = its ``seq``.  With the hub offline, the broker gone
  or no reply in time, it decides alone from the last verified, signed allow-list
  (``peershop/dev/{id}/allowlist``): a valid list with the uid grants; an invalid, expired
  or missing list denies everyone except the configured ``maintainers``.  A local grant
  switches the interlock exactly like the hub's.  A reply that comes after the agent has
  decided is ignored, so the member at the tool never sees two answers to one tap.
* **Commands.** ``grant``/``deny``/``release`` (as replies), ``release`` (end now; waits
  for an idle tool with ``no_cut_while_busy``), ``lock``/``unlock``, ``rebirth``.  A
  ``grant`` counts only as the reply to a badge still waiting for one, with a ``max_s``,
  and never while locked (:meth:`Agent.handle_command`).

Run it from a TOML file (docs/agent.md)::

    peershop agent -c /etc/peershop/agent.toml

or in-process (the simulators do, with gpiozero's MockFactory and ``loop://`` ports)::

    agent = Agent(parse_agent_config({...}), pin_factory=MockFactory())
    agent.start(); ...; agent.close()
"""

from __future__ import annotations

import json
import logging
import math
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import click

from devices.agent_config import AgentConfig, load_agent_config
from devices.outbox import AgentStore
from hub import systemd
from hub.contract.allowlist import uid_allowed, verify_allowlist
from hub.contract.messages import (
    HUB_STATUS_TOPIC,
    allowlist_topic,
    cmd_topic,
    event_topic,
    format_timestamp,
    normalize_uid,
    status_topic,
)
from hub.contract.mqtt import MqttLink, Received, Will
from hub.errors import ConfigError, ContractError

log = logging.getLogger(__name__)

OFFLINE_PUBACK_S = 2.0  # how long a stop waits for the broker to take the offline status
SCAN_S = 1.0  # the outbox thread looks at the store at least this often
PRUNE_S = 1.0  # acknowledged rows past the resend window are deleted this often, in one go


def _compact(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _now_iso() -> str:
    return format_timestamp(datetime.now(UTC))


class MockMains:
    """The voltage a current transformer would give for :attr:`watts` of load.

    With ``pin_factory = "mock"`` there is no MCP3008 to read; the agent's current sensor
    samples this instead, and a simulator sets :attr:`watts` (a tool drawing power).
    """

    def __init__(self, amps_per_volt: float, mains_voltage: float, mains_hz: float):
        self.watts = 0.0
        self._scale = amps_per_volt * mains_voltage
        self._hz = mains_hz

    def __call__(self) -> float:
        vrms = self.watts / self._scale
        return 1.65 + vrms * math.sqrt(2) * math.sin(2 * math.pi * self._hz * time.monotonic())


class Agent:
    """The drivers of one tool station, speaking docs/device-protocol.md through the broker.

    :param cfg: the checked configuration (:func:`~devices.agent_config.load_agent_config`).
    :param pin_factory: a gpiozero pin factory; by default the one ``cfg.pin_factory``
        names (``"mock"`` makes a ``MockFactory``).
    :param sample: replaces the MCP3008 of the current sensor (see :class:`MockMains`).
    """

    def __init__(
        self,
        cfg: AgentConfig,
        *,
        pin_factory: Any = None,
        sample: Callable[[], float] | None = None,
    ):
        self.cfg = cfg
        self.counters = {
            "events": 0,
            "published": 0,
            "delivered": 0,
            "resent": 0,  # acknowledged events sent again after a reconnect
            "local_decisions": 0,
        }
        self.store = AgentStore(cfg.state_dir / "agent.db")
        self.boot = self.store.next_boot()
        self._seq = 0
        self._event_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._closables: list[Any] = []
        self._own_factory = None
        self.hub_online: bool | None = None  # None: no status seen yet
        self.locked = False
        self.holder: str | None = None  # uid granted at this tool, by hub or locally
        self._pending: dict[int, tuple[str, threading.Timer]] = {}  # badge seq -> uid, timer
        self._decision_lock = threading.RLock()
        self._max_timer: threading.Timer | None = None
        self.allowlist: dict[str, Any] | None = None
        self._load_allowlist()
        # outbox thread state (only that thread touches these; paho hands PUBACKs over
        # through a deque, taking no lock of ours: see hub/store/outbox.py on the deadlock)
        self._fresh: deque[tuple[int, int, str]] = deque()
        self._fresh_keys: set[tuple[int, int]] = set()
        self._acked: deque[int] = deque()
        self._inflight: dict[int, tuple[int, int]] = {}
        self._sent: set[tuple[int, int]] = set()
        self._rescan_all = False
        self._reconnected = False  # set by paho's thread on connect, read by the outbox's
        self._pruned_at = 0.0

        if pin_factory is None and cfg.pin_factory == "mock":
            from gpiozero.pins.mock import MockFactory  # only for mock pins (tests, no GPIO)

            pin_factory = self._own_factory = MockFactory()
        self.pin_factory = pin_factory
        self.mains: MockMains | None = None
        self._last_power = 0.0
        self._wh_total = 0.0
        self._last_reading: tuple[float, float] | None = None
        try:
            self._build_drivers(sample)
        except BaseException:
            self._close_drivers()
            self.store.close()
            raise

        self.link = MqttLink(
            cfg.mqtt,
            cfg.id,
            on_message=self._on_message,
            on_connected=self._on_connected,
            on_published=self._on_published,
            subscriptions=(cmd_topic(cfg.id), allowlist_topic(cfg.id), HUB_STATUS_TOPIC),
            will=Will(status_topic(cfg.id), self._status("offline")),
        )
        self._thread = threading.Thread(target=self._run, name=f"agent-{cfg.id}", daemon=True)

    # -- drivers ---------------------------------------------------------------------------

    def _build_drivers(self, sample: Callable[[], float] | None) -> None:
        cfg, factory = self.cfg, self.pin_factory
        self.reader = self.interlock = self.indicator = None
        self.current_sensor = self.running_input = None
        self.buttons: dict[str, Any] = {}
        if cfg.current_sensor:
            from devices.current_sensor import CurrentSensor  # hardware: loaded on use

            cs = cfg.current_sensor
            if sample is None and cfg.pin_factory == "mock":
                self.mains = MockMains(cs.amps_per_volt, cs.mains_voltage, cs.mains_hz)
                sample = self.mains
            self.current_sensor = CurrentSensor(
                cs.channel,
                amps_per_volt=cs.amps_per_volt,
                mains_voltage=cs.mains_voltage,
                mains_hz=cs.mains_hz,
                running_w=cs.running_w,
                idle_w=cs.idle_w,
                interval=cs.interval,
                burst=min(0.2, 4 / cs.mains_hz),
                sample=sample,
                **({} if sample is not None else {"pin_factory": factory}),
            )
            self._closables.append(self.current_sensor)
            self.current_sensor.when_reading = self._on_reading
            self.current_sensor.when_running = lambda: self._on_busy(True)
            self.current_sensor.when_idle = lambda: self._on_busy(False)
        if cfg.running_input:
            from devices.current_sensor import RunningInput  # hardware: loaded on use

            ri = cfg.running_input
            self.running_input = RunningInput(
                ri.pin, pull_up=ri.pull_up, settle_time=ri.settle_time, pin_factory=factory
            )
            self._closables.append(self.running_input)
            self.running_input.when_changed = self._on_running
        if cfg.interlock:
            from devices.interlock import Interlock  # hardware: loaded on use

            il = cfg.interlock
            self.interlock = Interlock(
                il.pin,
                active_high=il.active_high,
                no_cut_while_busy=self._is_busy if il.no_cut_while_busy else None,
                pin_factory=factory,
            )
            self._closables.append(self.interlock)
        if cfg.indicator:
            from devices.indicator import Indicator  # hardware: loaded on use

            ind = cfg.indicator
            self.indicator = Indicator(
                ind.led,
                rgb=ind.rgb,
                buzzer=ind.buzzer,
                active_high=ind.active_high,
                pin_factory=factory,
            )
            self._closables.append(self.indicator)
        if cfg.buttons:
            from gpiozero import Button  # hardware: loaded on use

            for name, pin in cfg.buttons.items():
                button = Button(pin, pin_factory=factory)
                self._closables.append(button)
                button.when_pressed = lambda name=name: self.emit("button", name=name)
                self.buttons[name] = button
        if cfg.reader:
            self.reader = self._make_reader()
            self._closables.append(self.reader)
            self.reader.when_badge = self._on_badge
            if cfg.reader.report_removed:
                self.reader.when_removed = self._on_removed

    def _make_reader(self) -> Any:
        r = self.cfg.reader
        assert r is not None
        hold = {} if r.hold_time is None else {"hold_time": r.hold_time}
        if r.type == "rdm6300":
            from devices.rdm6300 import Rdm6300Reader  # hardware: loaded on use

            return Rdm6300Reader(r.port, include_version=r.include_version, **hold)
        if r.type == "pn532":
            from devices.pn532 import Pn532Reader  # hardware: loaded on use

            return Pn532Reader(r.port, **hold)
        if r.type == "wiegand":
            from devices.wiegand import WiegandReader  # hardware: loaded on use

            return WiegandReader(r.d0, r.d1, pin_factory=self.pin_factory, **hold)
        from devices.keyboard_wedge import KeyboardWedgeReader  # hardware: loaded on use

        return KeyboardWedgeReader(r.device, fmt=r.fmt, **hold)

    def _is_busy(self) -> bool:
        if self.current_sensor is not None:
            return self.current_sensor.is_running
        if self.running_input is not None:
            return self.running_input.is_running
        return False

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Agent:
        """Connect (in the background) and start sending; returns at once."""
        log.info("agent %s boot %d: %d events waiting", self.cfg.id, self.boot, self.store.count())
        self._thread.start()
        self.link.start()
        return self

    def close(self) -> None:
        """Cut the tool's power, publish ``offline``, disconnect, release the hardware."""
        if self._stop.is_set():
            return
        self._stop.set()
        with self._decision_lock:
            for _uid, timer in self._pending.values():
                timer.cancel()
            self._pending.clear()
            if self._max_timer is not None:
                self._max_timer.cancel()
        if self.interlock is not None:
            self.interlock.disable(force=True)
            log.info("agent %s stopping: relay off", self.cfg.id)
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(5)
        try:
            if self.link.is_connected:
                info = self.link.publish(
                    status_topic(self.cfg.id), self._status("offline"), qos=1, retain=True
                )
                try:
                    info.wait_for_publish(OFFLINE_PUBACK_S)
                except (RuntimeError, ValueError):
                    log.warning("could not publish the offline status before disconnecting")
            self.link.stop()
        finally:
            self._close_drivers()
            self.store.close()

    def _close_drivers(self) -> None:
        for device in reversed(self._closables):
            try:
                device.close()
            except Exception:
                log.exception("closing %r failed", device)
        self._closables.clear()
        if self._own_factory is not None:
            self._own_factory.close()
            self._own_factory = None

    def __enter__(self) -> Agent:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def alive(self) -> bool:
        """The sending thread runs (what the systemd watchdog vouches for)."""
        return self._thread.is_alive()

    @property
    def can_send(self) -> bool:
        """Connected, subscribed, and the hub is not known to be offline."""
        return (
            self.link.is_connected and self.link.wait_subscribed(0) and self.hub_online is not False
        )

    # -- events ----------------------------------------------------------------------------

    def _status(self, state: str) -> bytes:
        body: dict[str, Any] = {"state": state, "boot": self.boot}
        if state == "online":
            body.update(fw=self.cfg.fw, kind=self.cfg.kind)
            if self.hub_online:
                # The clock only for a hub that hears the birth as it is sent: one that
                # waited at the broker for a hub that is down would add the wait to the
                # clock's error.  _on_hub_status sends it when the hub is back.
                body["ts"] = _now_iso()
        return _compact(body).encode()

    def emit(self, event_type: str, **fields: Any) -> int:
        """Store an event durably, then have it published; returns its ``seq``."""
        with self._event_lock:
            seq = self._seq
            self._seq += 1
            body = _compact(
                {"boot": self.boot, "seq": seq, "ts": _now_iso(), "type": event_type, **fields}
            )
            self.store.add(self.boot, seq, body)
            self._fresh_keys.add((self.boot, seq))
            self._fresh.append((self.boot, seq, body))
            self.counters["events"] += 1
        self._wake.set()
        return seq

    def _on_reading(self, watts: float) -> None:
        now = time.monotonic()
        if self._last_reading is not None:
            w0, t0 = self._last_reading
            self._wh_total += (w0 + watts) / 2 * (now - t0) / 3600
        self._last_reading = (watts, now)
        assert self.cfg.current_sensor is not None
        if now - self._last_power >= self.cfg.current_sensor.report_every:
            self._power(watts, now)

    def _power(self, watts: float, now: float | None = None) -> None:
        self._last_power = time.monotonic() if now is None else now
        self.emit("power", w=round(watts, 1), wh_total=round(self._wh_total, 3))

    def _on_busy(self, busy: bool) -> None:
        if self.current_sensor is not None and self.current_sensor.watts is not None:
            self._power(self.current_sensor.watts)
        if self.interlock is not None:
            self.interlock.busy_changed(busy)

    def _on_running(self, on: bool) -> None:
        self.emit("running", on=on)
        if self.interlock is not None:
            self.interlock.busy_changed(on)

    # -- decisions -------------------------------------------------------------------------

    def _on_badge(self, uid: str) -> None:
        seq = self.emit("badge", uid=uid)
        with self._decision_lock:
            if self.locked:
                self._show("locked")
                return
            if not self.can_send:
                self._decide_locally(uid, "hub unreachable")
                return
            timer = threading.Timer(self.cfg.decide_timeout, self._timed_out, (seq,))
            timer.daemon = True
            self._pending[seq] = (uid, timer)
            timer.start()

    def _on_removed(self, uid: str) -> None:
        self.emit("badge_removed", uid=uid)
        if self.cfg.policy == "card_present" and not self.can_send:
            with self._decision_lock:
                if self.holder == uid:
                    self._release("card removed (offline)")

    def _timed_out(self, seq: int) -> None:
        with self._decision_lock:
            entry = self._pending.pop(seq, None)
            if entry is None or self._stop.is_set():
                return
            self._decide_locally(entry[0], f"no reply within {self.cfg.decide_timeout:g} s")

    def _allowlist_valid(self) -> bool:
        if self.allowlist is None or self.cfg.public_key is None:
            return False
        check = verify_allowlist(
            self.allowlist, self.cfg.public_key, datetime.now(UTC), tool=self.cfg.tool
        )
        return check.status == "valid"

    def decide_offline(self, uid: str) -> bool:
        """Whether the allow-list (or the maintainer list) lets ``uid`` in right now."""
        uid = normalize_uid(uid)
        if uid in self.cfg.maintainers:
            return True
        return self._allowlist_valid() and uid_allowed(self.allowlist or {}, uid)

    def _decide_locally(self, uid: str, why: str) -> None:
        self.counters["local_decisions"] += 1
        if self.cfg.policy == "tap" and self.holder == uid and self._enabled():
            log.info("local decision for %s (%s): tap off", uid, why)
            self._release("tap off (local)")
            return
        if self.decide_offline(uid):
            log.info("local decision for %s (%s): grant", uid, why)
            self._grant(uid, None)
        else:
            log.info("local decision for %s (%s): deny", uid, why)
            self._show("deny")

    def _enabled(self) -> bool:
        return self.interlock is not None and self.interlock.is_enabled

    def _grant(self, uid: str | None, max_s: float | None) -> None:
        self.holder = uid
        if self.interlock is not None:
            self.interlock.enable()
        self._show("grant")
        if self._max_timer is not None:
            self._max_timer.cancel()
            self._max_timer = None
        if max_s:
            self._max_timer = threading.Timer(max_s, self._release, ("maximum duration",))
            self._max_timer.daemon = True
            self._max_timer.start()

    def _release(self, why: str) -> None:
        with self._decision_lock:
            self.holder = None
            if self._max_timer is not None and self._max_timer is not threading.current_thread():
                self._max_timer.cancel()
            self._max_timer = None
            if self.interlock is not None:
                self.interlock.disable()
            log.info("released: %s", why)
            if not self.locked:
                self._show("offline" if self.hub_online is False else "ready")

    def _show(self, state: str) -> None:
        if self.indicator is None:
            return
        try:
            getattr(self.indicator, state)()
        except Exception:
            log.exception("indicator %s failed", state)

    # -- MQTT callbacks (paho's network thread) --------------------------------------------

    def _on_connected(self, _session_present: bool) -> None:
        self.link.publish(status_topic(self.cfg.id), self._status("online"), qos=1, retain=True)
        # Whatever the broker says of the session, it may have lost what it PUBACKed since
        # its last autosave: the outbox thread resends the resend window.
        self._reconnected = True
        self._wake.set()

    def _on_published(self, mid: int) -> None:
        self._acked.append(mid)
        self._wake.set()

    def _on_message(self, msg: Received) -> None:
        if msg.topic == HUB_STATUS_TOPIC:
            self._on_hub_status(msg.payload)
        elif msg.topic == allowlist_topic(self.cfg.id):
            self._on_allowlist(msg.payload)
        elif msg.topic == cmd_topic(self.cfg.id):
            try:
                command = json.loads(msg.payload)
                if not isinstance(command, dict):
                    raise ValueError("not an object")
            except ValueError:
                log.warning("ignoring a malformed command: %r", msg.payload[:200])
                return
            self.handle_command(command)

    def _on_hub_status(self, payload: bytes) -> None:
        try:
            state = json.loads(payload).get("state")
        except (ValueError, AttributeError):
            return
        online = state == "online"
        was, self.hub_online = self.hub_online, online
        if online and was is not True:
            log.info("hub online: sending what was buffered")
            # the birth with the clock now, ahead of the buffer, whose times it corrects
            self.link.publish(status_topic(self.cfg.id), self._status("online"), qos=1, retain=True)
            if not self._enabled() and not self.locked:
                self._show("ready")
            self._wake.set()
        elif not online and was is not False:
            log.warning("hub offline: deciding from the allow-list, buffering events")
            if not self._enabled() and not self.locked:
                self._show("offline")

    def _load_allowlist(self) -> None:
        text = self.store.get_meta("allowlist")
        if text:
            self.allowlist = json.loads(text)

    def _on_allowlist(self, payload: bytes) -> None:
        if self.cfg.public_key is None:
            log.warning("an allow-list came but hub.public_key is not configured: ignored")
            return
        current = self.allowlist.get("version") if self.allowlist else None
        try:
            obj = json.loads(payload)
        except ValueError:
            obj = payload
        check = verify_allowlist(
            obj, self.cfg.public_key, datetime.now(UTC), tool=self.cfg.tool, newer_than=current
        )
        if check.status == "valid":
            self.allowlist = obj
            self.store.set_meta("allowlist", payload.decode())
            log.info(
                "allow-list version %s for %s: %d uids",
                obj["version"],
                obj["tool"],
                len(obj["uids"]),
            )
        elif check.status == "stale" and isinstance(obj, dict) and obj.get("version") == current:
            pass  # the retained copy again after a reconnect
        else:
            log.warning("allow-list refused (%s): %s", check.status, check.reason)

    def handle_command(self, command: dict[str, Any]) -> None:
        """One ``cmd`` object of docs/device-protocol.md.

        A ``grant`` switches the tool on only as the reply (``re``) to a badge this agent
        sent and still waits on, never while locked, and only with a ``max_s``: a grant
        from anywhere else (a forged or replayed message, a hub bug) leaves the relay off.
        """
        action = command.get("action")
        re = command.get("re")
        with self._decision_lock:
            if re is not None:
                entry = self._pending.pop(re, None) if isinstance(re, int) else None
                if entry is None:
                    log.info("reply to seq %r: no badge waits for it (decided already)", re)
                    return
                uid, timer = entry
                timer.cancel()
                if action == "grant":
                    self._grant_reply(uid, re, command.get("max_s"))
                elif action == "deny":
                    self._show("deny")
                elif action == "release":
                    self._release("tap off")
                return
            if action == "release":
                self._release("hub asked")
            elif action == "grant":
                log.warning("a grant that answers no badge (no 're'): ignored")
            elif action == "deny":
                self._show("deny")
            elif action == "lock":
                self.locked = True
                self.holder = None
                if self.interlock is not None:
                    self.interlock.disable(force=True)
                self._show("locked")
            elif action == "unlock":
                self.locked = False
                self._show("offline" if self.hub_online is False else "ready")
            elif action == "rebirth":
                if self.link.is_connected:
                    self.link.publish(
                        status_topic(self.cfg.id), self._status("online"), qos=1, retain=True
                    )
                self._rescan_all = True
                self._wake.set()
            else:
                log.warning("unknown command %r", action)

    def _grant_reply(self, uid: str, seq: int, max_s: Any) -> None:
        """The hub's grant for the badge ``seq``: obeyed unless locked or unbounded."""
        if self.locked:
            log.warning("grant for seq %d while locked: ignored", seq)
            self._show("locked")
            return
        number = isinstance(max_s, int | float) and not isinstance(max_s, bool)
        if not number or not 0 < max_s < math.inf:
            log.warning("grant for seq %d without a positive max_s (%r): refused", seq, max_s)
            self._show("deny")
            return
        self._grant(uid, max_s)

    # -- the sending thread ----------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(SCAN_S)
            self._wake.clear()
            try:
                self._flush()
            except Exception:
                log.exception("agent outbox: sending failed; retrying")
                self._stop.wait(1.0)
        try:
            self._delete_acked()
        except Exception:
            log.exception("agent outbox: could not record delivered events at shutdown")

    def _delete_acked(self) -> None:
        done = []
        while self._acked:
            key = self._inflight.pop(self._acked.popleft(), None)
            if key is not None:
                done.append(key)
        if done:
            now = time.time()
            self.store.acked(done, now)
            self._sent.difference_update(done)
            self.counters["delivered"] += len(done)
            # A PUBACK now proves the broker alive: what it acknowledged a window ago
            # is in its persistence file (the window exceeds its autosave interval).
            if now - self._pruned_at >= PRUNE_S:
                self._pruned_at = now
                self.store.prune(now - self.cfg.resend_window_s)

    def _publish(self, boot: int, seq: int, body: str, replay: bool) -> None:
        if replay:
            body = body[:-1] + ',"replay":true}'
        info = self.link.publish(event_topic(self.cfg.id), body.encode(), qos=1)
        self._inflight[info.mid] = (boot, seq)
        self._sent.add((boot, seq))
        self.counters["published"] += 1

    def _flush(self) -> None:
        self._delete_acked()
        sendable = self.can_send
        # Fresh events go out live if the hub can take them now; otherwise they wait in
        # the store and leave, as replays, with the rest.
        while self._fresh:
            boot, seq, body = self._fresh.popleft()
            with self._event_lock:
                self._fresh_keys.discard((boot, seq))
            if sendable and (boot, seq) not in self._sent:
                self._publish(boot, seq, body, replay=False)
        if not sendable:
            return
        rescan, self._rescan_all = self._rescan_all, False
        if self._reconnected:
            self._reconnected = False
            self._resend_window()
        limit = 1000
        rows = self.store.pending(limit + len(self._sent))
        for row in rows:
            key = (row.boot, row.seq)
            if key in self._fresh_keys:
                continue  # the next round sends it live
            if key in self._sent and not rescan:
                continue  # with paho, which resends it after a reconnect
            self._publish(row.boot, row.seq, row.body, replay=True)
        if len(rows) > limit:
            self._wake.set()

    def _resend_window(self) -> None:
        """After a reconnect: send again, in order, what the broker acknowledged lately.

        Their PUBACK is recorded again, which starts their window anew: the broker that
        acknowledges them now may be killed before its next save too.
        """
        recent = self.store.recent(self.cfg.resend_window_s)
        rows = [row for row in recent if (row.boot, row.seq) not in self._sent]
        if rows:
            log.info("agent %s: resending %d acknowledged events", self.cfg.id, len(rows))
        for row in rows:
            self._publish(row.boot, row.seq, row.body, replay=True)
        self.counters["resent"] += len(rows)

    @property
    def outbox_size(self) -> int:
        return self.store.count()


# --- the command --------------------------------------------------------------------------


def _sigterm(_signum: int, _frame: Any) -> None:
    # SystemExit runs the finally blocks and atexit handlers: the relay is cut.
    raise SystemExit(0)


@click.command("agent")
@click.option(
    "--config",
    "-c",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="The agent's TOML file (docs/agent.md).",
)
@click.option("--verbose", "-v", is_flag=True, help="Log debug detail.")
def agent_command(config_path: str, verbose: bool) -> None:
    """Drive a tool station's reader, relay and sensors as a docs/device-protocol.md device."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        cfg = load_agent_config(config_path)
    except ConfigError as exc:
        raise click.ClickException(f"invalid configuration: {exc}") from None
    try:
        agent = Agent(cfg)
    except (OSError, ValueError, ContractError) as exc:
        raise click.ClickException(f"cannot start the drivers: {exc}") from None
    signal.signal(signal.SIGTERM, _sigterm)
    try:
        agent.start()
        click.echo(
            f"peershop agent {cfg.id} boot {agent.boot} -> {cfg.mqtt.host}:{cfg.mqtt.port} "
            f"({', '.join(cfg.kind) or 'no drivers'})",
            err=True,
        )
        # The agent works without the broker (it decides offline), so READY does not wait
        # for a connection longer than a moment.
        agent.link.wait_connected(5)
        systemd.ready()
        systemd.serve_until(agent._stop, lambda: agent.alive)
    except KeyboardInterrupt:
        pass
    finally:
        systemd.stopping()
        agent.close()
