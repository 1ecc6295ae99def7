"""The serial bridge of docs/serial-protocol.md: serial nodes appear on MQTT as devices
(docs/device-protocol.md).

One :class:`NodePort` per serial port, each in its own thread, reads frames, binds the
port to the node that says ``hello``, and gives that node its own
:class:`~hub.contract.mqtt.MqttLink` (client id ``bridge-{id}``, username ``{id}``) with
its own retained birth and last will.
A node that knows the time says it in its ``hello`` (``ts``); the birth then carries the
node's clock, advanced by the time since that hello, while the hub is online, and goes
again when the hub comes (back) online: the hub learns the clock's offset from it and
corrects the node's replayed times (docs/device-protocol.md).  A node without a clock gets a
birth without ``ts``: the bridge's own clock is not the node's.
An event frame is published at QoS 1 and acked to the node only after the broker's
PUBACK, so an ack always means the broker has it, in memory: Mosquitto writes its
persistence file every ``autosave_interval``, so a broker killed outright loses what it
acknowledged since its last save.  The bridge therefore keeps the events PUBACKed in the
last :data:`RESEND_WINDOW_S` and publishes them again, in order and marked ``replay``,
after every reconnect of the node's link (the hub stores each ``(id, boot, seq)`` once).
Commands from ``peershop/dev/{id}/cmd`` go down the line with a fresh ``hseq`` and are
resent every 500 ms until the node acks.  The port is reopened, by path, whenever it
goes away: a ``/dev/serial/by-id/...`` link that comes back after a replug is picked up
without a restart.

:class:`Bridge` runs several ports in one process; ``peershop bridge`` is its command::

    peershop bridge /dev/serial/by-id/usb-Espressif_lathe-if00 /dev/ttyACM1

>>> bridge = Bridge(MqttSettings(port=1883), ["loop://"], node_id="lathe-node")
>>> [port.path for port in bridge.ports], bridge.counters["accepted"]
(['loop://'], 0)
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import click
import serial

from firmware_bridge.framing import FrameDecoder, Rejection, encode_frame
from hub import checks, systemd
from hub.config import load_config
from hub.contract.messages import (
    DEVICE_ID,
    HUB_STATUS_TOPIC,
    cmd_topic,
    event_from_object,
    event_topic,
    format_timestamp,
    parse_timestamp,
    status_topic,
)
from hub.contract.mqtt import MqttLink, MqttSettings, Received, Will
from hub.errors import ConfigError, ContractError

log = logging.getLogger(__name__)

BAUD = 115200
RESEND_S = 0.5  # an unacked command goes again after this (as the node does with events)
WINDOW = 8  # commands on the wire without an ack
MAX_COMMANDS = 64  # commands held for a node; beyond it the oldest are dropped
REOPEN_S = 0.5  # how often a missing port is tried again
READ_TIMEOUT_S = 0.02  # the longest a port thread blocks in read, so timers stay on time
REPUBLISH_AFTER_S = 5.0  # an event whose PUBACK has not come by then is published again
RECENT_ACKS = 256  # identities remembered as stored, to re-ack a resend at once
# PUBACKed events kept in memory to publish again after a reconnect: several of the
# broker's autosave intervals (1 s in the configs peershop writes).
RESEND_WINDOW_S = 10.0
OFFLINE_PUBACK_S = 2.0  # how long a stop waits for the broker to take the offline status
HSEQ_MODULUS = 2**31  # hseq stays a positive 32-bit integer for C firmware

# Counters of a port, besides the frame decoder's (accepted, too_long, no_crc, ...).
COUNTERS = (
    "port_opens",  # the port was opened
    "port_losses",  # an open port went away (unplugged, read or write failed)
    "hellos",  # hello frames
    "bad_hellos",  # hello without a usable id or boot
    "events",  # event frames from a bound node
    "unbound_events",  # event frames before any hello (answered with rebirth)
    "events_published",  # event publishes sent to the broker
    "events_acked",  # acks sent to the node after a PUBACK
    "invalid_events",  # events the device protocol refuses, forwarded for the hub's dead letters
    "resends_held",  # resends of an event whose publish was still waiting for its PUBACK
    "reacked",  # resends of an event already stored: acked again, not republished
    "events_resent",  # PUBACKed events of the resend window published again on reconnect
    "held_no_broker",  # events not published because the broker was not connected
    "commands",  # commands taken from the cmd topic
    "bad_commands",  # cmd payloads that are not a JSON object or do not fit a frame
    "commands_sent",  # command frames written, first sends
    "commands_resent",  # command frames written again for want of an ack
    "commands_acked",  # command acks from the node
    "commands_dropped",  # commands given up: the node went offline or the queue was full
    "stray_acks",  # acks of an hseq not pending
    "ignored",  # intact frames that are neither hello, ev nor ack
    "probes",  # rebirths sent to a quiet node to hear whether it is alive
    "offline",  # offline statuses published
    "id_conflicts",  # a node claimed an id another port of this bridge already serves
)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _compact(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def open_serial(path: str) -> serial.SerialBase:
    """Open a device path, a ``/dev/serial/by-id`` link or a pyserial URL at 115200 8N1."""
    return serial.serial_for_url(
        path,
        baudrate=BAUD,
        bytesize=serial.EIGHTBITS,
        parity=serial.PARITY_NONE,
        stopbits=serial.STOPBITS_ONE,
        timeout=READ_TIMEOUT_S,
        write_timeout=1.0,
    )


class _Command:
    __slots__ = ("frame", "hseq", "internal", "sent_at")

    def __init__(self, hseq: int, frame: bytes, internal: bool):
        self.hseq = hseq
        self.frame = frame
        self.internal = internal  # the bridge's own rebirth, not the hub's
        self.sent_at: float | None = None


class _Binding:
    """The node a port serves now, with its MQTT link."""

    def __init__(
        self,
        node_id: str,
        boot: int,
        fw: str | None,
        kind: list[str],
        link: MqttLink,
        clock: tuple[datetime, float] | None = None,
    ):
        self.node_id = node_id
        self.boot = boot
        self.fw = fw
        self.kind = kind
        self.link = link
        # the node's clock as its last hello said it, and this bridge's monotonic then
        self.clock = clock
        self.hub_online = False  # as peershop/hub/status says
        self.ready = threading.Event()  # the birth is out on the current connection
        self.on_puback: dict[int, Callable[[], None] | None] = {}
        self.early_pubacks: set[int] = set()  # PUBACKs that beat publish() returning
        self.pending: dict[tuple[int, int], float] = {}  # identity -> when published
        self.stored: collections.OrderedDict[tuple[int, int], None] = collections.OrderedDict()
        # PUBACKed within the resend window, oldest PUBACK first: identity -> payload, when
        self.recent: collections.OrderedDict[tuple[int, int], tuple[bytes, float]] = (
            collections.OrderedDict()
        )
        self.birth_wanted = False  # the hub asked for a rebirth

    def birth(self) -> bytes:
        status: dict[str, Any] = {"state": "online", "boot": self.boot}
        if self.fw is not None:
            status["fw"] = self.fw
        status["kind"] = self.kind
        if self.clock is not None and self.hub_online:
            # Only for a hub that hears it as it is sent: a birth that waited at the
            # broker for a hub that is down would add the wait to the clock's error.
            said, at = self.clock
            status["ts"] = format_timestamp(said + timedelta(seconds=time.monotonic() - at))
        return _compact(status)

    def will(self) -> bytes:
        return _compact({"state": "offline", "boot": self.boot})


class NodePort:
    """One serial port and the node on it, served by a thread until :meth:`stop`.

    :param path: device path, ``/dev/serial/by-id/...`` link, or pyserial URL.
    :param settings: the broker; ``username`` and ``password`` are replaced per node.
    :param node_id: force this id instead of the one in ``hello``.
    :param silence: seconds without a frame from the node before it is declared offline;
        a node quiet for half of it is asked for a ``rebirth`` (which it acks).
    :param passwords: MQTT password per node id, for brokers with per-device passwords.
    :param claim: called with a node id before binding; returns False if another port
        of the same bridge serves it already.
    :param opener: opens the port (tests pass their own); :func:`open_serial` by default.
    """

    def __init__(
        self,
        path: str,
        settings: MqttSettings,
        *,
        node_id: str | None = None,
        silence: float = 60.0,
        passwords: Mapping[str, str] | None = None,
        claim: Callable[[str, NodePort], bool] | None = None,
        release: Callable[[str, NodePort], None] | None = None,
        opener: Callable[[str], serial.SerialBase] = open_serial,
        reopen_interval: float = REOPEN_S,
        resend_interval: float = RESEND_S,
        window: int = WINDOW,
        resend_window: float = RESEND_WINDOW_S,
    ):
        if node_id is not None and not DEVICE_ID.fullmatch(node_id):
            raise ValueError(f"node id {node_id!r} does not match [a-z0-9][a-z0-9-]{{0,62}}")
        if silence <= 0:
            raise ValueError("silence must be positive")
        self.path = path
        self.settings = settings
        self.forced_id = node_id
        self.silence = silence
        self.passwords = dict(passwords or {})
        self.reopen_interval = reopen_interval
        self.resend_interval = resend_interval
        self.window = window
        self.resend_window = resend_window
        self._claim = claim or (lambda _id, _port: True)
        self._release = release or (lambda _id, _port: None)
        self._opener = opener
        self.decoder = FrameDecoder(on_reject=self._on_reject)
        self._counters = dict.fromkeys(COUNTERS, 0)
        self._lock = threading.Lock()  # binding state, commands, counters
        self._write_lock = threading.Lock()  # the port, written from paho's threads too
        self._port: serial.SerialBase | None = None
        self._binding: _Binding | None = None
        self._inflight: list[_Command] = []
        self._queue: collections.deque[_Command] = collections.deque()
        # Nodes remember recent hseqs to drop resends, so a restarted bridge must not
        # reuse one: start from the clock, in milliseconds.
        self._next_hseq = int(time.time() * 1000) % HSEQ_MODULUS
        self._last_heard = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._missing_logged = False
        self.is_open = threading.Event()

    # -- what a caller sees -----------------------------------------------------------

    @property
    def counters(self) -> dict[str, int]:
        """The frame decoder's counters and the bridge's own, by name."""
        with self._lock:
            return {**self.decoder.counters, **self._counters}

    @property
    def node_id(self) -> str | None:
        """The id of the node this port serves now, None while no node said hello."""
        binding = self._binding
        return binding.node_id if binding else None

    @property
    def boot(self) -> int | None:
        binding = self._binding
        return binding.boot if binding else None

    @property
    def commands_pending(self) -> int:
        with self._lock:
            return len(self._inflight) + len(self._queue)

    # -- life cycle -------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"bridge {self.path}", daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        """Tell the port's thread to finish; :meth:`stop` waits for it."""
        self._stop.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Publish the node offline, disconnect from the broker, close the port."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            port = self._open()
            if port is None:
                break
            try:
                self._serve(port)
            except (serial.SerialException, OSError) as exc:
                self._count("port_losses")
                log.warning("%s: port lost (%s); reopening", self.path, exc)
            except Exception:
                # Bad input never stops a port: log it, start over from a fresh open.
                self._count("port_losses")
                log.exception("%s: unexpected error; reopening the port", self.path)
            finally:
                self.is_open.clear()
                with self._write_lock:
                    self._port = None
                try:
                    port.close()
                except (serial.SerialException, OSError):
                    pass
                self._go_offline("port closed" if self._stop.is_set() else "port lost")
                self._drop_commands(internal_too=True)
                # A line cut off by the loss is a dropped line, not the start of the next.
                self.decoder.feed(b"\n")
            if not self._stop.is_set():
                self._stop.wait(self.reopen_interval)

    def _open(self) -> serial.SerialBase | None:
        while not self._stop.is_set():
            try:
                port = self._opener(self.path)
            except (serial.SerialException, OSError, ValueError) as exc:
                if not self._missing_logged:
                    log.warning(
                        "%s: cannot open (%s); retrying every %ss",
                        self.path,
                        exc,
                        self.reopen_interval,
                    )
                    self._missing_logged = True
                self._stop.wait(self.reopen_interval)
                continue
            self._missing_logged = False
            self._count("port_opens")
            log.info("%s: open at %d 8N1", self.path, BAUD)
            with self._write_lock:
                self._port = port
            self.is_open.set()
            return port
        return None

    def _serve(self, port: serial.SerialBase) -> None:
        # A node that booted before the port was open has said hello to nobody.
        self._request_rebirth()
        while not self._stop.is_set():
            data = port.read(max(1, port.in_waiting))
            if data:
                accepted = self.decoder.counters["accepted"]
                frames = self.decoder.feed(data)
                if self.decoder.counters["accepted"] != accepted:
                    self._last_heard = time.monotonic()
                for frame in frames:
                    self._on_frame(frame)
            self._tick(time.monotonic())

    # -- frames from the node ---------------------------------------------------------

    def _on_reject(self, rejection: Rejection) -> None:
        log.warning(
            "%s: dropped a line (%s, %d bytes): %r",
            self.path,
            rejection.reason,
            rejection.length,
            rejection.raw,
        )

    def _on_frame(self, frame: dict[str, Any]) -> None:
        kind = frame.get("t")
        if kind == "ev":
            self._on_event(frame)
        elif kind == "hello":
            self._on_hello(frame)
        elif kind == "ack" and "hseq" in frame:
            self._on_command_ack(frame["hseq"])
        else:
            self._count("ignored")
            log.debug("%s: ignored frame %r", self.path, frame)

    def _on_hello(self, frame: dict[str, Any]) -> None:
        self._count("hellos")
        node_id = self.forced_id or frame.get("id")
        boot = frame.get("boot")
        if not isinstance(node_id, str) or not DEVICE_ID.fullmatch(node_id) or not _is_int(boot):
            self._count("bad_hellos")
            log.warning("%s: hello without a valid id and boot: %r", self.path, frame)
            return
        if self.forced_id and frame.get("id") not in (None, self.forced_id):
            log.debug(
                "%s: node says it is %r; serving it as %s",
                self.path,
                frame.get("id"),
                self.forced_id,
            )
        fw = frame.get("fw")
        fw = None if fw is None else str(fw)[:64]
        kind = frame.get("kind") or []
        if isinstance(kind, str):
            kind = [kind]
        if not isinstance(kind, list) or not all(isinstance(k, str) and k for k in kind):
            kind = []
        clock = self._hello_clock(frame)
        binding = self._binding
        if binding is not None and (binding.node_id, binding.boot) == (node_id, boot):
            # The answer to a rebirth: the same node, the same boot, the same link.
            birth_wanted = binding.birth_wanted or (binding.fw, binding.kind) != (fw, kind)
            binding.fw, binding.kind, binding.birth_wanted = fw, kind, False
            binding.clock = clock
            if birth_wanted and binding.ready.is_set():
                self._publish(binding, status_topic(node_id), binding.birth(), retain=True)
            return
        if binding is not None:
            self._go_offline(f"replaced by {node_id} boot {boot}")
        if not self._claim(node_id, self):
            self._count("id_conflicts")
            log.error(
                "%s: node id %s is served by another port already; ignoring this node",
                self.path,
                node_id,
            )
            return
        self._bind(node_id, boot, fw, kind, clock)

    def _hello_clock(self, frame: dict[str, Any]) -> tuple[datetime, float] | None:
        """The node's clock from its hello's ``ts``, with when it came; None without one."""
        ts = frame.get("ts")
        if ts is None:
            return None
        try:
            return parse_timestamp(ts), time.monotonic()
        except ContractError as exc:
            log.warning("%s: hello with an unusable clock, ignored: %s", self.path, exc)
            return None

    def _bind(
        self,
        node_id: str,
        boot: int,
        fw: str | None,
        kind: list[str],
        clock: tuple[datetime, float] | None,
    ) -> None:
        settings = dataclasses.replace(
            self.settings, username=node_id, password=self.passwords.get(node_id)
        )
        binding: _Binding
        link = MqttLink(
            settings,
            f"bridge-{node_id}",
            on_message=lambda msg: self._on_command(binding, msg),
            on_connected=lambda _present: self._on_connected(binding),
            on_published=lambda mid: self._on_puback(binding, mid),
            subscriptions=[cmd_topic(node_id), HUB_STATUS_TOPIC],
            will=Will(status_topic(node_id), _compact({"state": "offline", "boot": boot})),
            # A command is an answer for the moment (a grant for a badge tapped now):
            # one published while this link was away must not reach the node later.
            persistent=False,
        )
        binding = _Binding(node_id, boot, fw, kind, link, clock)
        with self._lock:
            self._binding = binding
        self._last_heard = time.monotonic()
        link.start()
        log.info(
            "%s: node %s boot %d (fw %s) bound; connecting to %s:%s",
            self.path,
            node_id,
            boot,
            fw,
            self.settings.host,
            self.settings.port,
        )

    def _on_connected(self, binding: _Binding) -> None:
        # paho's network thread: publish the birth before any event of this connection.
        with self._lock:
            binding.pending.clear()  # publishes of the last connection may never be acked
            again = sorted(binding.recent.items())
            self._counters["events_resent"] += len(again)
        self._publish(binding, status_topic(binding.node_id), binding.birth(), retain=True)
        # The broker may have lost what it acknowledged since its last autosave, whatever
        # it says of the session: the resend window goes again, in order.  Their PUBACKs
        # start their window anew (this broker may be killed before its next save too);
        # the node had its acks already.
        # Marked ``replay`` like any late copy (docs/device-protocol.md): if the hub never had it,
        # a badge is recorded and not answered seconds after the tap.
        for identity, (payload, _acked_at) in again:
            self._publish(
                binding,
                event_topic(binding.node_id),
                _compact({**json.loads(payload), "replay": True}),
                then=lambda i=identity, p=payload: self._event_stored(binding, i, p, False),
            )
        binding.ready.set()

    def _on_event(self, frame: dict[str, Any]) -> None:
        binding = self._binding
        if binding is None or not binding.ready.is_set() or not binding.link.is_connected:
            if binding is None:
                self._count("unbound_events")
                self._request_rebirth()
            else:
                self._count("held_no_broker")  # the node resends in 500 ms
            return
        self._count("events")
        boot, seq = frame.get("boot"), frame.get("seq")
        identity = (boot, seq) if _is_int(boot) and _is_int(seq) else None
        now = time.monotonic()
        with self._lock:
            if identity is not None and identity in binding.stored:
                self._counters["reacked"] += 1
                acked_again = True
            else:
                acked_again = False
                published_at = binding.pending.get(identity) if identity else None
                if published_at is not None and now - published_at < REPUBLISH_AFTER_S:
                    self._counters["resends_held"] += 1
                    return
                if identity is not None:
                    binding.pending[identity] = now
        if acked_again:
            self._write(encode_frame({"t": "ack", "boot": boot, "seq": seq}))
            return
        event = {key: value for key, value in frame.items() if key != "t"}
        payload = _compact(event)
        try:
            event_from_object(binding.node_id, event)
        except ContractError as exc:
            # The hub records malformed events on the event topic as dead letters with
            # the reason; forwarding it there puts it where a coordinator looks.  Acked
            # like any other, or the node would resend it forever.
            self._count("invalid_events")
            log.warning(
                "%s: dead letter from %s: %s: %s",
                self.path,
                binding.node_id,
                exc,
                payload.decode(errors="replace"),
            )
        self._count("events_published")
        self._publish(
            binding,
            event_topic(binding.node_id),
            payload,
            then=None
            if identity is None
            else (lambda: self._event_stored(binding, identity, payload, True)),
        )

    def _event_stored(
        self, binding: _Binding, identity: tuple[int, int], payload: bytes, ack_node: bool
    ) -> None:
        now = time.monotonic()
        with self._lock:
            binding.pending.pop(identity, None)
            binding.stored[identity] = None
            binding.stored.move_to_end(identity)
            while len(binding.stored) > RECENT_ACKS:
                binding.stored.popitem(last=False)
            binding.recent[identity] = (payload, now)
            binding.recent.move_to_end(identity)
            # This PUBACK proves the broker alive now: what it acknowledged a window ago
            # is in its persistence file.  (A dead broker sends none, so nothing it may
            # have lost is dropped while it is away, however long.)
            while binding.recent and next(iter(binding.recent.values()))[1] < now - (
                self.resend_window
            ):
                binding.recent.popitem(last=False)
            if not ack_node:
                return
            self._counters["events_acked"] += 1
        if self._binding is binding:
            boot, seq = identity
            self._write(encode_frame({"t": "ack", "boot": boot, "seq": seq}))

    # -- MQTT, with PUBACKs matched to what was published -----------------------------

    def _publish(
        self,
        binding: _Binding,
        topic: str,
        payload: bytes,
        *,
        retain: bool = False,
        then: Callable[[], None] | None = None,
    ) -> None:
        # paho calls on_publish holding its own lock, which publish() takes too: never
        # hold ours around publish(), and take a PUBACK that comes before we know its mid.
        info = binding.link.publish(topic, payload, qos=1, retain=retain)
        with self._lock:
            if info.mid in binding.early_pubacks:
                binding.early_pubacks.discard(info.mid)
                done = True
            else:
                binding.on_puback[info.mid] = then
                done = False
        if done and then is not None:
            then()

    def _on_puback(self, binding: _Binding, mid: int) -> None:
        with self._lock:
            if mid not in binding.on_puback:
                binding.early_pubacks.add(mid)
                return
            then = binding.on_puback.pop(mid)
        if then is not None:
            then()

    # -- commands ---------------------------------------------------------------------

    def _on_hub_status(self, binding: _Binding, payload: bytes) -> None:
        """The hub's state; a node with a clock is born again when the hub comes online."""
        try:
            online = json.loads(payload).get("state") == "online"
        except (ValueError, UnicodeDecodeError, AttributeError):
            return
        was, binding.hub_online = binding.hub_online, online
        if online and not was and binding.clock is not None and binding.ready.is_set():
            self._publish(binding, status_topic(binding.node_id), binding.birth(), retain=True)

    def _on_command(self, binding: _Binding, msg: Received) -> None:
        # paho's network thread.
        if msg.topic == HUB_STATUS_TOPIC:
            self._on_hub_status(binding, msg.payload)
            return
        try:
            obj = json.loads(msg.payload)
        except (ValueError, UnicodeDecodeError):
            obj = None
        if not isinstance(obj, dict):
            self._count("bad_commands")
            log.warning(
                "%s: command for %s is not a JSON object: %r",
                self.path,
                binding.node_id,
                msg.payload[:80],
            )
            return
        self._count("commands")
        if obj.get("action") == "rebirth":
            binding.birth_wanted = True
        if not self._enqueue(obj, internal=False):
            self._count("bad_commands")

    def _request_rebirth(self, probe: bool = False) -> None:
        with self._lock:
            if any(c.internal for c in self._inflight) or any(c.internal for c in self._queue):
                return
            if probe:
                self._counters["probes"] += 1
        self._enqueue({"action": "rebirth"}, internal=True)

    def _enqueue(self, command: dict[str, Any], internal: bool) -> bool:
        with self._lock:
            hseq = self._next_hseq
            try:
                frame = encode_frame({**command, "t": "cmd", "hseq": hseq})
            except (TypeError, ValueError) as exc:
                log.warning("%s: command %r cannot be framed: %s", self.path, command, exc)
                return False
            self._next_hseq = (hseq + 1) % HSEQ_MODULUS
            self._queue.append(_Command(hseq, frame, internal))
            while len(self._queue) > MAX_COMMANDS:
                dropped = self._queue.popleft()
                self._counters["commands_dropped"] += 1
                log.warning("%s: command queue full; dropped hseq %d", self.path, dropped.hseq)
            to_send = self._fill_window(time.monotonic())
        for frame in to_send:
            self._write(frame)
        return True

    def _fill_window(self, now: float) -> list[bytes]:
        # Under self._lock; returns the frames to write once it is released.
        frames = []
        while self._queue and len(self._inflight) < self.window:
            command = self._queue.popleft()
            command.sent_at = now
            self._inflight.append(command)
            self._counters["commands_sent"] += 1
            frames.append(command.frame)
        return frames

    def _on_command_ack(self, hseq: Any) -> None:
        with self._lock:
            for i, command in enumerate(self._inflight):
                if command.hseq == hseq:
                    del self._inflight[i]
                    self._counters["commands_acked"] += 1
                    frames = self._fill_window(time.monotonic())
                    break
            else:
                self._counters["stray_acks"] += 1
                return
        for frame in frames:
            self._write(frame)

    def _drop_commands(self, internal_too: bool) -> None:
        """Give up the hub's pending commands (and the bridge's own rebirth if asked)."""
        with self._lock:
            dropped = [c for c in (*self._inflight, *self._queue) if not c.internal]
            keep = not internal_too
            self._inflight = [c for c in self._inflight if c.internal and keep]
            self._queue = collections.deque(c for c in self._queue if c.internal and keep)
            self._counters["commands_dropped"] += len(dropped)
        if dropped:
            log.info("%s: %d command(s) for an absent node dropped", self.path, len(dropped))

    def _tick(self, now: float) -> None:
        resend = []
        with self._lock:
            for command in self._inflight:
                if command.sent_at is not None and now - command.sent_at >= self.resend_interval:
                    command.sent_at = now
                    self._counters["commands_resent"] += 1
                    resend.append(command.frame)
        for frame in resend:
            self._write(frame)
        if self._binding is None:
            return
        quiet = now - self._last_heard
        if quiet >= self.silence:
            log.warning("%s: %s silent for %.1fs", self.path, self._binding.node_id, quiet)
            self._go_offline("silent")
            self._drop_commands(internal_too=False)
            self._request_rebirth()  # so it is back at once if it wakes up
        elif quiet >= self.silence / 2:
            self._request_rebirth(probe=True)

    # -- going offline ----------------------------------------------------------------

    def _go_offline(self, why: str) -> None:
        with self._lock:
            binding = self._binding
            self._binding = None
        if binding is None:
            return
        link = binding.link
        try:
            if link.is_connected:
                info = link.publish(status_topic(binding.node_id), binding.will(), 1, True)
                try:
                    info.wait_for_publish(OFFLINE_PUBACK_S)
                except (RuntimeError, ValueError):
                    pass  # not sent: the broker is gone, and its will says offline
                self._count("offline")
            log.info("%s: %s boot %d offline (%s)", self.path, binding.node_id, binding.boot, why)
        finally:
            link.stop()
            self._release(binding.node_id, self)
        self._drop_commands(internal_too=False)

    # -- small helpers ----------------------------------------------------------------

    def _write(self, frame: bytes) -> None:
        with self._write_lock:
            port = self._port
            if port is None:
                return
            try:
                port.write(frame)
            except (serial.SerialException, OSError) as exc:
                # The reading thread notices the loss and reopens; nothing to do here.
                log.debug("%s: write failed: %s", self.path, exc)

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counters[name] += n


