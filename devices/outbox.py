"""The agent's durable state: boot counter, the event outbox, the last allow-list.

One SQLite file in the agent's state folder, in WAL mode with ``synchronous=FULL``, so a
committed row survives a power cut.  An event is written here *before* it is published
and marked acknowledged when the broker has PUBACKed it: whatever a power cut, a SIGKILL
or a broker outage interrupts is still here at the next start and is sent again with
``replay: true`` (docs/device-protocol.md).

A PUBACK does not mean the event is safe: Mosquitto PUBACKs what it holds in memory and
writes its persistence file only every ``autosave_interval``, so a broker killed outright
loses what it took in since its last save.  An acknowledged event therefore stays here
for a resend window and is sent again after every reconnect (:meth:`AgentStore.recent`).
The window is counted from the *latest* PUBACK, not from the clock: a later PUBACK proves
the broker was alive then, so an event acknowledged a window before it (longer than the
broker's autosave interval) is in the broker's file, and :meth:`AgentStore.prune` deletes
it.  A broker that dies unnoticed (a power cut, seen only when keepalive runs out) sends no
PUBACKs, so nothing it may have lost is pruned meanwhile, however long the outage.
Duplicates that the resends cause are harmless: the hub stores each ``(id, boot, seq)``
once.

>>> import tempfile, pathlib
>>> store = AgentStore(pathlib.Path(tempfile.mkdtemp()) / "agent.db")
>>> store.next_boot(), store.next_boot()
(1, 2)
>>> store.add(2, 0, '{"boot":2,"seq":0,"type":"button","name":"start"}')
>>> [(row.boot, row.seq) for row in store.pending()]
[(2, 0)]
>>> store.acked([(2, 0)], now=100.0); store.pending(), store.count()
([], 0)
>>> store.add(2, 1, '{"boot":2,"seq":1,"type":"button","name":"stop"}')
>>> store.acked([(2, 1)], now=130.0)
>>> [(row.boot, row.seq) for row in store.recent(window=10.0)]
[(2, 1)]
>>> [(row.boot, row.seq) for row in store.recent(window=30.0)]
[(2, 0), (2, 1)]
>>> store.prune(before=99.0), store.prune(before=120.0), store.recent(window=60.0)[0].seq
(0, 1, 1)
>>> store.close()
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    boot INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    body TEXT NOT NULL,
    acked_at REAL,  -- wall-clock time of the broker's PUBACK; NULL: not acknowledged
    PRIMARY KEY (boot, seq)
);
"""

# After the column exists (files from before it get it added in __init__).
INDEXES = """
CREATE INDEX IF NOT EXISTS outbox_unacked ON outbox (boot, seq) WHERE acked_at IS NULL;
CREATE INDEX IF NOT EXISTS outbox_acked ON outbox (acked_at) WHERE acked_at IS NOT NULL;
"""


class Pending(NamedTuple):
    boot: int
    seq: int
    body: str  # the event's JSON without "replay"


class AgentStore:
    """The agent's SQLite file; thread-safe (one connection behind a lock)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(outbox)")}
        if "acked_at" not in columns:  # a state folder from before the resend window
            self._db.execute("ALTER TABLE outbox ADD COLUMN acked_at REAL")
        self._db.executescript(INDEXES)

    def _get(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def _set(self, key: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def next_boot(self) -> int:
        """Count this start; never reuses a boot that events in the outbox still carry."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                last = int(self._get("boot") or 0)
                row = self._db.execute("SELECT max(boot) FROM outbox").fetchone()
                boot = max(last, row[0] or 0) + 1
                self._set("boot", str(boot))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return boot

    def add(self, boot: int, seq: int, body: str) -> None:
        """Store an event durably (committed with fsync before this returns)."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO outbox (boot, seq, body) VALUES (?, ?, ?)",
                (boot, seq, body),
            )

    def pending(self, limit: int = 1000) -> list[Pending]:
        """Events not yet acknowledged by the broker, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT boot, seq, body FROM outbox WHERE acked_at IS NULL "
                "ORDER BY boot, seq LIMIT ?",
                (limit,),
            ).fetchall()
        return [Pending(*row) for row in rows]

    def recent(self, window: float) -> list[Pending]:
        """Events acknowledged at most ``window`` seconds before the latest PUBACK, oldest
        first: what a broker killed since then may have lost."""
        with self._lock:
            rows = self._db.execute(
                "SELECT boot, seq, body FROM outbox "
                "WHERE acked_at >= (SELECT max(acked_at) FROM outbox) - ? ORDER BY boot, seq",
                (window,),
            ).fetchall()
        return [Pending(*row) for row in rows]

    def count(self) -> int:
        """How many events wait for a PUBACK."""
        with self._lock:
            return self._db.execute(
                "SELECT count(*) FROM outbox WHERE acked_at IS NULL"
            ).fetchone()[0]

    def acked(self, identities: Iterable[tuple[int, int]], now: float) -> None:
        """Record the broker's PUBACK; the row stays for the resend window."""
        keys = [(now, boot, seq) for boot, seq in identities]
        if not keys:
            return
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("UPDATE outbox SET acked_at = ? WHERE boot = ? AND seq = ?", keys)
            self._db.execute("COMMIT")

    def prune(self, before: float) -> int:
        """Delete the events acknowledged before ``before``; returns how many.  Call it
        with (a PUBACK's time - the window) only, see the module's docstring."""
        with self._lock:
            return self._db.execute("DELETE FROM outbox WHERE acked_at < ?", (before,)).rowcount

    def get_meta(self, key: str) -> str | None:
        with self._lock:
            return self._get(key)

    def set_meta(self, key: str, value: str) -> None:
        with self._lock:
            self._set(key, value)

    def close(self) -> None:
        with self._lock:
            self._db.close()
