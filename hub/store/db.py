"""Engines, sessions and migrations: SQLite in WAL mode by default, PostgreSQL by URL.

Query functions take a ``Session``; callers own the transaction (``with sm.begin()``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from hub.private_files import private_file
from hub.store.closed_periods import refuse_changes_to_closed_periods

MIGRATIONS = Path(__file__).with_name("migrations")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers (web, `peershop stats`) run beside the ingest writer; FULL makes a
    # committed batch survive a power cut, which is what an MQTT ack after commit promises.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url``.  A SQLite file missing is made, mode 0600 in a folder made
    0700 if missing too (:mod:`hub.private_files`), before SQLite makes it world-readable;
    its ``-wal`` and ``-shm`` files take the same mode."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            private_file(parsed.database)
        engine = create_engine(url, connect_args={"timeout": 10}, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions on ``engine``, each guarding closed periods: a flush that would change one
    raises :class:`~hub.errors.ClosedPeriodError` (hub/store/closed_periods.py)."""
    factory = sessionmaker(engine, expire_on_commit=False)
    event.listen(factory, "before_flush", refuse_changes_to_closed_periods)
    return factory


def alembic_config(engine: Engine) -> Any:
    from alembic.config import Config as AlembicConfig  # start-up time: only to migrate

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    cfg.attributes["engine"] = engine
    return cfg


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (upgrades keep the data)."""
    from alembic import command  # start-up time: only to migrate

    command.upgrade(alembic_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext  # start-up time: only to migrate

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def insert_ignore(session: Session, table: Any) -> Any:
    """An INSERT that skips rows whose unique key is already stored (either backend).

    This is the idempotent half of at-least-once delivery: a redelivered or replayed
    message hits the unique constraint and is dropped, inside the same transaction.
    """
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    raise RuntimeError(f"unsupported database {dialect}")  # config allows only the two


def insert_ignoring_duplicates(session: Session, table: Any, rows: list[dict[str, Any]]) -> int:
    """Insert rows with :func:`insert_ignore`; returns how many were new."""
    if not rows:
        return 0
    return max(session.execute(insert_ignore(session, table), rows).rowcount, 0)
