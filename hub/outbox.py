"""Hub-to-device messages that survive a crash.

A rule that decides to tell a device something calls :func:`enqueue` in the same
transaction as the records it writes, so the command exists exactly when the decision
does.  :class:`OutboxPublisher` publishes pending rows and deletes each one when the
broker has acknowledged it (PUBACK).  After a hub restart every remaining row is sent
again: devices treat a repeated command by its ``re``/identity, as CONTRACT.md §2 says.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from hub.config import DEFAULT_SITE
from hub.models import Outbox
from hub.mqtt import MqttLink

log = logging.getLogger(__name__)

# Payload bytes handed to paho and not yet acknowledged.  paho holds each message (and,
# until it is written, its packet) in memory until PUBACK: 200 tools' signed allow-lists
# of 5,000 members are ~64 MB, too much for a Pi Zero at once, so they go a few at a time.
MAX_INFLIGHT_BYTES = 1 << 20


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
        self._thread = threading.Thread(target=self._run, name="outbox", daemon=True)
        self.published = 0
        self.delivered = 0

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
        while self._acked:
            inflight = self._inflight.pop(self._acked.popleft(), None)
            if inflight is not None:
                self._done.append(inflight[0])
                self._inflight_bytes -= inflight[1]
        done, self._done = self._done, []
        if done:
            with self.sm.begin() as session:
                session.execute(delete(Outbox).where(Outbox.id.in_(done)))
            self.delivered += len(done)
            self._sent.difference_update(done)

    def _flush(self) -> None:
        self._delete_done()
        if not self.link.is_connected:
            return
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
            info = self.link.publish(row.topic, row.payload, qos=row.qos, retain=row.retain)
            if row.qos == 0:
                self._done.append(row.id)
            else:
                self._inflight[info.mid] = (row.id, len(row.payload))
                self._inflight_bytes += len(row.payload)
            self._sent.add(row.id)
            self.published += 1