class Bridge:
    """Serial nodes on several ports, each its own MQTT device on the broker.

    :param settings: the broker (host, port, TLS); each node connects as username = its id.
    :param ports: device paths, ``/dev/serial/by-id`` links or pyserial URLs.
    :param node_id: force this id (only with one port).
    :param silence: seconds without a frame before a node is declared offline.
    :param passwords: MQTT password per node id, when the broker wants one.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        settings: MqttSettings,
        ports: Sequence[str],
        *,
        node_id: str | None = None,
        silence: float = 60.0,
        passwords: Mapping[str, str] | None = None,
        **port_options: Any,
    ):
        if not ports:
            raise ValueError("give at least one port")
        if node_id is not None and len(ports) > 1:
            raise ValueError("--id names one node, so it takes exactly one port")
        self._lock = threading.Lock()
        self._claimed: dict[str, NodePort] = {}
        self.ports = [
            NodePort(
                path,
                settings,
                node_id=node_id,
                silence=silence,
                passwords=passwords,
                claim=self._claim,
                release=self._release,
                **port_options,
            )
            for path in ports
        ]

    def _claim(self, node_id: str, port: NodePort) -> bool:
        with self._lock:
            if self._claimed.get(node_id, port) is not port:
                return False
            self._claimed[node_id] = port
            return True

    def _release(self, node_id: str, port: NodePort) -> None:
        with self._lock:
            if self._claimed.get(node_id) is port:
                del self._claimed[node_id]

    @property
    def counters(self) -> dict[str, int]:
        """Every port's counters, summed."""
        total: collections.Counter[str] = collections.Counter()
        for port in self.ports:
            total.update(port.counters)
        return dict(total)

    def port(self, path: str) -> NodePort:
        for port in self.ports:
            if port.path == path:
                return port
        raise KeyError(path)

    def start(self) -> Bridge:
        for port in self.ports:
            port.start()
        return self

    def stop(self) -> None:
        """Publish every node offline, disconnect cleanly, close the ports."""
        for port in self.ports:
            port.request_stop()  # all at once: each may wait for its offline PUBACK
        for port in self.ports:
            port.stop()

    def __enter__(self) -> Bridge:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def load_passwords(path: Path) -> dict[str, str]:
    """Read ``peershop device add ID --json`` output: one JSON object a line."""
    passwords = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            passwords[str(entry["id"])] = str(entry["password"])
        except (ValueError, KeyError, TypeError):
            raise click.BadParameter(
                f'line {number} is not {{"id":…,"password":…}}', param_hint="--credentials"
            ) from None
    return passwords


