"""Shared fixtures: a private Mosquitto per module, and the test pass's databases.

The suite runs twice in CI (``./dev test``): once on SQLite and once on PostgreSQL.
``PEERSHOP_TEST_DB`` (``sqlite``, the default, or ``postgresql``) picks the pass and is
read here only.  On the PostgreSQL pass every test's database (``hub_config``,
``make_config``, :func:`database_url`, :func:`fresh_database`) is a new PostgreSQL
database, created for the test and dropped after it.  Every test's database starts at the
schema's head, copied from a template migrated once per session (a SQLite file, or a
PostgreSQL template database); a test that migrates an empty database on purpose carries
``@pytest.mark.empty_database``.  Tests parametrized over both
databases (the ``db_url`` fixture) run both on the SQLite pass and are left out of the
PostgreSQL pass, as are tests on PostgreSQL whatever the pass (``pg_url``); tests about
SQLite itself carry ``@pytest.mark.sqlite_only(reason)``; modules that touch no database
at all are listed in ``NO_DATABASE_MODULES``.
"""

from __future__ import annotations

import os
import queue
import shutil
import sqlite3
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url

from hub.config import Config, load_config
from hub.service.broker import PrivateBroker
from hub.store.db import make_engine, migrate

# pytest imports this file as ``conftest``; test modules import ``tests.conftest``.  One
# module for both names, or the databases database_url makes for a test are noted in a
# second copy's state and never dropped (and the template would be made twice).
sys.modules.setdefault("tests.conftest", sys.modules[__name__])

TEST_DB = os.environ.get("PEERSHOP_TEST_DB", "sqlite")
ON_POSTGRESQL = TEST_DB == "postgresql"
PG_ADMIN_URL = os.environ.get(
    "PEERSHOP_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
# CI sets this so a PostgreSQL that is not there fails the run instead of skipping.
PG_REQUIRED = os.environ.get("PEERSHOP_TEST_REQUIRE_PG") == "1" or ON_POSTGRESQL

# Test modules that never open a database (drivers, parsers, pure rules, the config):
# the PostgreSQL pass leaves them out, since they would only repeat the SQLite
# pass.  The SQLite pass fails any of their tests that opens one, so the list stays true.
NO_DATABASE_MODULES = frozenset(
    {
        "test_access",
        "test_access_hours",
        "test_systemd",
        "test_allowlist",
        "test_allowlist_reasons",
        "test_bridge",
        "test_config",
        "test_contract",
        "test_contract_events",
        "test_current_sensor",
        "test_framing",
        "test_house",
        "test_indicator",
        "test_install",
        "test_interlock",
        "test_keyboard_wedge",
        "test_node_protocol",
        "test_peerconomy",
        "test_peerconomy_inputs",
        "test_peerconomy_precision",
        "test_plug_payloads",
        "test_pn532",
        "test_power",
        "test_power_counters",
        "test_presence",
        "test_presence_changes",
        "test_rdm6300",
        "test_scenario",
        "test_sessions",
        "test_sessions_handover",
        "test_shop",
        "test_simulators",
        "test_wiegand",
    }
)


def pytest_configure(config: pytest.Config) -> None:
    # registered here, beside the rule that reads it
    config.addinivalue_line(
        "markers", "sqlite_only(reason): about SQLite itself; skipped on the PostgreSQL pass"
    )
    config.addinivalue_line(
        "markers",
        "empty_database: the test's databases start empty, not at the schema's head "
        "(for tests that run the migrations themselves)",
    )
    if TEST_DB not in ("sqlite", "postgresql"):
        raise pytest.UsageError(f"PEERSHOP_TEST_DB must be sqlite or postgresql, not {TEST_DB!r}")
    if ON_POSTGRESQL and (problem := pg_problem()):
        raise pytest.UsageError(
            f"PEERSHOP_TEST_DB=postgresql but PostgreSQL is not usable: {problem}"
        )


def pytest_report_header(config: pytest.Config) -> str:
    where = make_url(PG_ADMIN_URL).set(database=None).render_as_string(hide_password=True)
    return f"peershop test database: {TEST_DB}" + (f" ({where})" if ON_POSTGRESQL else "")


_LEFT_OUT: dict[str, int] = {}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not ON_POSTGRESQL:
        return
    keep, left_out = [], []
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "db_url" in fixtures:
            reason = "parametrized over both databases: ran on PostgreSQL in the SQLite pass"
        elif "pg_url" in fixtures:
            reason = "on PostgreSQL whatever the pass: ran in the SQLite pass"
        elif item.module is not None and _module_name(item) in NO_DATABASE_MODULES:
            reason = "in a module that touches no database"
        else:
            keep.append(item)
            continue
        left_out.append(item)
        _LEFT_OUT[reason] = _LEFT_OUT.get(reason, 0) + 1
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = keep


def pytest_terminal_summary(terminalreporter) -> None:
    for reason, count in _LEFT_OUT.items():
        terminalreporter.write_line(f"PostgreSQL pass left out {count} tests: {reason}")
    for failure in _LEFT_BEHIND:
        terminalreporter.write_line(f"could not drop a test database: {failure}", red=True)


def _module_name(item: pytest.Item) -> str:
    return item.module.__name__.rsplit(".", 1)[-1]  # type: ignore[attr-defined]


def _pg_available() -> str | None:
    try:
        engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
        return None
    except Exception as exc:  # any reason at all: not reachable for the tests
        return f"{type(exc).__name__}: {str(exc).splitlines()[0]}"


_PG_PROBLEM: str | bool | None = False  # False: not probed yet


def pg_problem() -> str | None:
    global _PG_PROBLEM
    if _PG_PROBLEM is False:
        _PG_PROBLEM = _pg_available()
    return _PG_PROBLEM  # type: ignore[return-value]


def _pg_admin_execute(sql: str) -> None:
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(sql))
    finally:
        admin.dispose()


