"""Shared fixtures: a private Mosquitto per module, SQLite and PostgreSQL databases."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from hub.broker import PrivateBroker
from hub.config import Config, load_config

PG_ADMIN_URL = os.environ.get(
    "PEERSHOP_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
# CI sets this so a PostgreSQL that is not there fails the run instead of skipping.
PG_REQUIRED = os.environ.get("PEERSHOP_TEST_REQUIRE_PG") == "1"


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


def create_pg_database() -> str:
    name = f"peershop_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def drop_pg_database(url: str) -> None:
    name = make_url(url).database
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, and a PostgreSQL database when reachable."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'peershop.db'}"
        return
    problem = pg_problem()
    if problem:
        if PG_REQUIRED:
            pytest.fail(f"PostgreSQL is required (PEERSHOP_TEST_REQUIRE_PG=1) but {problem}")
        pytest.skip(f"PostgreSQL not reachable: {problem}")
    url = create_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(url)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateBroker]:
    """A private Mosquitto for this test module: own config, free port, persistence on."""
    with PrivateBroker(tmp_path_factory.mktemp("mosquitto")) as running:
        yield running


def make_config(tmp_path: Path, broker: PrivateBroker, db_url: str | None = None, **sections):
    overrides = {
        "site": {"data_dir": str(tmp_path / "data")},
        "mqtt": {"host": "127.0.0.1", "port": broker.port},
    }
    if db_url:
        overrides["db"] = {"url": db_url}
    for name, values in sections.items():
        overrides.setdefault(name, {}).update(values)
    return load_config(None, env={}, search=(), overrides=overrides)


@pytest.fixture
def hub_config(tmp_path: Path, broker: PrivateBroker) -> Config:
    """Config for a hub on this module's broker, with a unique MQTT client id."""
    return make_config(tmp_path, broker, mqtt={"client_id": f"peershop-hub-{uuid.uuid4().hex[:8]}"})
