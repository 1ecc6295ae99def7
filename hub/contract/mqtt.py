"""The one MQTT adapter: paho-mqtt 2 set up the way peershop's promises need.

- MQTT 5 with a persistent session (``clean_start=False``, a session that never
  expires), so messages published while the hub is down wait at the broker.
- ``manual_ack=True``: an incoming QoS 1 message is acknowledged only when the caller
  says so, which the hub does after the message's transaction has committed.
- TCP_NODELAY on the socket: with Nagle and delayed ACKs a QoS 1 round trip on
  loopback takes ~88 ms instead of ~0.5 ms (DESIGN.md, "Real parts").
- Every callback is wrapped: one bad message is logged, never fatal (paho kills its
  network thread on an uncaught exception).
- A message bigger than the broker's Maximum Packet Size (its CONNACK says it) is not
  sent: :class:`~hub.errors.PacketTooLarge`.  Mosquitto would drop the connection, and
  paho would send the same message again after every reconnect.
- Acks carry the connection generation they were received on.  After a reconnect the
  broker redelivers every unacked message and may reuse packet ids, so an ack meant for
  the old connection is dropped rather than sent, where it could complete a different
  message.

>>> link = MqttLink(MqttSettings(host="127.0.0.1", port=1883), "example")
>>> link.client_id
'example'
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from hub.errors import PacketTooLarge

log = logging.getLogger(__name__)

SESSION_NEVER_EXPIRES = 0xFFFFFFFF


def packet_size(topic: str, payload: bytes, qos: int) -> int:
    """Bytes of an MQTT 5 PUBLISH without properties, as a Maximum Packet Size counts them.

    >>> packet_size("peershop/dev/laser-node/allowlist", bytes(320_000), 1)
    320042
    """
    remaining = 2 + len(topic.encode()) + (2 if qos else 0) + 1 + len(payload)
    length_bytes = 1 + (remaining >= 128) + (remaining >= 16_384) + (remaining >= 2_097_152)
    return 1 + length_bytes + remaining


@dataclass(frozen=True)
class MqttSettings:
    """Where and how to reach the broker: the one type for the hub (``[mqtt]`` of
    peershop.toml, through ``cfg.mqtt.settings()``), the agent (``[mqtt]`` of agent.toml) and
    the bridge.  The client id is not here: each process names its own."""

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    tls_ca: str | None = None
    keepalive: int = 30


@dataclass(frozen=True, slots=True)
class Received:
    """A message from the broker with what is needed to acknowledge it later."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    mid: int
    generation: int
    received_at: datetime


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass
class LinkCounters:
    received: int = 0
    acked: int = 0
    stale_acks_dropped: int = 0
    callback_errors: int = 0
    connects: int = 0
    disconnects: int = 0
    published: int = 0
    puback: int = 0
    extra: dict[str, int] = field(default_factory=dict)


def _nodelay(_client: paho.Client, _userdata: Any, sock: Any) -> None:
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):  # a websocket or TLS wrapper without the option
        pass