def _pg_url_of(name: str) -> str:
    return make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


# The session's migrated templates, made on first use: the SQLite file and the PostgreSQL
# database's name.  Migrating costs about 0.5 s (more on PostgreSQL); copying, little.
_TEMPLATES: dict[str, str] = {}
_TEMPLATE_FOLDER: list[Path] = []  # set by the _template_folder fixture


@pytest.fixture(scope="session", autouse=True)
def _template_folder(tmp_path_factory: pytest.TempPathFactory) -> None:
    _TEMPLATE_FOLDER[:] = [tmp_path_factory.mktemp("template")]


def _migrated(url: str) -> None:
    engine = make_engine(url)
    try:
        migrate(engine)
    finally:
        engine.dispose()  # a PostgreSQL template may have no other connections when copied


def _sqlite_template() -> Path:
    if "sqlite" not in _TEMPLATES:
        path = _TEMPLATE_FOLDER[0] / "template.db"
        _migrated(f"sqlite:///{path}")  # the last connection's close folds the WAL in
        _TEMPLATES["sqlite"] = str(path)
    return Path(_TEMPLATES["sqlite"])


def _pg_template() -> str:
    if "postgresql" not in _TEMPLATES:
        name = f"peershop_template_{uuid.uuid4().hex[:12]}"
        _pg_admin_execute(f'CREATE DATABASE "{name}"')
        _TEMPLATES["postgresql"] = name  # dropped at the session's end, even half-made
        _migrated(_pg_url_of(name))
    return _TEMPLATES["postgresql"]


_EMPTY_DATABASES = [False]  # the running test carries @pytest.mark.empty_database


def _wants_empty() -> bool:
    return _EMPTY_DATABASES[0]


def create_pg_database() -> str:
    """A new PostgreSQL database: at the schema's head, or empty for a test marked
    ``empty_database``."""
    name = f"peershop_test_{uuid.uuid4().hex[:12]}"
    template = "" if _wants_empty() else f' TEMPLATE "{_pg_template()}"'
    _pg_admin_execute(f'CREATE DATABASE "{name}"{template}')
    return _pg_url_of(name)


