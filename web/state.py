"""What the web layer shares between requests: the database, the hub, the live feed."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from flask import g
from sqlalchemy.orm import Session, sessionmaker

from hub.config import DEFAULT_SITE, load_config
from hub.ledger.board_queries import change_marks
from hub.store.floor_queries import (
    ToolRow,
    devices_online,
    member_names,
    open_sessions,
    tool_rows,
)

if TYPE_CHECKING:
    from hub.config import Config
    from hub.service.service import Hub
    from hub.store.ingest import BatchResult

log = logging.getLogger(__name__)

POLL_S = 0.2  # how often the live feed compares tool states (well inside the 1 s promise)
BOARD_POLL_S = 0.5  # how often it looks for board and period changes while a page watches
BOARD_TOPICS = frozenset({"tasks", "period"})


@contextmanager
def committing(session: Session) -> Iterator[None]:
    """Commit what the block changed, or roll it back (the request's session is open)."""
    try:
        yield
        session.commit()
    except BaseException:
        session.rollback()
        raise


def iso(at: datetime | None) -> str | None:
    if at is None:
        return None
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class ToolView:
    """A tool's state as ``peershop/tool/{tool}/state`` carries it, plus id and name."""

    id: str
    name: str
    state: str
    member: str | None  # the member's display name (personal data)
    handle: str | None
    since: datetime | None
    w: float | None
    site: str = DEFAULT_SITE  # the site (building) the tool is at

    def public(self, with_names: bool) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "site": self.site,
            "state": self.state,
            "member": self.member if with_names else None,
            "since": iso(self.since),
            "w": None if self.w is None else round(self.w, 1),
        }


class WebState:
    """Per app: the session factory, the optional live hub and the live feed."""

    def __init__(self, hub: Hub | None, sm: sessionmaker[Session], cfg: Config | None = None):
        self.hub = hub
        self.sm = sm
        self.feed = LiveFeed(self) if hub is not None else None
        self._cfg = cfg
        # (recent closed periods, each task's weights in them): see web.tasks.weight_history
        self.weight_history: tuple[Any, dict[str, tuple[float, ...]]] | None = None

    @property
    def cfg(self) -> Config:
        """The hub's configuration (periods, time zone); defaults without a hub."""
        if self.hub is not None:
            return self.hub.cfg
        if self._cfg is None:
            self._cfg = load_config(env={}, search=())
        return self._cfg

    def changed(self) -> None:
        """This request changed the task board or a period: open pages hear of it now
        instead of at the feed's next look (a no-op without a live hub)."""
        if self.feed is not None:
            self.feed.nudge()

    # -- a database session per request ----------------------------------------------

    def db(self) -> Session:
        if "db" not in g:
            g.db = self.sm()
        return g.db

    def teardown(self, _exc: BaseException | None) -> None:
        session = g.pop("db", None)
        if session is not None:
            session.close()

    # -- tool states ---------------------------------------------------------------------

    def tool_views(self, session: Session, now: datetime | None = None) -> list[ToolView]:
        """Every tool's state, by site: live from the rules for the tools of the hub's own
        site when a hub runs, else (and for other sites' tools) from the database."""
        now = now or datetime.now(UTC)
        tools = tool_rows(session)
        live = self.live_snapshots(now) if self.hub is not None else None
        if live is not None:
            here = self.cfg.site.id
            elsewhere = [t for t in tools if t.site != here]
            stored = {v.id: v for v in self._stored_views(session, elsewhere)}
            names = member_names(session, [s.member for s in live.values() if s.member])
            views = []
            for tool_id, name, locked, site in tools:
                if tool_id in stored:
                    views.append(stored[tool_id])
                    continue
                snap = live.get(tool_id)
                if snap is None:
                    views.append(
                        ToolView(
                            tool_id,
                            name,
                            "locked" if locked else "free",
                            None,
                            None,
                            None,
                            None,
                            site,
                        )
                    )
                    continue
                views.append(
                    ToolView(
                        tool_id,
                        name,
                        snap.state,
                        snap.name or names.get(snap.member or ""),
                        snap.member,
                        snap.since,
                        snap.w,
                        site,
                    )
                )
            return views
        return self._stored_views(session, tools)

    def live_snapshots(self, now: datetime) -> dict[str, Any]:
        hub = self.hub
        assert hub is not None
        # The rules' lock is held for microseconds here; it keeps set_data() from
        # swapping the tool table while we read it.
        return hub.tool_states(now)

    def _stored_views(self, session: Session, tools: list[ToolRow]) -> list[ToolView]:
        """Without a hub (or at another site): locked, in use (an open session), offline
        (all devices), free."""
        open_now = open_sessions(session)
        names = member_names(session, [s.member for s in open_now.values() if s.member])
        devices = devices_online(session)
        views = []
        for tool_id, name, locked, site in tools:
            open_row = open_now.get(tool_id)
            if locked:
                views.append(ToolView(tool_id, name, "locked", None, None, None, None, site))
            elif open_row is not None:
                views.append(
                    ToolView(
                        tool_id,
                        name,
                        "in_use",
                        names.get(open_row.member or "", open_row.member),
                        open_row.member,
                        open_row.start,
                        None,
                        site,
                    )
                )
            elif tool_id in devices and not any(devices[tool_id]):
                views.append(ToolView(tool_id, name, "offline", None, None, None, None, site))
            else:
                views.append(ToolView(tool_id, name, "free", None, None, None, None, site))
        return views


