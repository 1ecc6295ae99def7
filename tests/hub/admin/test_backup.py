"""`peershop backup` and `peershop restore` on SQLite and PostgreSQL: every table back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, MetaData, delete, select, update

from hub.admin.backup import BackupError, backup, restore
from hub.admin.credentials import mosquitto_hash
from hub.store.db import current_revision, make_engine, migrate, session_factory
from hub.store.models import (
    Badge,
    DeadLetter,
    Device,
    DeviceStatusLog,
    Event,
    Member,
    MqttAccount,
    Outbox,
    Project,
    Station,
    Task,
    Tool,
    ToolBinding,
    Training,
    TrainingGrant,
)
from tests.hub.admin.test_credentials import peershop, write_ops_config

T0 = datetime(2026, 11, 26, 10, 15, 3, 120000, tzinfo=UTC)
FILLED = (
    "projects members badges trainings training_grants tools tool_bindings tasks stations "
    "devices events device_status_log dead_letters outbox mqtt_accounts alembic_version"
).split()


def fill_shop(engine: Engine) -> None:
    """A small shop with a row in every table the first two migrations made."""
    with session_factory(engine).begin() as s:
        s.add(Project(id="commons", name="Shop commons", model="production_effort"))
        ada = Member(handle="ada", name="Ada L.", roles=["member", "trainer"], created_at=T0)
        bob = Member(handle="bob", name="Bob Ö.", roles=["member"], suspended=True, created_at=T0)
        s.add_all([ada, bob])
        s.flush()
        s.add(Badge(uid="04A1B2C3D4E5F6", member_id=ada.id, created_at=T0))
        s.add(Training(id="laser", name="Laser cutter"))
        s.flush()
        s.add(
            TrainingGrant(
                training_id="laser",
                member_id=ada.id,
                granted_by_id=bob.id,
                granted_at=T0,
                expires_at=T0 + timedelta(days=365),
            )
        )
        tool = Tool(
            id="laser-1",
            name="Laser cutter",
            project_id="commons",
            policy="tap",
            training_id="laser",
            power={"off_w": 5, "busy_w": 200},
            scarce={"slots": "Mon-Fri 17:00-22:00"},
        )
        s.add(tool)
        s.flush()
        s.add(ToolBinding(tool_id="laser-1", kind="tasmota", ref="laser_plug"))
        s.add(
            Task(
                id="empty-dust",
                title="Empty the dust collector",
                project_id="commons",
                slots=4,
                hours=Decimal("0.5"),
                weight=Decimal("1.25"),
            )
        )
        s.add(Station(device_id="door-reader", kind="sign_in"))
        s.add(Device(id="laser-node", approval="approved", online=True, boot=7, fw="1.4.2"))
        s.add_all(
            Event(
                device_id="laser-node",
                boot=7,
                seq=seq,
                type="power",
                device_ts=T0 + timedelta(seconds=seq),
                received_at=T0 + timedelta(seconds=seq, milliseconds=5),
                data={"w": 812.4 + seq},
            )
            for seq in range(50)
        )
        s.add(
            DeviceStatusLog(
                device_id="laser-node", boot=7, state="online", fw="1.4.2", received_at=T0
            )
        )
        s.add(
            DeadLetter(
                received_at=T0,
                topic="peershop/dev/x/event",
                device_id="x",
                reason="bad json",
                payload=b"\x00\xff{",
                size=3,
            )
        )
        s.add(Outbox(topic="peershop/dev/laser-node/cmd", payload=b'{"action":"lock"}'))
        s.add(MqttAccount(username="laser-node", kind="device", password_hash=mosquitto_hash("x")))


def snapshot(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in primary-key order."""
    meta = MetaData()
    meta.reflect(engine)
    rows = {}
    with engine.connect() as conn:
        for name, table in sorted(meta.tables.items()):
            order = list(table.primary_key.columns) or list(table.columns)
            rows[name] = [tuple(r) for r in conn.execute(select(table).order_by(*order))]
    return rows