class _Dropper:
    """Drops the tests' PostgreSQL databases in a thread: a DROP DATABASE takes 0.2-0.6 s
    (PostgreSQL checkpoints), which the next test need not wait for."""

    def __init__(self) -> None:
        self._names: queue.Queue[str | None] = queue.Queue()
        self._failures: list[str] = []
        self._thread: threading.Thread | None = None

    def drop(self, name: str) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="drop-test-databases", daemon=True
            )
            self._thread.start()
        self._names.put(name)

    def _run(self) -> None:
        while (name := self._names.get()) is not None:
            try:
                _pg_admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except Exception as exc:  # reported at the session's end
                self._failures.append(f"{name}: {type(exc).__name__}: {exc}")

    def is_current_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def finish(self) -> list[str]:
        """Wait for every drop asked for; returns the ones that failed."""
        if self._thread is not None:
            self._names.put(None)
            self._thread.join()
            self._thread = None
        return self._failures


_DROPPER = _Dropper()


def drop_pg_database(url: str) -> None:
    """Drop a database of :func:`create_pg_database` (soon: in the background)."""
    _DROPPER.drop(make_url(url).database)  # type: ignore[arg-type]


def pytest_sessionfinish(session: pytest.Session) -> None:
    failures = _DROPPER.finish()
    if "postgresql" in _TEMPLATES:
        _pg_admin_execute(f'DROP DATABASE IF EXISTS "{_TEMPLATES.pop("postgresql")}" WITH (FORCE)')
    if failures:
        _LEFT_BEHIND.extend(failures)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_LEFT_BEHIND: list[str] = []  # test databases the session could not drop


def _sqlite_database(folder: Path, name: str) -> str:
    """The SQLite file ``folder / name``: a copy of the template unless it exists or the
    test wants it empty."""
    path = Path(folder) / name
    if not _wants_empty() and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_sqlite_template(), path)
    return f"sqlite:///{path}"


@contextmanager
def _pg_database(why: str) -> Iterator[str]:
    """A new PostgreSQL database for the ``with``; fails (PEERSHOP_TEST_REQUIRE_PG=1) or
    skips the test, saying ``why`` it needs one, when PostgreSQL is not reachable."""
    problem = pg_problem()
    if problem:
        if PG_REQUIRED:
            pytest.fail(f"PostgreSQL is required (PEERSHOP_TEST_REQUIRE_PG=1) but {problem}")
        pytest.skip(f"{why}, and PostgreSQL is not reachable: {problem}")
    url = create_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(url)


@contextmanager
def fresh_database(folder: Path, name: str = "peershop.db") -> Iterator[str]:
    """A new database of this test pass, at the schema's head, for as long as the ``with``
    lasts: a SQLite file ``folder / name``, or on the PostgreSQL pass a new PostgreSQL
    database."""
    if not ON_POSTGRESQL:
        yield _sqlite_database(folder, name)
        return
    url = create_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(url)


# The databases database_url made for the running test, by (folder, name); dropped after it.
_TEST_DATABASES: dict[tuple[Path, str], str] = {}


def database_url(folder: Path, name: str = "peershop.db") -> str:
    """The database of this test pass for ``folder``: the SQLite file ``folder / name``, or
    on the PostgreSQL pass a new PostgreSQL database, the same one for the same folder and
    name until the test ends, then dropped (so two hubs on one folder share it, as they
    share the file).  A new one starts at the schema's head."""
    if not ON_POSTGRESQL:
        return _sqlite_database(folder, name)
    key = (Path(folder).resolve(), name)
    if key not in _TEST_DATABASES:
        _TEST_DATABASES[key] = create_pg_database()
    return _TEST_DATABASES[key]


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database at the schema's head: a SQLite file, and a PostgreSQL database
    when reachable.

    Tests that take this run on both databases in the SQLite pass (and not again in the
    PostgreSQL pass)."""
    if request.param == "sqlite":
        yield _sqlite_database(tmp_path, "peershop.db")
        return
    with _pg_database("the test runs on both databases") as url:
        yield url


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database at the schema's head on either pass, for tests that
    need PostgreSQL itself (several hubs on one database); they run in the SQLite pass
    only, not twice."""
    with _pg_database("the test needs PostgreSQL itself") as url:
        yield url


# Which backends opened a connection during the running test (every engine, any thread).
_OPENED: set[str] = set()