class LiveFeed:
    """Server-sent events for the floor, the task board and the period page, fed by the hub.

    Tool states come from the rules in memory (``hub.rules``), compared every
    ``POLL_S`` and right after each committed batch (``hub.hooks``): that catches
    changes made by events, by the rules' clock (timeouts) and by reloads (locks) alike,
    with no second MQTT connection to keep alive.  Each subscriber gets a bounded
    queue; one that cannot keep up loses its oldest messages, never blocks the hub.

    The board and the periods live in the database, where anyone may change them, so
    while a page subscribed to ``tasks`` or ``period`` is open the feed compares
    :func:`change_marks` every ``BOARD_POLL_S``, and at once when this process changed
    something (:meth:`nudge`).  A change becomes one small event (``tasks`` or
    ``period``); the pages then fetch their fragment.  One check per process, however
    many pages watch.
    """

    def __init__(self, state: WebState):
        self.state = state
        self._subscribers: dict[
            queue.Queue[tuple[str, dict[str, Any]] | None], frozenset[str] | None
        ] = {}
        self._marks: dict[str, tuple[Any, ...]] | None = None
        self._board_due = 0.0
        self._nudged = threading.Event()
        self._board_lock = threading.Lock()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._last: dict[str, tuple[Any, ...]] = {}
        self._thread: threading.Thread | None = None
        self.sent = 0

    def start(self) -> None:
        hub = self.state.hub
        assert hub is not None
        if self._thread is not None:
            return
        now = _now()
        self._last = {k: self._key(v, now) for k, v in self.state.live_snapshots(now).items()}
        hub.hooks.append(self.on_batch)
        self._thread = threading.Thread(target=self._run, name="web-live", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            for q in self._subscribers:
                _put(q, None)
        hub = self.state.hub
        if hub is not None and self.on_batch in hub.hooks:
            hub.hooks.remove(self.on_batch)

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    # -- subscribers -----------------------------------------------------------------

    def subscribe(
        self, topics: frozenset[str] | None = None
    ) -> queue.Queue[tuple[str, dict[str, Any]] | None]:
        """A queue of ``(event, data)``: every event, or only those named in ``topics``."""
        q: queue.Queue[tuple[str, dict[str, Any]] | None] = queue.Queue(maxsize=500)
        if topics and topics & BOARD_TOPICS:
            with self._board_lock:  # the first watcher: take the marks before it listens,
                if self._marks is None:  # so that a change right after is not missed
                    with self.state.sm() as session:
                        self._marks = change_marks(session)
                    self._board_due = time.monotonic() + BOARD_POLL_S
        with self._lock:
            self._subscribers[q] = topics
        return q

    def unsubscribe(self, q: queue.Queue[tuple[str, dict[str, Any]] | None]) -> None:
        with self._lock:
            self._subscribers.pop(q, None)

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subscribers)

    def publish(self, event: str, data: dict[str, Any]) -> None:
        with self._lock:
            targets = [
                q for q, topics in self._subscribers.items() if not topics or event in topics
            ]
        for q in targets:
            _put(q, (event, data))
        self.sent += 1

    def nudge(self) -> None:
        """This process changed the board or a period: look for changes now."""
        self._nudged.set()
        self._wake.set()

    @property
    def board_watched(self) -> bool:
        with self._lock:
            return any(t and t & BOARD_TOPICS for t in self._subscribers.values())

    # -- sources ---------------------------------------------------------------------

    def on_batch(self, result: BatchResult) -> None:
        """A batch committed (ingest thread): wake the comparer, tell floors to refresh."""
        self._wake.set()
        events = [
            {"device": s.event.device_id, "type": s.event.type, "at": iso(s.received_at)}
            for s in result.new_events[-20:]
        ]
        if events or result.statuses or result.dead_letters or result.new_devices:
            self.publish(
                "batch",
                {
                    "events": events,
                    "statuses": len(result.statuses),
                    "dead_letters": len(result.dead_letters),
                    "new_devices": list(result.new_devices),
                },
            )

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(POLL_S)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.compare()
            except Exception:
                log.exception("live feed: comparing tool states failed; it keeps running")
            try:
                self.check_board()
            except Exception:
                log.exception("live feed: reading the board's marks failed; it keeps running")

    def check_board(self) -> None:
        """Publish ``tasks`` and ``period`` for the marks that changed since the last check;
        only while a page watches, and at most every ``BOARD_POLL_S`` unless nudged."""
        with self._board_lock:
            if not self.board_watched:
                self._marks = None  # nobody watches: no queries, and start afresh
                self._nudged.clear()
                return
            now = time.monotonic()
            if now < self._board_due and not self._nudged.is_set() and self._marks is not None:
                return
            self._nudged.clear()
            self._board_due = now + BOARD_POLL_S
            with self.state.sm() as session:
                marks = change_marks(session)
            old, self._marks = self._marks, marks
        if old is None:
            return
        at = iso(_now())
        for topic in sorted(BOARD_TOPICS):
            if marks[topic] != old[topic]:
                self.publish(topic, {"at": at})

    def compare(self) -> None:
        now = _now()
        snaps = self.state.live_snapshots(now)
        changed = {}
        for tool_id, snap in snaps.items():
            key = self._key(snap, now)
            old = self._last.get(tool_id)
            if old == key:
                continue
            self._last[tool_id] = key
            changed[tool_id] = (old, snap)
        for tool_id, (old, snap) in changed.items():
            old_member = old[1] if old else None
            if old_member != snap.member:
                if old_member:
                    self.publish("session", {"tool": tool_id, "event": "end", "member": old_member})
                if snap.member:
                    self.publish(
                        "session", {"tool": tool_id, "event": "start", "member": snap.member}
                    )
            self.publish(
                "tool",
                {
                    "tool": tool_id,
                    "state": snap.state,
                    "member": snap.name,
                    "handle": snap.member,
                    "since": iso(snap.since),
                    "w": None if snap.w is None else round(snap.w, 1),
                },
            )

    @staticmethod
    def _key(snap: Any, now: datetime) -> tuple[Any, ...]:
        # Watts move all the time; a change of a tenth or more is worth a message.
        w = None if snap.w is None else round(snap.w / 10.0)
        # A tool that has not changed state since the hub started reports ``since`` as
        # the ``now`` it was asked at: that is no change (else every such tool went to
        # every screen five times a second).
        since = None if snap.since == now else snap.since
        return (snap.state, snap.member, since, w)


def _put(q: queue.Queue[Any], item: Any) -> None:
    while True:
        try:
            q.put_nowait(item)
            return
        except queue.Full:
            try:
                q.get_nowait()  # drop the oldest: a slow screen misses, the hub never waits
            except queue.Empty:
                pass


def _now() -> datetime:
    return datetime.now(UTC)
