"""The hub process: MQTT in, rules in memory, batched transactions, ack after commit.

Two paths, so that a decision never waits on a disk write:

- **Decide** (MQTT network thread, in arrival order): validate the message, drop an
  identity already seen (:class:`~hub.rules.seen.SeenIndex`), run the shop rules
  (:class:`~hub.rules.engine.ShopEngine`) in memory and publish what they say at once: the
  reply to a badge, tool states, plug switching.
- **Store** (ingest thread): take whatever has been decided (up to
  ``ingest.batch_max``), store the events *and the records the rules made from them* in
  one transaction, commit, and only then acknowledge those messages.  A crash at any
  moment leaves every unacknowledged message with the broker, which sends it again; the
  restarted hub rebuilds its state from the database, so the same event never makes a
  second record.  Committing many messages at once keeps throughput from collapsing to
  one fsync per message.

A timer thread runs the rules' clock (timeouts, forgotten sign-outs), notices shop
changes made by other processes (``peershop load``, ``peershop enrol``) and re-issues
the signed offline allow-lists when they change.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from hub import __version__
from hub.admin.sites import other_site_devices
from hub.config import Config
from hub.contract.allowlist import load_or_create_key
from hub.contract.messages import HUB_STATUS_TOPIC, TOPIC_PREFIX, DeviceEvent, PowerRange
from hub.contract.mqtt import MqttLink, Received, Will
from hub.errors import ContractError
from hub.ledger.closing import close_due_periods
from hub.ledger.reservations import winning_reservations
from hub.plugs.decode import (
    PlugMemory,
    PlugProblem,
    parse_plug,
    plug_subscriptions,
    status_request,
)
from hub.rules.records import DecisionRec, Message, Outcome, Record, ShopData
from hub.rules.sessions import ToolStateChanged
from hub.service.homeassistant import (
    Discovery,
    birth_topic,
    config_filter,
    is_config_topic,
)
from hub.store.db import make_engine, migrate, session_factory
from hub.store.db_lock import hold_for_hub
from hub.store.ingest import NOTHING, BatchResult, Inbound, Parsed, parse_inbound, store_parsed
from hub.store.models import DeadLetter, Event, HubStart
from hub.store.outbox import OutboxPublisher, enqueue
from hub.store.queries import load_seen
from hub.store.shop_store import (
    issue_allowlists,
    load_shop,
    resume,
    shop_version,
    stored_resume,
    write_records,
)

log = logging.getLogger(__name__)

SUBSCRIPTIONS = ("peershop/dev/+/event", "peershop/dev/+/status")
TICK_S = 1.0
BATCH_LINGER_S = 0.01
RELOAD_CHECK_S = 2.0
PERIOD_JOBS_S = 30.0

BatchHook = Callable[[BatchResult], None]


def hub_status(state: str) -> bytes:
    return json.dumps({"state": state, "version": __version__}, separators=(",", ":")).encode()


class Histogram:
    """Counts of observations per upper bound (Prometheus' cumulative ``le`` buckets).

    The hub keeps its own, so ``hub/`` needs no metrics library; ``web/metrics.py``
    exports them.  Observations come from one thread each, so no lock is needed."""

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
                break
        else:
            self.counts[-1] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """``[(le, count), ...]`` ending with ``("+Inf", count)``."""
        total, out = 0, []
        for bound, n in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            total += n
            out.append((bound, total))
        return out


LATENCY_BOUNDS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)
COMMIT_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


@dataclass
class IngestCounters:
    batches: int = 0
    messages: int = 0
    events: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    db_errors: int = 0
    internal_errors: int = 0
    decisions: int = 0
    other_site: int = 0  # messages of devices at another site: their own hub's
    pending_peak: int = 0  # most decided messages waiting for their commit at once
    reading_paused: int = 0  # times the MQTT thread waited for ingest (ingest.max_pending)
    last_commit_s: float = 0.0
    # from a badge's arrival to its reply handed to the broker
    decision_seconds: Histogram = field(default_factory=lambda: Histogram(LATENCY_BOUNDS))
    commit_seconds: Histogram = field(default_factory=lambda: Histogram(COMMIT_BOUNDS))


@dataclass
class Work:
    """A decided message (or a timer's records) on its way to the database."""

    received: Received | None = None
    inbound: Inbound | None = None
    parsed: Parsed = NOTHING
    records: list[Record] = field(default_factory=list)
    durable: list[Message] = field(default_factory=list)  # go through the outbox


class Hub:
    """The running hub.  ``start()`` returns once the threads run; ``stop()`` is clean.

    >>> hub = Hub(load_config())          # doctest: +SKIP
    >>> hub.start(); ...; hub.stop()      # doctest: +SKIP
    """

    def __init__(self, cfg: Config, *, engine: Engine | None = None):
        self.cfg = cfg
        # Held until stop(): `peershop restore` refuses while any hub holds it.
        self.db_lock = hold_for_hub(cfg.db.url, cfg.site.id)
        self.discovery = Discovery(cfg.homeassistant.prefix)  # Home Assistant's configs
        try:
            self._setup(cfg, engine)
        except BaseException:
            self.db_lock.release()
            raise

    def _setup(self, cfg: Config, engine: Engine | None) -> None:
        self.engine = engine or make_engine(cfg.db.url)
        migrate(self.engine)
        self.sm = session_factory(self.engine)
        self.counters = IngestCounters()
        self.hooks: list[BatchHook] = []
        self.started_at = datetime.now(UTC)
        self.db_error: str | None = None
        self.empty_shop: str | None = None  # why the shop is empty, while it is
        self._queue: queue.Queue[Work] = queue.Queue()
        self._stop = threading.Event()
        self._rules_lock = threading.Lock()
        ingest = cfg.ingest
        self.power_range = PowerRange(ingest.min_power_w, ingest.max_power_w, ingest.max_wh_total)
        self.plug_memory = PlugMemory()  # what each plug last said (Shelly partial updates)
        self._boot_rules()
        self.link = MqttLink(
            cfg.mqtt.settings(),
            cfg.mqtt.client_id,
            on_message=self._on_message,
            on_connected=self._on_connected,
            on_published=self._on_published,
            subscriptions=(
                *SUBSCRIPTIONS,
                *plug_subscriptions(self.rules.data),
                *self._ha_subscriptions(),
            ),
            will=Will(HUB_STATUS_TOPIC, hub_status("offline")),
            manual_ack=True,
            receive_maximum=cfg.ingest.receive_maximum,
        )
        self.outbox = OutboxPublisher(
            self.link, self.sm, site=cfg.site.id, on_reconnect=self._restate_tools
        )
        self._thread = threading.Thread(target=self._ingest_loop, name="ingest", daemon=True)
        self._timer = threading.Thread(target=self._timer_loop, name="rules-clock", daemon=True)

    # -- start-up --------------------------------------------------------------------

    def _boot_rules(self) -> None:
        """Load the shop, rebuild live state from the database, close what was open."""
        now = datetime.now(UTC)
        self.signing_key = load_or_create_key(self.cfg.site.data_dir / "hub-signing.key")
        site = self.cfg.site.id
        with self.sm() as session:
            data = self._load_shop(session)
            self.seen = load_seen(session)
            self._shop_version = shop_version(session)
        with self.sm.begin() as session:
            # The log as this start finds it: a rebuild resumes at the same point, from
            # the same rule (hub/admin/rebuild.py), so it makes the same records.
            last_event = session.scalar(select(func.max(Event.id))) or 0
            self.rules, out = resume(
                session, data, stored_resume(session, site), now, last_event, seen=self.seen
            )
            write_records(session, out.records)
            session.add(HubStart(at=now, after_event_id=last_event, version=__version__, site=site))
            for message in out.messages + self.rules.publish_states(now):
                self._enqueue(session, message)
            issue_allowlists(session, data, self.signing_key, now, site=self.cfg.site.id)

    def _load_shop(self, session: Session) -> ShopData:
        """This site's tools and stations, the whole shop's members and trainings; and
        the devices of other sites, whose messages this hub leaves to their own hub."""
        site = self.cfg.site.id
        self._other_site_devices = other_site_devices(session, site)
        data = load_shop(session, self.cfg.site.timezone, self.cfg.presence.auto_signout, site)
        if not data.tools and not data.stations and self._other_site_devices:
            # a central view's hub, or a site.id the shop file does not use (a typo?)
            log.info("site %s runs no tools or stations; the shop file has them elsewhere", site)
        self._note_empty_shop(data)
        return data

    def _note_empty_shop(self, data: ShopData) -> None:
        """A database without members denies every badge: most likely ``db.url`` names
        the wrong database (a typo made a new one), or the shop file was never loaded.
        Say so loudly, in the log and on ``/healthz``, until members arrive."""
        was = self.empty_shop
        if data.members:
            self.empty_shop = None
            if was:
                log.info("the shop has %d members now: badges are decided again", len(data.members))
            return
        where = self.engine.url.render_as_string(hide_password=True)
        self.empty_shop = (
            f"the database holds no members, so every badge is denied: is db.url right "
            f"({where})? Load the shop file with `peershop load FILE`"
        )
        if not was:
            log.error("%s", self.empty_shop)

    def _enqueue(self, session: Session, message: Message) -> None:
        enqueue(
            session, message.topic, message.payload, retain=message.retain, site=self.cfg.site.id
        )

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self.outbox.start()
        self._thread.start()
        self._timer.start()
        self.link.start()

    def stop(self, timeout: float = 15.0) -> None:
        """Commit and ack the batch in hand, publish ``offline``, disconnect."""
        self._stop.set()
        self._timer.join(timeout)
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
        self.db_lock.release()

    def tool_states(self, now: datetime) -> dict[str, ToolStateChanged]:
        """Every tool's live state, read consistently (for the web view)."""
        with self._rules_lock:
            return {tool: st.snapshot(now) for tool, st in list(self.rules.tools.items())}

    def present(self) -> dict[str, datetime]:
        """Who is signed in to the space now, and since when."""
        with self._rules_lock:
            return dict(self.rules.presence.present)

    @property
    def ingest_alive(self) -> bool:
        """The write path runs (what the systemd watchdog vouches for)."""
        return self._thread.is_alive()

    def wait_ready(self, timeout: float = 10.0) -> bool:
        return self.link.wait_connected(timeout) and self.link.wait_subscribed(timeout)

    def health(self) -> tuple[bool, str]:
        """What ``/healthz`` reports: ingest, database, broker, and a shop with members."""
        if not self._thread.is_alive() and not self._stop.is_set():
            return False, "ingest thread is not running"
        if self.db_error:
            return False, f"database: {self.db_error}"
        if not self.link.is_connected:
            return False, f"broker: {self.link.last_error or 'not connected'}"
        if self.empty_shop:
            return False, self.empty_shop
        return True, "ok"

    # -- callbacks ---------------------------------------------------------------------

    def _on_connected(self, _session_present: bool) -> None:
        self.link.publish(HUB_STATUS_TOPIC, hub_status("online"), qos=1, retain=True)
        self._announce_to_home_assistant()
        self.outbox.notify()

    def _restate_tools(self) -> None:
        """After a reconnect (the outbox's thread, once it has resent its own retained
        messages): every tool's state again.  A broker killed outright loses the retained
        states it acknowledged since its last autosave; these, taken now, are the latest."""
        with self._rules_lock:
            states = self.rules.publish_states(datetime.now(UTC))
        for message in states:
            self._send(message)

    # -- Home Assistant ---------------------------------------------------------------------

    def _ha_subscriptions(self) -> list[str]:
        ha = self.cfg.homeassistant
        # the configs left on the broker too, so those of a tool now gone are taken back
        return [birth_topic(ha.prefix), config_filter(ha.prefix)] if ha.discovery else []

    def _announce_to_home_assistant(self) -> None:
        ha = self.cfg.homeassistant
        if not ha.discovery:
            return
        for message in self.discovery.announce(self.rules.data):
            self._send(message)

    def _on_published(self, mid: int) -> None:
        self.outbox.on_published(mid)

    # -- the decide path (network thread) ---------------------------------------------------

    def _wait_for_room(self) -> None:
        """Hold paho's network thread while ``ingest.max_pending`` decided messages wait
        for their commit.  The Receive Maximum should bound them, but Mosquitto 2.0.11
        sends a whole Receive Maximum more after each PUBACK, so a backlog at the broker
        (a hub that was down an hour) would otherwise flow into this process's memory
        until it is gone.  Not reading leaves it in the broker (TCP pushes back)."""
        limit = self.cfg.ingest.max_pending
        if self._queue.qsize() < limit:
            return
        self.counters.reading_paused += 1
        while self._queue.qsize() >= limit and not self._stop.is_set():
            self._stop.wait(0.005)

    def _on_message(self, msg: Received) -> None:
        self._wait_for_room()
        started = time.perf_counter()
        inbound = Inbound(msg.topic, msg.payload, msg.received_at, msg.retain)
        if self.cfg.homeassistant.discovery and msg.topic == birth_topic(
            self.cfg.homeassistant.prefix
        ):
            if msg.payload.strip() == b"online":  # Home Assistant (re)started
                self._announce_to_home_assistant()
            self._queue.put(Work(msg))  # nothing to store; acked with its batch
            return
        if self.cfg.homeassistant.discovery and is_config_topic(
            self.cfg.homeassistant.prefix, msg.topic
        ):
            for message in self.discovery.found(msg.topic, msg.payload, self.rules.data):
                self._send(message)
            self._queue.put(Work(msg))  # nothing to store; acked with its batch
            return
        with self._rules_lock:
            parsed, outcome = self._decide(inbound)
        if outcome.reply is not None:
            self._send(outcome.reply)
            self.counters.decisions += 1
            self.counters.decision_seconds.observe(time.perf_counter() - started)
        for message in outcome.messages:
            self._send(message)
        # A plug's message may speak for several channels: all but the last go first, so
        # the message is acked with the last, once every one of them is stored.
        for more in parsed[:-1]:
            self._queue.put(Work(None, inbound, more))
        last = parsed[-1] if parsed else NOTHING
        self._queue.put(Work(msg, inbound, last, outcome.records))
        pending = self._queue.qsize()
        if pending > self.counters.pending_peak:
            self.counters.pending_peak = pending

    def _decide(self, inbound: Inbound) -> tuple[list[Parsed], Outcome]:
        now = inbound.received_at
        if inbound.topic.startswith(TOPIC_PREFIX):
            parsed = parse_inbound(inbound, self.power_range)
            if parsed.device_id in self._other_site_devices:
                # Another site's device, heard over a bridge: its own hub stores it and
                # runs its rules, so a restart of that hub still finds it unacked.
                self.counters.other_site += 1
                return [], Outcome()
            return [parsed], self._run_rules(parsed, now)
        try:
            plugs = parse_plug(
                inbound.topic, inbound.payload, self.rules.data, self.power_range, self.plug_memory
            )
        except ContractError as exc:
            return [Parsed(error=str(exc))], Outcome()
        # none: a plug not bound to any tool (not ours), or a message with no reading
        out = Outcome()
        every = []
        asked = set()
        for plug in plugs:
            if isinstance(plug, PlugProblem):
                every.append(Parsed(plug.device_id, error=plug.reason))
                continue
            if isinstance(plug, DeviceEvent):
                parsed = Parsed(plug.device_id, event=plug)
            else:
                parsed = Parsed(plug.device_id, status=plug)
                # online: ask for its whole status now (once per plug, not per channel)
                request = status_request(self.rules.data, plug)
                if request is not None and request not in asked:
                    asked.add(request)
                    out.messages.append(Message(*request))
            every.append(parsed)
            out.extend(self._run_rules(parsed, now))
        return every, out

    def _run_rules(self, parsed: Parsed, now: datetime) -> Outcome:
        try:
            if parsed.event is not None:
                ev = parsed.event
                if not self.seen.add(ev.device_id, ev.boot, ev.seq):
                    return Outcome()  # stored already: its records exist too
                return self.rules.on_event(ev, now)
            if parsed.status is not None:
                return self.rules.on_status(parsed.status, now)
        except Exception:
            # A rule failing on one event must not stop the shop: the event is still
            # stored (and can be replayed with `peershop rebuild` once the rule is fixed).
            self.counters.internal_errors += 1
            log.exception("rules failed on %s", parsed.device_id)
        return Outcome()

    def _send(self, message: Message) -> None:
        try:
            self.link.publish(
                message.topic, message.payload, qos=message.qos, retain=message.retain
            )
        except Exception:
            log.exception("could not publish to %s", message.topic)

    # -- the rules' clock ------------------------------------------------------------------

    def _timer_loop(self) -> None:
        next_reload = time.monotonic() + RELOAD_CHECK_S
        next_period_jobs = time.monotonic()
        while not self._stop.wait(TICK_S):
            try:
                now = datetime.now(UTC)
                with self._rules_lock:
                    outcome = self.rules.tick(now)
                for message in outcome.messages:
                    self._send(message)
                if outcome.records:
                    self._queue.put(Work(records=outcome.records))
                if time.monotonic() >= next_reload:
                    next_reload = time.monotonic() + RELOAD_CHECK_S
                    self._reload_if_changed(now)
                if time.monotonic() >= next_period_jobs:
                    next_period_jobs = time.monotonic() + PERIOD_JOBS_S
                    self.run_period_jobs(now)
            except Exception:
                log.exception("the rules' clock failed; it keeps running")

    def run_period_jobs(self, now: datetime) -> None:
        """Close the periods that have ended and clear the slot auctions that are due;
        keep the winning reservations in memory for the access rules."""
        with self.sm.begin() as session:
            closed = close_due_periods(session, self.cfg, now)
            enforced = [t for t, cfg in self.rules.data.tools.items() if cfg.scarce is not None]
            won = {tool: winning_reservations(session, tool, now) for tool in enforced}
        with self._rules_lock:
            self.rules.set_reservations(won)
        if closed:
            log.info("closed %d period(s); task weights for the next one are posted", len(closed))
            self.reload(now)  # the posted task weights changed

    def _reload_if_changed(self, now: datetime) -> None:
        with self.sm() as session:
            version = shop_version(session)
        if version == self._shop_version:
            return
        self.reload(now)

    def reload(self, now: datetime | None = None) -> None:
        """Re-read members, badges, trainings and tools; re-issue allow-lists."""
        now = now or datetime.now(UTC)
        with self.sm() as session:
            self._shop_version = shop_version(session)
            data = self._load_shop(session)
        with self._rules_lock:
            old_topics = set(plug_subscriptions(self.rules.data))
            outcome = self.rules.set_data(data, now)
            states = self.rules.publish_states(now)
        self.link.add_subscriptions(sorted(set(plug_subscriptions(data)) - old_topics))
        for message in outcome.messages + states:
            self._send(message)
        self._announce_to_home_assistant()
        if outcome.records:
            self._queue.put(Work(records=outcome.records))
        with self.sm.begin() as session:
            issued = issue_allowlists(session, data, self.signing_key, now, site=self.cfg.site.id)
        if issued:
            log.info("allow-lists re-issued for %s", ", ".join(issued))
            self.outbox.notify()

    # -- the store path ----------------------------------------------------------------------

    def _ingest_loop(self) -> None:
        batch_max = self.cfg.ingest.batch_max
        while not self._stop.is_set():
            try:
                first = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            batch = [first]
            # Linger a moment for more, so one fsync covers many messages (only the acks
            # wait: every reply has gone out already).  Sleep rather than wait on the
            # queue, which would wake this thread for every message that arrives.
            if self._queue.qsize() < batch_max:
                time.sleep(BATCH_LINGER_S)
            while len(batch) < batch_max:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._commit_until_stored(batch)
        # Stopping: what is still queued was never acked, so the broker sends it again
        # to the next hub; only the batch in hand was committed and acked above.

    def _commit_until_stored(self, batch: list[Work]) -> None:
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

    def _store(self, batch: list[Work]) -> None:
        items = [(w.inbound, w.parsed) for w in batch if w.inbound is not None]
        records = [r for w in batch for r in w.records]
        started = time.perf_counter()
        with self.sm.begin() as session:
            result = store_parsed(session, items)
            if records:
                write_records(session, records)
            for w in batch:
                for message in w.durable:
                    self._enqueue(session, message)
        self.counters.last_commit_s = time.perf_counter() - started
        self.counters.commit_seconds.observe(self.counters.last_commit_s)
        self.link.ack([w.received for w in batch if w.received is not None])
        self._count(result, len(items))
        self._log_stored(result, records)
        self._run_hooks(result)

    def _log_stored(self, result: BatchResult, records: list[Record]) -> None:
        """One line per event (DEBUG) and per badge decision (INFO), named by identity."""
        if log.isEnabledFor(logging.DEBUG):
            for stored in result.new_events:
                ev = stored.event
                log.debug(
                    "event %s/%d/%d %s stored as #%d",
                    ev.device_id,
                    ev.boot,
                    ev.seq,
                    ev.type,
                    stored.id,
                )
        for rec in records:
            if isinstance(rec, DecisionRec):
                log.info(
                    "badge %s/%d/%d uid %s at %s: %s%s%s%s",
                    rec.device_id,
                    rec.boot,
                    rec.seq,
                    rec.uid,
                    rec.tool_id or rec.station or "?",
                    rec.action,
                    f" ({rec.reason})" if rec.reason else "",
                    f" for {rec.member}" if rec.member else "",
                    " [replayed]" if rec.replay else "",
                )

    def _store_one_by_one(self, batch: list[Work]) -> None:
        """A batch that fails for a reason other than the database: isolate the culprit."""
        for work in batch:
            try:
                self._store([work])
            except Exception as exc:
                self.counters.internal_errors += 1
                log.exception(
                    "message on %s could not be stored", work.inbound and work.inbound.topic
                )
                self._dead_letter_internal(work, exc)

    def _dead_letter_internal(self, work: Work, exc: Exception) -> None:
        if work.inbound is None:
            log.error("records of the rules' clock were lost: %s", work.records)
            return
        msg = work.inbound
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
            if work.received is not None:
                self.link.ack([work.received])
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