@event.listens_for(Engine, "connect")
def _note_connection(dbapi_connection, _record) -> None:
    if _DROPPER.is_current_thread():
        return  # an earlier test's database being dropped, not this test's doing
    _OPENED.add("sqlite" if isinstance(dbapi_connection, sqlite3.Connection) else "postgresql")


def _hub_sqlite_files(folder: Path) -> list[Path]:
    """SQLite files under ``folder`` that hold a peershop hub schema (made by any process)."""
    found = []
    for path in folder.rglob("*"):
        try:
            if not path.is_file():
                continue
            with path.open("rb") as file:
                if file.read(16) != b"SQLite format 3\x00":
                    continue
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
            try:
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            finally:
                conn.close()
        except (OSError, sqlite3.Error):
            continue  # gone meanwhile, or being written: not ours to judge
        if "alembic_version" in tables:
            found.append(path)
    return found


@pytest.fixture(autouse=True)
def _test_database_pass(request: pytest.FixtureRequest) -> Iterator[None]:
    """Keep each pass honest: SQLite-only tests skip on the PostgreSQL pass; a test there
    that stores through SQLite fails (the switch missed it); a test of the modules listed
    as touching no database fails if it opens one; the test's PostgreSQL databases are
    dropped after it."""
    marker = request.node.get_closest_marker("sqlite_only")
    if ON_POSTGRESQL and marker is not None:
        reason = marker.args[0] if marker.args else marker.kwargs["reason"]
        pytest.skip(f"SQLite-specific: {reason}")
    # asked for now, so it outlives this fixture's teardown below
    tmp_path = request.getfixturevalue("tmp_path") if "tmp_path" in request.fixturenames else None
    _OPENED.clear()
    _TEST_DATABASES.clear()
    _EMPTY_DATABASES[0] = request.node.get_closest_marker("empty_database") is not None
    try:
        yield
    finally:
        for url in _TEST_DATABASES.values():
            drop_pg_database(url)
        _TEST_DATABASES.clear()
        _EMPTY_DATABASES[0] = False
    checked = ON_POSTGRESQL or _module_name(request.node) in NO_DATABASE_MODULES
    opened = set(_OPENED) if checked else set()
    if checked and tmp_path is not None and _hub_sqlite_files(tmp_path):
        opened.add("sqlite")  # a hub in a subprocess made one
    if ON_POSTGRESQL and "sqlite" in opened:
        pytest.fail(
            "this test stored through SQLite on the PostgreSQL pass: take its database from "
            "hub_config, make_config, database_url or fresh_database (tests/conftest.py), "
            "or mark it sqlite_only(reason)"
        )
    if not ON_POSTGRESQL and opened and _module_name(request.node) in NO_DATABASE_MODULES:
        pytest.fail(
            f"{_module_name(request.node)} is in NO_DATABASE_MODULES (tests/conftest.py) but "
            f"opened {', '.join(sorted(opened))}: take it out of the list"
        )


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateBroker]:
    """A private Mosquitto for this test module: own config, free port, persistence on."""
    with PrivateBroker(tmp_path_factory.mktemp("mosquitto")) as running:
        yield running


def make_config(tmp_path: Path, broker: PrivateBroker, db_url: str | None = None, **sections):
    """A hub's config on ``broker``, its data in ``tmp_path / "data"`` and its database
    ``db_url`` or else this pass's :func:`database_url` for that folder."""
    data_dir = tmp_path / "data"
    overrides = {
        "site": {"data_dir": str(data_dir)},
        "mqtt": {"host": "127.0.0.1", "port": broker.port},
        "db": {"url": db_url or database_url(data_dir)},
    }
    for name, values in sections.items():
        overrides.setdefault(name, {}).update(values)
    return load_config(None, env={}, search=(), overrides=overrides)


@pytest.fixture
def hub_config(tmp_path: Path, broker: PrivateBroker) -> Config:
    """Config for a hub on this module's broker, with a unique MQTT client id."""
    return make_config(tmp_path, broker, mqtt={"client_id": f"peershop-hub-{uuid.uuid4().hex[:8]}"})