@pytest.fixture
def shop_db(db_url: str) -> Any:
    engine = make_engine(db_url)
    migrate(engine)
    fill_shop(engine)
    try:
        yield db_url, engine
    finally:
        engine.dispose()


def test_restore_brings_back_every_table_exactly(shop_db, tmp_path: Path):
    url, engine = shop_db
    before = snapshot(engine)
    assert all(before[name] for name in FILLED), [n for n in FILLED if not before[n]]

    file = tmp_path / "backups" / "nightly.backup"
    backup(url, file)
    assert file.stat().st_size > 0
    assert not list(file.parent.glob(".*partial"))

    # Life goes on after the backup: rows deleted, changed and added.
    with session_factory(engine).begin() as s:
        s.execute(delete(Event).where(Event.seq >= 10))
        s.execute(update(Device).values(approval="revoked", online=False))
        s.add(Member(handle="eve", name="Eve", roles=[], created_at=T0))
        s.execute(delete(MqttAccount))
    assert snapshot(engine) != before

    engine.dispose()
    restore(url, file)
    assert snapshot(engine) == before

    # The restored database takes new rows: ids continue after the restored ones.
    with session_factory(engine).begin() as s:
        s.add(Event(device_id="laser-node", boot=8, seq=0, type="power", received_at=T0, data={}))
        s.add(Member(handle="eve", name="Eve", roles=[], created_at=T0))
    assert len(snapshot(engine)["events"]) == 51


def test_backup_and_restore_commands(shop_db, tmp_path: Path):
    url, engine = shop_db
    before = snapshot(engine)
    config = write_ops_config(tmp_path, db_url=url)
    file = tmp_path / "shop.backup"
    made = peershop(config, "backup", str(file))
    assert made.exit_code == 0, made.output
    assert str(file) in made.stderr

    with session_factory(engine).begin() as s:
        s.execute(delete(Event))
    engine.dispose()

    refused = peershop(config, "restore", str(file))  # asks first; "no" keeps the data
    assert refused.exit_code != 0
    assert snapshot(engine)["events"] == []

    done = peershop(config, "restore", str(file), "--yes")
    assert done.exit_code == 0, done.output
    assert snapshot(engine) == before


@pytest.mark.empty_database
def test_a_backup_from_an_older_version_is_restored_onto_the_current_schema(
    db_url: str, tmp_path: Path
):
    old = make_engine(db_url)
    try:
        migrate(old, "0001")
        with old.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO projects (id, name, model) VALUES ('commons', 'Commons', 'flat_rate')"
            )
        file = tmp_path / "old.backup"
        backup(db_url, file)
        migrate(old)  # the shop upgrades, then needs last month's backup
        with session_factory(old).begin() as s:
            s.add(MqttAccount(username="new-node", kind="device", password_hash="x"))
    finally:
        old.dispose()

    restore(db_url, file)
    engine = make_engine(db_url)
    try:
        head = current_revision(engine)
        assert head is not None and head >= "0002"
        rows = snapshot(engine)
        assert rows["projects"] == [("commons", "Commons", "flat_rate")]
        assert rows["mqtt_accounts"] == []  # the backup's state, on the new schema
    finally:
        engine.dispose()


def test_a_file_that_is_not_a_backup_is_refused_and_nothing_changes(shop_db, tmp_path: Path):
    url, engine = shop_db
    before = snapshot(engine)
    junk = tmp_path / "notes.txt"
    junk.write_text("this is not a database\n")
    with pytest.raises(BackupError, match="not a"):
        restore(url, junk)
    assert snapshot(engine) == before


@pytest.mark.sqlite_only("the SQLite file backup (pg_dump's is tested above, on db_url)")
def test_sqlite_backup_refuses_to_overwrite_the_live_database(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'peershop.db'}"
    engine = make_engine(url)
    try:
        migrate(engine)
    finally:
        engine.dispose()
    with pytest.raises(BackupError, match="live database"):
        backup(url, tmp_path / "peershop.db")
