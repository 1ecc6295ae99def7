"""Hub-to-device messages that survive a crash.

A rule that decides to tell a device something calls :func:`enqueue` in the same
transaction as the records it writes, so the command exists exactly when the decision
does.  :class:`OutboxPublisher` publishes pending rows and deletes each one when the
broker has acknowledged it (PUBACK).  After a hub restart every remaining row is sent
again: devices treat a repeated command by its ``re``/identity, as docs/device-protocol.md says.

A PUBACK does not make a message safe: Mosquitto acknowledges what it holds in memory
and writes its persistence file only every ``autosave_interval`` (1 s), so a broker
killed outright loses the retained messages it took in since its last save.  The
publisher therefore keeps, in memory, the latest retained message of each topic for
:data:`RESEND_WINDOW_S` after its PUBACK and publishes it again after every reconnect.
Retained messages (allow-lists, tool states) are idempotent, and only the latest of a
topic is resent, never over a newer one.  The window is counted from the latest PUBACK
(which proves the broker alive then), not from the clock, so a quiet hub holds the
last ones until its next PUBACK; at most :data:`MAX_KEPT_BYTES` of payloads, oldest
dropped first (a shop's signed allow-lists are ~64 bytes a member and tool).  Commands
(not retained) are not resent: a stale ``release`` must not reach a device twice.  A hub
killed at the same moment as the broker loses this memory: its retained messages are
sent again at the next change (a tool state) or the next issue of the allow-lists.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from hub.config import DEFAULT_SITE
from hub.contract.mqtt import MqttLink
from hub.errors import PacketTooLarge
from hub.store.models import Outbox

log = logging.getLogger(__name__)

# Payload bytes handed to paho and not yet acknowledged.  paho holds each message (and,
# until it is written, its packet) in memory until PUBACK: 200 tools' signed allow-lists
# of 5,000 members are ~64 MB, too much for a Pi Zero at once, so they go a few at a time.
MAX_INFLIGHT_BYTES = 1 << 20
# How long a retained message is kept for a resend after its PUBACK: several of the
# broker's autosave intervals (1 s in the configs peershop writes).
RESEND_WINDOW_S = 10.0
MAX_KEPT_BYTES = 8 << 20  # payloads held for the window at most


def enqueue(
    session: Session,
    topic: str,
    payload: bytes | str,
    *,
    qos: int = 1,
    retain: bool = False,
    site: str = DEFAULT_SITE,
) -> None:
    """Add a message to the outbox inside the caller's transaction; the hub of ``site``
    sends it (several hubs share one database, each with its own broker)."""
    if isinstance(payload, str):
        payload = payload.encode()
    session.add(Outbox(topic=topic, payload=payload, qos=qos, retain=retain, site=site))


class OutboxPublisher:
    """Publishes outbox rows over ``link`` and deletes them on PUBACK."""

    def __init__(
        self,
        link: MqttLink,
        sm: sessionmaker[Session],
        batch: int = 500,
        site: str = DEFAULT_SITE,
        max_inflight_bytes: int = MAX_INFLIGHT_BYTES,
        resend_window_s: float = RESEND_WINDOW_S,
        on_reconnect: Callable[[], None] | None = None,
    ):
        self.link = link
        self.sm = sm
        self.site = site  # only this site's rows: another site's hub sends its own
        self.batch = batch
        self.max_inflight_bytes = max_inflight_bytes
        self._wake = threading.Event()
        self._stop = threading.Event()
        # Only the outbox thread touches these.  paho's network thread hands PUBACKs over
        # through a deque and takes no lock of ours: it calls on_publish while holding
        # its own message lock, which publish() takes too, so a lock here would deadlock.
        self._acked: deque[int] = deque()
        self._inflight: dict[int, tuple[int, int]] = {}  # paho mid -> (outbox id, bytes)
        self._inflight_bytes = 0  # payload bytes handed to paho and not yet PUBACKed
        self._sent: set[int] = set()  # outbox ids handed to paho in this process
        self._done: list[int] = []  # outbox ids the broker has
        # The resend window (see the module's docstring), by topic of retained messages.
        self.resend_window_s = resend_window_s
        self.on_reconnect = on_reconnect  # runs on this thread after the window's resend
        self._retained: dict[int, tuple[str, int, bytes, int]] = {}  # mid -> topic, id, ...
        self._latest: dict[str, int] = {}  # topic -> id of its latest message handed to paho
        self._recent: dict[str, tuple[int, bytes, int, float]] = {}  # -> id, payload, qos, ack
        self._generation: int | None = None  # the link's connection the window was sent on
        self._pruned_at = 0.0
        self._kept_bytes = 0
        self.resent = 0
        self.dropped_from_window = 0  # kept messages dropped for MAX_KEPT_BYTES
        self._thread = threading.Thread(target=self._run, name="outbox", daemon=True)
        self.published = 0
        self.delivered = 0
        self.too_large = 0  # rows the broker would not take, dropped (logged)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    def notify(self) -> None:
        """New rows were committed (or the link came up): publish soon."""
        self._wake.set()

    def on_published(self, mid: int) -> None:
        """paho's PUBACK callback (network thread): no locks, see ``__init__``."""
        self._acked.append(mid)
        self._wake.set()

    def pending(self) -> int:
        with self.sm() as session:
            return len(session.scalars(select(Outbox.id).where(Outbox.site == self.site)).all())

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            try:
                self._flush()
            except Exception:
                log.exception("outbox: publishing failed; retrying")
                self._stop.wait(1.0)
        try:
            self._delete_done()
        except Exception:
            log.exception("outbox: could not record delivered messages at shutdown")

    def _delete_done(self) -> None:
        now = time.time()
        acked = False
        while self._acked:
            mid = self._acked.popleft()
            inflight = self._inflight.pop(mid, None)
            if inflight is not None:
                self._done.append(inflight[0])
                self._inflight_bytes -= inflight[1]
            retained = self._retained.pop(mid, None)
            if retained is not None:
                acked = True
                topic, outbox_id, payload, qos = retained
                if self._latest.get(topic) == outbox_id:
                    self._keep(topic, (outbox_id, payload, qos, now))
        if acked and now - self._pruned_at >= 1.0:
            # A PUBACK now proves the broker alive: what it acknowledged a window ago is
            # in its persistence file.
            self._pruned_at = now
            cutoff = now - self.resend_window_s
            for topic, kept in list(self._recent.items()):
                if kept[3] < cutoff:
                    self._unkeep(topic)
        done, self._done = self._done, []
        if done:
            with self.sm.begin() as session:
                session.execute(delete(Outbox).where(Outbox.id.in_(done)))
            self.delivered += len(done)
            self._sent.difference_update(done)

    def _keep(self, topic: str, kept: tuple[int, bytes, int, float]) -> None:
        self._unkeep(topic)
        self._recent[topic] = kept  # dicts keep insertion order: the oldest PUBACK first
        self._kept_bytes += len(kept[1])
        while self._kept_bytes > MAX_KEPT_BYTES and len(self._recent) > 1:
            oldest = next(iter(self._recent))
            self._unkeep(oldest)
            self.dropped_from_window += 1
            log.warning("outbox: %s leaves the resend window early (MAX_KEPT_BYTES)", oldest)

    def _unkeep(self, topic: str) -> None:
        kept = self._recent.pop(topic, None)
        if kept is not None:
            self._kept_bytes -= len(kept[1])

    def _resend_window(self) -> None:
        """After a reconnect: the latest retained message of each topic the broker
        acknowledged within the window, in the order they were first sent."""
        if not self._recent:
            return
        since = max(r[3] for r in self._recent.values()) - self.resend_window_s
        again = sorted((r[0], topic, r[1], r[2]) for topic, r in self._recent.items())
        again = [m for m in again if self._recent[m[1]][3] >= since]
        log.info("outbox: sending %d retained messages again after a reconnect", len(again))
        for outbox_id, topic, payload, qos in again:
            info = self.link.publish(topic, payload, qos=qos, retain=True)
            self._retained[info.mid] = (topic, outbox_id, payload, qos)
            self.resent += 1

    def _flush(self) -> None:
        self._delete_done()
        if not self.link.is_connected:
            return
        generation = self.link.generation
        if generation != self._generation:
            self._generation = generation
            self._resend_window()
            if generation > 1 and self.on_reconnect is not None:
                self.on_reconnect()
        # Rows already handed to paho stay with paho: it resends them itself after a
        # reconnect (persistent session), so sending them again would double them.
        # First only ids and sizes: the payloads are read for the rows that go now.
        with self.sm() as session:
            waiting = session.execute(
                select(Outbox.id, func.length(Outbox.payload))
                .where(Outbox.site == self.site)
                .order_by(Outbox.id)
                .limit(self.batch + len(self._sent))
            ).all()
            chosen: list[int] = []
            budget = self.max_inflight_bytes - self._inflight_bytes
            for outbox_id, size in waiting:
                if outbox_id in self._sent:
                    continue
                # In order, and within the byte budget: a big message (a signed
                # allow-list is ~64 bytes a member) waits for PUBACKs rather than
                # jump the queue.  One message always goes, however big.
                if size > budget and (chosen or self._inflight_bytes):
                    break
                chosen.append(outbox_id)
                budget -= size
            if not chosen:
                return
            rows: list[Any] = session.execute(
                select(Outbox.id, Outbox.topic, Outbox.payload, Outbox.qos, Outbox.retain)
                .where(Outbox.id.in_(chosen))
                .order_by(Outbox.id)
            ).all()
        for row in rows:
            try:
                info = self.link.publish(row.topic, row.payload, qos=row.qos, retain=row.retain)
            except PacketTooLarge as exc:
                # Sent, the broker would drop the hub's connection (ingest stops) and paho
                # would send it again at every reconnect.  The device keeps what it had.
                log.error("outbox: %s; raise broker.max_packet_size", exc)
                self.too_large += 1
                self._done.append(row.id)
                self._sent.add(row.id)
                continue
            if row.retain:
                self._latest[row.topic] = row.id  # an older one is never resent over it
                self._unkeep(row.topic)
            if row.qos == 0:
                self._done.append(row.id)
            else:
                self._inflight[info.mid] = (row.id, len(row.payload))
                self._inflight_bytes += len(row.payload)
                if row.retain:
                    self._retained[info.mid] = (row.topic, row.id, row.payload, row.qos)
            self._sent.add(row.id)
            self.published += 1