class MqttLink:
    """A paho client with peershop's settings; see the module docstring."""

    def __init__(
        self,
        settings: MqttSettings,
        client_id: str,
        *,
        on_message: Callable[[Received], None] | None = None,
        on_connected: Callable[[bool], None] | None = None,
        on_published: Callable[[int], None] | None = None,
        subscriptions: Iterable[str] = (),
        will: Will | None = None,
        persistent: bool = True,
        manual_ack: bool = False,
        receive_maximum: int = 2000,
    ):
        self.settings = settings
        self.client_id = client_id
        self.counters = LinkCounters()
        self._on_message_cb = on_message
        self._on_connected_cb = on_connected
        self._on_published_cb = on_published
        self._subscriptions = list(subscriptions)
        self._persistent = persistent
        self._manual_ack = manual_ack
        self._receive_maximum = receive_maximum
        self._lock = threading.Lock()
        self._generation = 0
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._sub_mids: set[int] = set()
        self.last_error: str | None = None
        self.max_packet_size: int | None = None  # the broker's, from its CONNACK

        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            manual_ack=manual_ack,
        )
        client.max_inflight_messages_set(1000)
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        if settings.username:
            client.username_pw_set(settings.username, settings.password)
        if settings.tls_ca:
            client.tls_set(ca_certs=settings.tls_ca, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        if will is not None:
            client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        client.on_socket_open = _nodelay
        client.on_connect = self._guard(self._handle_connect)
        client.on_disconnect = self._guard(self._handle_disconnect)
        client.on_message = self._guard(self._handle_message)
        client.on_publish = self._guard(self._handle_publish)
        client.on_subscribe = self._guard(self._handle_subscribe)
        self.client = client

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background; paho reconnects by itself from then on."""
        props = Properties(PacketTypes.CONNECT)
        if self._persistent:
            props.SessionExpiryInterval = SESSION_NEVER_EXPIRES
        props.ReceiveMaximum = self._receive_maximum
        self.client.connect_async(
            self.settings.host,
            self.settings.port,
            keepalive=self.settings.keepalive,
            clean_start=not self._persistent,
            properties=props,
        )
        self.client.loop_start()

    def stop(self) -> None:
        """Disconnect cleanly (no last will) and stop the network thread."""
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()
            # If the thread stopped mid-connect, paho leaves the socket open.
            sock = self.client.socket()
            if sock is not None:
                sock.close()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def wait_subscribed(self, timeout: float) -> bool:
        return self._subscribed.wait(timeout)

    @property
    def is_connected(self) -> bool:
        return self._connected.is_set()

    @property
    def generation(self) -> int:
        return self._generation

    def add_subscriptions(self, topics: Iterable[str]) -> None:
        """Subscribe to more topics now and after every reconnect."""
        new = [t for t in topics if t not in self._subscriptions]
        if not new:
            return
        self._subscriptions.extend(new)
        if self.is_connected:
            self.client.subscribe([(t, 1) for t in new])

    # -- sending ---------------------------------------------------------------------

    def publish(
        self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False
    ) -> paho.MQTTMessageInfo:
        """Publish; raises :class:`~hub.errors.PacketTooLarge` for a message the broker
        would not take (it would disconnect us, and paho resend it after every reconnect)."""
        if isinstance(payload, str):
            payload = payload.encode()
        limit = self.max_packet_size
        if limit is not None and (size := packet_size(topic, payload, qos)) > limit:
            raise PacketTooLarge(
                f"a message of {size} bytes on {topic} is over the broker's maximum packet "
                f"size of {limit} bytes (broker.max_packet_size); it was not sent"
            )
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        self.counters.published += 1
        return info

    def ack(self, messages: Iterable[Received]) -> int:
        """Acknowledge messages now stored; those of an earlier connection are skipped."""
        sent = 0
        with self._lock:
            generation = self._generation
            for msg in messages:
                if msg.qos == 0:
                    continue
                if msg.generation != generation:
                    self.counters.stale_acks_dropped += 1
                    continue
                self.client.ack(msg.mid, msg.qos)
                sent += 1
        self.counters.acked += sent
        return sent

    # -- paho callbacks (network thread) ----------------------------------------------

    def _guard(self, fn: Callable[..., None]) -> Callable[..., None]:
        def wrapper(*args: Any) -> None:
            try:
                fn(*args)
            except Exception:
                self.counters.callback_errors += 1
                log.exception("MQTT callback %s failed; the link keeps running", fn.__name__)

        return wrapper

    def _handle_connect(self, client, _userdata, flags, reason_code, props) -> None:
        if reason_code.is_failure:
            self.last_error = f"connect refused: {reason_code}"
            log.warning("MQTT %s: %s", self.client_id, self.last_error)
            return
        self.max_packet_size = getattr(props, "MaximumPacketSize", None)
        with self._lock:
            self._generation += 1
        self.counters.connects += 1
        self.last_error = None
        session_present = bool(getattr(flags, "session_present", False))
        log.info(
            "MQTT %s connected to %s:%s (session present: %s)",
            self.client_id,
            self.settings.host,
            self.settings.port,
            session_present,
        )
        if self._subscriptions:
            _result, mid = client.subscribe([(t, 1) for t in self._subscriptions])
            self._sub_mids.add(mid)
        else:
            self._subscribed.set()
        self._connected.set()
        if self._on_connected_cb:
            self._on_connected_cb(session_present)

    def _handle_subscribe(self, _client, _userdata, mid, reason_codes, _props) -> None:
        failed = [rc for rc in reason_codes if rc.is_failure]
        if failed:
            self.last_error = f"subscription refused: {failed}"
            log.error("MQTT %s: %s", self.client_id, self.last_error)
        if mid in self._sub_mids:
            self._sub_mids.discard(mid)
            self._subscribed.set()

    def _handle_disconnect(self, _client, _userdata, _flags, reason_code, _props) -> None:
        with self._lock:
            self._generation += 1  # acks of messages received so far are now stale
        self._connected.clear()
        self._subscribed.clear()
        self.counters.disconnects += 1
        if reason_code.is_failure:
            self.last_error = f"disconnected: {reason_code}"
            log.warning("MQTT %s %s; reconnecting", self.client_id, self.last_error)

    def _handle_message(self, _client, _userdata, message: paho.MQTTMessage) -> None:
        self.counters.received += 1
        received = Received(
            topic=message.topic,
            payload=bytes(message.payload),
            qos=message.qos,
            retain=bool(message.retain),
            mid=message.mid,
            generation=self._generation,
            received_at=datetime.now(UTC),
        )
        if self._on_message_cb is None:
            if self._manual_ack:
                self.ack([received])
            return
        try:
            self._on_message_cb(received)
        except Exception:
            # Not acked: the broker redelivers it after a reconnect, so nothing is lost.
            self.counters.callback_errors += 1
            log.exception("handling a message on %s failed", message.topic)

    def _handle_publish(self, _client, _userdata, mid, _reason_code, _props) -> None:
        self.counters.puback += 1
        if self._on_published_cb:
            self._on_published_cb(mid)
