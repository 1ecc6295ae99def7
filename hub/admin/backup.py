"""Backups and restores of the hub's database, safe to take while the hub runs.

SQLite is copied with SQLite's online backup API (a consistent snapshot, even with the
hub writing); PostgreSQL with ``pg_dump`` in its custom format.  A restore replaces
every table at once (one transaction) and then runs the migrations, so a backup from
an older peershop comes back on the current schema.

>>> backup("sqlite:////var/lib/peershop/peershop.db", Path("nightly.db"))  # doctest: +SKIP
'sqlite'
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import tempfile
from pathlib import Path

from sqlalchemy import delete, inspect
from sqlalchemy.engine import URL, make_url

from hub.errors import BackupError
from hub.private_files import private_file
from hub.store.db import make_engine, migrate
from hub.store.db_lock import hold_for_restore
from hub.store.models import AllowlistVersion

SQLITE_MAGIC = b"SQLite format 3\x00"
PGDUMP_MAGIC = b"PGDMP"


def backup(url: str, dest: Path) -> str:
    """Write a backup of the database at ``url`` to ``dest``; returns the backend name.

    ``dest`` appears only once complete (written beside it, then renamed).
    """
    parsed = make_url(url)
    dest = Path(dest)
    if parsed.get_backend_name() == "sqlite":
        _sqlite_backup(_sqlite_path(parsed), dest)
        return "sqlite"
    _pg_dump(parsed, dest)
    return "postgresql"


def restore(url: str, src: Path) -> None:
    """Replace the database at ``url`` with the backup ``src``, then migrate to head.

    Refused (:class:`~hub.store.db_lock.DatabaseInUseError`) while a hub runs on the database:
    its memory would no longer match the tables.  The restored database forgets which
    offline allow-lists were signed, so the next hub start signs a new one for every
    tool, whose version (from the clock, :func:`hub.store.shop_store.issue_allowlists`) is
    above any the devices kept from before the restore.
    """
    parsed = make_url(url)
    src = Path(src)
    try:
        with src.open("rb") as f:
            head = f.read(16)
    except OSError as exc:
        raise BackupError(f"cannot read {src}: {exc.strerror}") from None
    if parsed.get_backend_name() == "sqlite":
        if head != SQLITE_MAGIC:
            raise BackupError(f"{src} is not a SQLite backup (db.url is a SQLite database)")
    elif not head.startswith(PGDUMP_MAGIC):
        raise BackupError(f"{src} is not a pg_dump custom-format backup (db.url is PostgreSQL)")
    with hold_for_restore(url):
        if parsed.get_backend_name() == "sqlite":
            _sqlite_restore(src, _sqlite_path(parsed))
        else:
            _pg_restore(url, parsed, src)
        engine = make_engine(url)
        try:
            migrate(engine)
            with engine.begin() as conn:
                conn.execute(delete(AllowlistVersion))
        finally:
            engine.dispose()


# -- SQLite --------------------------------------------------------------------------------


def _sqlite_path(url: URL) -> Path:
    if not url.database or url.database == ":memory:":
        raise BackupError("an in-memory SQLite database cannot be backed up or restored")
    return Path(url.database).resolve()


def _sqlite_backup(db: Path, dest: Path) -> None:
    if not db.is_file():
        raise BackupError(f"database {db} does not exist")
    if dest.resolve() == db:
        raise BackupError(f"{dest} is the live database; write the backup somewhere else")
    tmp = dest.with_name(f".{dest.name}.partial")
    tmp.unlink(missing_ok=True)
    private_file(tmp)  # the backup holds what the database holds: the owner's alone
    try:
        source = sqlite3.connect(db, timeout=30)
        try:
            target = sqlite3.connect(tmp)
            try:
                source.backup(target)
                # One self-contained file: no -wal/-shm beside it when it is opened later.
                target.execute("PRAGMA journal_mode=DELETE")
            finally:
                target.close()
        finally:
            source.close()
        os.replace(tmp, dest)
    except sqlite3.Error as exc:
        tmp.unlink(missing_ok=True)
        raise BackupError(f"SQLite backup failed: {exc}") from None


def _sqlite_restore(src: Path, db: Path) -> None:
    if src.resolve() == db:
        raise BackupError(f"{src} is the live database itself")
    try:
        source = sqlite3.connect(f"{src.resolve().as_uri()}?mode=ro", uri=True)
        try:
            check = source.execute("PRAGMA integrity_check").fetchone()[0]
            if check != "ok":
                raise BackupError(f"{src} is damaged: {check}")
            tables = {r[0] for r in source.execute("SELECT name FROM sqlite_master")}
            if "alembic_version" not in tables:
                raise BackupError(f"{src} is a SQLite file but not a peershop database")
            private_file(db)  # a new database is private; an existing one keeps its mode
            target = sqlite3.connect(db, timeout=30)
            try:
                # All pages in one step: other connections see the old or the new
                # database, never a mixture.
                source.backup(target)
            finally:
                target.close()
        finally:
            source.close()
    except sqlite3.Error as exc:
        raise BackupError(f"SQLite restore failed: {exc}") from None


# -- PostgreSQL ----------------------------------------------------------------------------


def _pg_tool(name: str) -> str:
    found = shutil.which(name)
    if not found:
        raise BackupError(
            f"{name} is not installed: `sudo apt-get install postgresql-client` "
            "(its major version must be at least the server's)"
        )
    return found


def _pg_connection(url: URL) -> tuple[str, dict[str, str]]:
    """A libpq URL without the password, and an environment that carries it.

    The password goes in PGPASSWORD so it never shows in ``ps``.
    """
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    dsn = url.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
    return dsn, env


def _run(args: list[str], env: dict[str, str], what: str, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(args, env=env, capture_output=True, check=False, **kwargs)
    if result.returncode != 0:
        err = result.stderr.decode(errors="replace").strip().splitlines()
        raise BackupError(f"{what} failed: {' / '.join(err[-5:]) or result.returncode}")
    return result


def _pg_dump(url: URL, dest: Path) -> None:
    dsn, env = _pg_connection(url)
    tmp = dest.with_name(f".{dest.name}.partial")
    tmp.unlink(missing_ok=True)
    private_file(tmp)  # pg_dump writes into it and keeps its mode
    try:
        _run(
            [
                _pg_tool("pg_dump"),
                "--format=custom",
                "--no-owner",
                "--no-privileges",
                f"--file={tmp}",
                f"--dbname={dsn}",
            ],
            env,
            "pg_dump",
        )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _pg_restore(url: str, parsed: URL, src: Path) -> None:
    """Drop every table and load the dump, in one transaction: all or nothing.

    Dropping first also removes tables a newer schema added, so the migrations that run
    afterwards find exactly the backup's schema.
    """
    pg_restore, psql = _pg_tool("pg_restore"), _pg_tool("psql")
    engine = make_engine(url)
    try:
        tables = inspect(engine).get_table_names()
    finally:
        engine.dispose()
    dsn, env = _pg_connection(parsed)
    script = _run(
        [pg_restore, "--no-owner", "--no-privileges", "--file=-", str(src)], env, "pg_restore"
    ).stdout
    drops = "".join(f"DROP TABLE IF EXISTS {_quote(t)} CASCADE;\n" for t in tables)
    with tempfile.NamedTemporaryFile("wb", suffix=".sql") as sql:
        sql.write(drops.encode() + script)
        sql.flush()
        _run(
            [
                psql,
                "-X",
                "--quiet",
                "--no-psqlrc",
                "--single-transaction",
                "--set=ON_ERROR_STOP=1",
                f"--file={sql.name}",
                f"--dbname={dsn}",
            ],
            env,
            "psql (restore)",
            stdin=subprocess.DEVNULL,
        )
