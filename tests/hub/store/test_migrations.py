"""Upgrades keep the data: a database made by the first release migrates to head intact."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Engine,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    select,
)

from hub.store.db import alembic_config, current_revision, make_engine, migrate
from hub.store.models import Base

# every test here runs the migrations from an empty database
pytestmark = pytest.mark.empty_database

T0 = datetime(2026, 11, 26, 10, 0, 0)  # naive UTC, as stored


def _value(table: Table, column: Any, i: int, made: dict[str, list[dict[str, Any]]]) -> Any:
    for fk in column.foreign_keys:
        target = made[fk.column.table.name][i]
        return target[fk.column.name]
    kind = column.type
    if isinstance(kind, Boolean):
        return i % 2 == 0
    if isinstance(kind, Integer):
        return i + 1
    if isinstance(kind, Float):
        return i + 0.5
    if isinstance(kind, DateTime):
        return T0 + timedelta(minutes=i)
    if isinstance(kind, JSON):
        return {"n": i, "list": [table.name, i]}
    if isinstance(kind, LargeBinary):
        return bytes([i, 0, 255]) + table.name.encode()
    if isinstance(kind, String):
        text = f"{column.name[:3]}{i}"
        return text[: kind.length] if kind.length else text
    raise AssertionError(f"no sample value for {table.name}.{column.name} ({kind!r})")


def fill_every_table(engine: Engine, rows: int = 3) -> dict[str, list[tuple[Any, ...]]]:
    """Rows in every table there is, parents first; returns what was written."""
    meta = MetaData()
    meta.reflect(engine)
    made: dict[str, list[dict[str, Any]]] = {}
    with engine.begin() as conn:
        for table in meta.sorted_tables:
            if table.name == "alembic_version":
                continue
            made[table.name] = [
                {c.name: _value(table, c, i, made) for c in table.columns} for i in range(rows)
            ]
            conn.execute(table.insert(), made[table.name])
    return read_tables(engine, list(made))


def table_columns(engine: Engine, names: list[str]) -> dict[str, list[str]]:
    meta = MetaData()
    meta.reflect(engine, only=names)
    return {name: [c.name for c in meta.tables[name].columns] for name in names}


def read_tables(
    engine: Engine, names: list[str], columns: dict[str, list[str]] | None = None
) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of each table; of ``columns`` only, when given (those a table had
    before a migration added more)."""
    meta = MetaData()
    meta.reflect(engine, only=names)
    with engine.connect() as conn:
        out = {}
        for name in names:
            table = meta.tables[name]
            cols = [table.c[c] for c in columns[name]] if columns else list(table.c)
            rows = conn.execute(select(*cols).order_by(*table.primary_key.columns))
            out[name] = [tuple(r) for r in rows]
        return out


def head_revision() -> str:
    engine = make_engine("sqlite://")
    try:
        return ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
    finally:
        engine.dispose()


def test_upgrading_from_the_first_release_keeps_every_row(db_url: str):
    engine = make_engine(db_url)
    try:
        migrate(engine, "0001")
        assert current_revision(engine) == "0001"
        written = fill_every_table(engine)
        assert len(written) >= 10 and all(len(rows) == 3 for rows in written.values())
        columns = table_columns(engine, list(written))

        migrate(engine)

        assert current_revision(engine) == head_revision()
        assert read_tables(engine, list(written), columns) == written
    finally:
        engine.dispose()


def test_migrating_twice_changes_nothing(db_url: str):
    engine = make_engine(db_url)
    try:
        migrate(engine)
        written = fill_every_table(engine, rows=2)
        migrate(engine)  # what every start of the hub does
        assert read_tables(engine, list(written)) == written
    finally:
        engine.dispose()


def test_the_migrations_build_exactly_the_models(db_url: str):
    """A model changed without a migration would break every upgraded shop."""
    engine = make_engine(db_url)
    try:
        migrate(engine)
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()
