"""The hubs' hold on their database, so that ``peershop restore`` never runs under a hub.

A restore replaces every table.  A hub running meanwhile keeps members, open sessions,
presence and the identities it has stored in memory and goes on writing, so memory and
database disagree from then on.  So every hub holds a **shared** lock on its database
for as long as it runs, and a restore takes the same lock **exclusively**, without
waiting: while any hub runs, the restore is refused (:class:`DatabaseInUseError`, naming
the hubs where the database can tell), and while a restore runs, no hub starts.

Whoever holds the lock, the operating system or the database server drops it when the
holder dies, by SIGKILL or a power cut too, so a killed hub never leaves a stale lock:

- **SQLite**: ``flock(2)`` on ``<database>.lock`` beside the database file (mode 0600).
- **PostgreSQL**: a session-level advisory lock on one key of the database, held on a
  connection of its own (``application_name`` says which hub).  Several hubs of several
  sites share one database, and all of them share the lock.  The server releases it
  when the connection ends, which a killed process's does as its socket closes.

>>> lock = hold_for_hub("sqlite:////var/lib/peershop/peershop.db", "main")  # doctest: +SKIP
>>> lock.release()  # doctest: +SKIP
"""

from __future__ import annotations

import fcntl
import os
import socket
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from hub.errors import DatabaseInUseError
from hub.private_files import private_file

# pg_try_advisory_lock(int, int): the first number says "peershop", the second "the hubs'
# hold on this database".  Advisory locks are per database, so two shops on one server
# never meet.
PG_LOCK_KEYS = (0x70736870, 1)
APP_PREFIX = "peershop hub"


class _Backend(ABC):
    """One kind of database's lock; :data:`BACKENDS` maps the backend name to its class."""

    @abstractmethod
    def __init__(self, url: str, holder: str) -> None: ...

    @abstractmethod
    def try_acquire(self, exclusive: bool) -> bool:
        """Take the lock without waiting; False when it is held in a conflicting way."""

    @abstractmethod
    def release(self) -> None:
        """Give the lock back (nothing when not held)."""

    @abstractmethod
    def holders(self) -> list[str]:
        """Who holds the lock, as far as the database can tell (asked once a try failed,
        so it may have been released meanwhile)."""


class _SqliteLock(_Backend):
    def __init__(self, url: str, holder: str):
        database = make_url(url).database
        if not database or database == ":memory:":
            raise DatabaseInUseError("an in-memory SQLite database has no file to lock")
        self.path = Path(f"{Path(database).resolve()}.lock")
        self.fd: int | None = None

    def try_acquire(self, exclusive: bool) -> bool:
        fd = os.open(private_file(self.path), os.O_RDWR)
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the file drops the lock
            self.fd = None

    def holders(self) -> list[str]:
        return [f"a process holding {self.path}"]


class _PostgresLock(_Backend):
    def __init__(self, url: str, holder: str):
        # One connection of its own, never pooled: the lock lives exactly as long as it.
        self.engine = create_engine(
            url, poolclass=NullPool, connect_args={"application_name": holder[:63]}
        )
        self.conn: Connection | None = None

    def try_acquire(self, exclusive: bool) -> bool:
        take = "pg_try_advisory_lock" if exclusive else "pg_try_advisory_lock_shared"
        conn = self.engine.connect()
        try:
            got = conn.execute(
                text(f"SELECT {take}(CAST(:a AS integer), CAST(:b AS integer))"), _keys()
            ).scalar_one()
            conn.commit()  # no transaction left open for hours: the lock is the session's
        except BaseException:
            conn.close()
            raise
        if not got:
            conn.close()
            return False
        self.conn = conn
        return True

    def release(self) -> None:
        if self.conn is not None:
            self.conn.close()  # the session ends, and its advisory locks with it
            self.conn = None
        self.engine.dispose()

    def holders(self) -> list[str]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT a.application_name, a.client_addr FROM pg_locks l "
                    "JOIN pg_stat_activity a ON a.pid = l.pid "
                    "WHERE l.locktype = 'advisory' AND l.granted "
                    "AND l.database = (SELECT oid FROM pg_database "
                    "WHERE datname = current_database()) "
                    "AND l.classid = CAST(:a AS oid) AND l.objid = CAST(:b AS oid) "
                    "AND l.objsubid = 2 AND l.pid <> pg_backend_pid() "
                    "ORDER BY a.application_name"
                ),
                _keys(),
            ).all()
        return [f"{name or 'a process'}{f' at {addr}' if addr else ''}" for name, addr in rows]


def _keys() -> dict[str, int]:
    return {"a": PG_LOCK_KEYS[0], "b": PG_LOCK_KEYS[1]}


BACKENDS: dict[str, type[_Backend]] = {"sqlite": _SqliteLock, "postgresql": _PostgresLock}


class DatabaseLock:
    """One process's hold on a database: shared for a hub, exclusive for a restore."""

    def __init__(self, url: str, holder: str):
        self._backend = BACKENDS[make_url(url).get_backend_name()](url, holder)

    def try_acquire(self, *, exclusive: bool) -> bool:
        return self._backend.try_acquire(exclusive)

    def acquire(self, *, exclusive: bool) -> DatabaseLock:
        """Take the lock, or raise :class:`DatabaseInUseError` saying who holds it."""
        if self._backend.try_acquire(exclusive):
            return self
        try:
            raise DatabaseInUseError(self._refusal(exclusive))
        finally:
            self._backend.release()

    def release(self) -> None:
        self._backend.release()

    def _refusal(self, exclusive: bool) -> str:
        if not exclusive:
            return "a restore is replacing this database; start the hub once it has finished"
        who = self._backend.holders() or ["a hub"]
        return (
            f"a hub is running on this database ({'; '.join(who)}): stop it first "
            "(`sudo systemctl stop peershop`, on every hub of the shop), then restore. "
            "Nothing was changed"
        )


def hold_for_hub(url: str, site: str) -> DatabaseLock:
    """The shared hold a hub keeps while it runs; :meth:`DatabaseLock.release` at stop."""
    holder = f"{APP_PREFIX} {site} pid {os.getpid()} on {socket.gethostname()}"
    return DatabaseLock(url, holder).acquire(exclusive=False)


@contextmanager
def hold_for_restore(url: str) -> Iterator[None]:
    """The exclusive hold of a restore: refused at once while any hub holds the database."""
    lock = DatabaseLock(url, f"peershop restore pid {os.getpid()}").acquire(exclusive=True)
    try:
        yield
    finally:
        lock.release()


def hub_holds(url: str) -> bool:
    """Whether any hub holds the database now (what a restore would meet)."""
    lock = DatabaseLock(url, f"peershop check pid {os.getpid()}")
    try:
        return not lock.try_acquire(exclusive=True)
    finally:
        lock.release()
