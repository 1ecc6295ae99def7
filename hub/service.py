"""The hub process: MQTT in, batched transactions, ack after commit, outbox out.

One ingest thread owns the write path.  It takes whatever the broker has delivered
(up to ``ingest.batch_max``), stores it in one transaction with
:func:`hub.ingest.store_batch`, commits, and only then acknowledges those messages, so a
crash at any moment leaves every unacknowledged message with the broker, which sends it
again; the event log's unique identity drops the second copy.  Committing many messages
at once keeps throughput from collapsing to one fsync per message.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from hub import __version__
from hub.config import Config
from hub.contract import HUB_STATUS_TOPIC
from hub.db import make_engine, migrate, session_factory
from hub.ingest import BatchResult, Inbound, store_batch
from hub.mqtt import MqttLink, MqttSettings, Received, Will
from hub.outbox import OutboxPublisher

log = logging.getLogger(__name__)

SUBSCRIPTIONS = ("peershop/dev/+/event", "peershop/dev/+/status")

BatchHook = Callable[[BatchResult], None]


def hub_status(state: str) -> bytes:
    return json.dumps({"state": state, "version": __version__}, separators=(",", ":")).encode()


@dataclass
class IngestCounters:
    batches: int = 0
    messages: int = 0
    events: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    db_errors: int = 0
    internal_errors: int = 0
    last_commit_s: float = 0.0


class Hub:
    """The running hub.  ``start()`` returns once the threads run; ``stop()`` is clean.

    >>> hub = Hub(load_config())          # doctest: +SKIP
    >>> hub.start(); ...; hub.stop()      # doctest: +SKIP
    """

    def __init__(self, cfg: Config, *, engine: Engine | None = None):
        self.cfg = cfg
        self.engine = engine or make_engine(cfg.db.url)
        migrate(self.engine)
        self.sm = session_factory(self.engine)
        self.counters = IngestCounters()
        self.hooks: list[BatchHook] = []
        self.started_at = datetime.now(UTC)
        self.db_error: str | None = None
        self._queue: queue.Queue[Received] = queue.Queue()
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self.link = MqttLink(
            MqttSettings.from_config(cfg.mqtt),
            cfg.mqtt.client_id,
            on_message=self._queue.put,
            on_connected=self._on_connected,
            on_published=self._on_published,
            subscriptions=SUBSCRIPTIONS,
            will=Will(HUB_STATUS_TOPIC, hub_status("offline")),
            manual_ack=True,
            receive_maximum=cfg.ingest.receive_maximum,
        )
        self.outbox = OutboxPublisher(self.link, self.sm)
        self._thread = threading.Thread(target=self._ingest_loop, name="ingest", daemon=True)

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self.outbox.start()
        self._thread.start()
        self.link.start()

    def stop(self, timeout: float = 15.0) -> None:
        """Commit and ack the batch in hand, publish ``offline``, disconnect."""
        self._stop.set()
        self._thread.join(timeout)
        self.outbox.stop()
        if self.link.is_connected:
            info = self.link.publish(HUB_STATUS_TOPIC, hub_status("offline"), qos=1, retain=True)
            try:
                info.wait_for_publish(5)
            except (RuntimeError, ValueError):
                log.warning("could not publish the offline status before disconnecting")
        self.link.stop()
        self.engine.dispose()
        self._stopped.set()

    def wait_ready(self, timeout: float = 10.0) -> bool:
        return self.link.wait_connected(timeout) and self.link.wait_subscribed(timeout)

    def health(self) -> tuple[bool, str]:
        """What ``/healthz`` reports: ingest, database and broker."""
        if not self._thread.is_alive() and not self._stop.is_set():
            return False, "ingest thread is not running"
        if self.db_error:
            return False, f"database: {self.db_error}"
        if not self.link.is_connected:
            return False, f"broker: {self.link.last_error or 'not connected'}"
        return True, "ok"

    # -- callbacks ---------------------------------------------------------------------

    def _on_connected(self, _session_present: bool) -> None:
        self.link.publish(HUB_STATUS_TOPIC, hub_status("online"), qos=1, retain=True)
        self.outbox.notify()

    def _on_published(self, mid: int) -> None:
        self.outbox.on_published(mid)

    # -- the write path ----------------------------------------------------------------

    def _ingest_loop(self) -> None:
        batch_max = self.cfg.ingest.batch_max
        while True:
            try:
                first = self._queue.get(timeout=0.2)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            batch = [first]
            while len(batch) < batch_max:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._commit_until_stored(batch)

    def _commit_until_stored(self, batch: list[Received]) -> None:
        """Store ``batch`` and ack it; on a database outage keep trying, never drop."""
        delay = 0.5
        while True:
            try:
                self._store(batch)
                if self.db_error:
                    log.info("database is back; ingest resumes")
                self.db_error = None
                return
            except (OperationalError, DBAPIError) as exc:
                if not _is_transient(exc):
                    self._store_one_by_one(batch)
                    return
                self.counters.db_errors += 1
                self.db_error = str(exc.orig if exc.orig is not None else exc).splitlines()[0]
                log.error("database write failed (%s); not acking, retrying", self.db_error)
            except Exception:
                log.exception("storing a batch failed; storing its messages one by one")
                self._store_one_by_one(batch)
                return
            if self._stop.wait(delay):
                return  # shutting down: the broker keeps the unacked batch for next time
            delay = min(delay * 2, 10.0)

    def _store(self, batch: list[Received]) -> None:
        inbound = [Inbound(m.topic, m.payload, m.received_at) for m in batch]
        started = time.perf_counter()
        with self.sm.begin() as session:
            result = store_batch(session, inbound)
        self.counters.last_commit_s = time.perf_counter() - started
        self.link.ack(batch)
        self._count(result, len(batch))
        self._run_hooks(result)

    def _store_one_by_one(self, batch: list[Received]) -> None:
        """A batch that fails for a reason other than the database: isolate the culprit."""
        for msg in batch:
            try:
                self._store([msg])
            except Exception as exc:
                self.counters.internal_errors += 1
                log.exception("message on %s could not be stored", msg.topic)
                self._dead_letter_internal(msg, exc)

    def _dead_letter_internal(self, msg: Received, exc: Exception) -> None:
        from hub.models import DeadLetter

        try:
            with self.sm.begin() as session:
                session.add(
                    DeadLetter(
                        received_at=msg.received_at,
                        topic=msg.topic[:300],
                        device_id=None,
                        reason=f"internal error: {type(exc).__name__}: {exc}"[:500],
                        payload=msg.payload[:1024],
                        size=len(msg.payload),
                    )
                )
            self.link.ack([msg])
        except Exception:
            log.exception("could not even dead-letter a message; leaving it unacked")

    def _count(self, result: BatchResult, n: int) -> None:
        c = self.counters
        c.batches += 1
        c.messages += n
        c.events += len(result.new_events)
        c.duplicates += result.duplicates
        c.dead_letters += len(result.dead_letters)
        for topic, reason in result.dead_letters:
            log.warning("dead letter on %s: %s", topic, reason)

    def _run_hooks(self, result: BatchResult) -> None:
        for hook in self.hooks:
            try:
                hook(result)
            except Exception:
                log.exception("batch hook %s failed", getattr(hook, "__name__", hook))


def _is_transient(exc: DBAPIError) -> bool:
    """Database trouble that waiting fixes (locked, full disk, connection lost)."""
    if exc.connection_invalidated:
        return True
    text = str(exc.orig or exc).lower()
    transient = (
        "locked",
        "disk",
        "full",
        "i/o",
        "readonly",
        "read-only",
        "unable to open",
        "connection",
        "server closed",
        "terminating",
        "could not",
    )
    return isinstance(exc, OperationalError) or any(word in text for word in transient)
