"""The agent's durable state: boot counter, the event outbox, the last allow-list.

One SQLite file in the agent's state folder, in WAL mode with ``synchronous=FULL``, so a
committed row survives a power cut.  An event is written here *before* it is published
and deleted only when the broker has acknowledged it (PUBACK): whatever a power cut, a
SIGKILL or a broker outage interrupts is still here at the next start and is sent again
with ``replay: true`` (CONTRACT.md §2).  Duplicates that this may cause are harmless: the
hub stores each ``(id, boot, seq)`` once.

>>> import tempfile, pathlib
>>> store = AgentStore(pathlib.Path(tempfile.mkdtemp()) / "agent.db")
>>> store.next_boot(), store.next_boot()
(1, 2)
>>> store.add(2, 0, '{"boot":2,"seq":0,"type":"button","name":"start"}')
>>> [(row.boot, row.seq) for row in store.pending()]
[(2, 0)]
>>> store.delete([(2, 0)]); store.pending()
[]
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
    PRIMARY KEY (boot, seq)
);
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
                "SELECT boot, seq, body FROM outbox ORDER BY boot, seq LIMIT ?", (limit,)
            ).fetchall()
        return [Pending(*row) for row in rows]

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM outbox").fetchone()[0]

    def delete(self, identities: Iterable[tuple[int, int]]) -> None:
        keys = list(identities)
        if not keys:
            return
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("DELETE FROM outbox WHERE boot = ? AND seq = ?", keys)
            self._db.execute("COMMIT")

    def get_meta(self, key: str) -> str | None:
        with self._lock:
            return self._get(key)

    def set_meta(self, key: str, value: str) -> None:
        with self._lock:
            self._set(key, value)

    def close(self) -> None:
        with self._lock:
            self._db.close()