def _silence(_ctx: click.Context, _param: click.Parameter, value: str) -> float:
    try:
        return checks.seconds(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command("bridge")
@click.argument("ports", nargs=-1, required=True)
@click.option("--id", "node_id", help="Serve the node as this id instead of its hello's.")
@click.option(
    "--silence",
    default="60s",
    show_default=True,
    callback=_silence,
    help="Declare a node offline after this long without a frame (quiet nodes are probed).",
)
@click.option(
    "--credentials",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Per-node MQTT passwords: lines of `peershop device add ID --json` output.",
)
@click.pass_context
def bridge_command(
    ctx: click.Context,
    ports: Iterable[str],
    node_id: str | None,
    silence: float,
    credentials: Path | None,
) -> None:
    """Serial nodes on PORT(s) (docs/serial-protocol.md) as MQTT devices, until Ctrl-C.

    PORT is a device path, a /dev/serial/by-id/... link or a pyserial URL; a port that
    goes away is reopened when it comes back.
    """
    obj = ctx.find_root().obj
    try:
        cfg = obj.config() if obj is not None else load_config(None)
    except ConfigError as exc:
        raise click.ClickException(f"invalid configuration: {exc}") from None
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.DEBUG if getattr(obj, "verbose", False) else logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    passwords = load_passwords(credentials) if credentials else {}
    try:
        bridge = Bridge(
            cfg.mqtt.settings(),
            list(ports),
            node_id=node_id,
            silence=silence,
            passwords=passwords,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    bridge.start()
    click.echo(f"bridging {', '.join(ports)} to {cfg.mqtt.host}:{cfg.mqtt.port}", err=True)
    try:
        systemd.serve_until(stop, lambda: True)
    finally:
        click.echo("stopping: publishing every node offline", err=True)
        bridge.stop()
