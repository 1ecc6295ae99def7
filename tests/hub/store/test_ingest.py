"""hub.store.ingest.store_batch on a real database (SQLite file and PostgreSQL)."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from hub.store.db import current_revision, make_engine, migrate, session_factory
from hub.store.ingest import DEAD_LETTER_KEEP, Inbound, store_batch
from hub.store.models import DeadLetter, Device, DeviceClock, DeviceStatusLog, Event, Task
from tests.helpers import event_payload

T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


@pytest.fixture
def sm(db_url):
    engine = make_engine(db_url)
    migrate(engine)
    yield session_factory(engine)
    engine.dispose()


def msg(device: str, payload: bytes, leaf: str = "event", at: datetime = T0) -> Inbound:
    return Inbound(f"peershop/dev/{device}/{leaf}", payload, at)


def store(sm, messages):
    with sm.begin() as session:
        return store_batch(session, messages)


def count(sm, column, *where):
    with sm() as session:
        return session.scalar(select(func.count(column)).where(*where))


@pytest.mark.empty_database
def test_migrations_reach_head_and_match_the_models(db_url):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from hub.store.models import Base

    engine = make_engine(db_url)
    migrate(engine)
    migrate(engine)  # an upgrade of an up-to-date database changes nothing
    from alembic.script import ScriptDirectory

    from hub.store.db import alembic_config

    head = ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
    assert current_revision(engine) == head
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    engine.dispose()


def test_each_identity_is_stored_once_within_and_across_batches(sm):
    first = store(sm, [msg("a", event_payload(1, s)) for s in (0, 1, 2, 1)])
    assert [s.event.seq for s in first.new_events] == [0, 1, 2]
    assert first.duplicates == 1
    again = store(
        sm, [msg("a", event_payload(1, s)) for s in (2, 3)] + [msg("b", event_payload(1, 2))]
    )
    assert [(s.event.device_id, s.event.seq) for s in again.new_events] == [("a", 3), ("b", 2)]
    assert again.duplicates == 1
    # same seq in a new boot is a new event
    store(sm, [msg("a", event_payload(2, 0))])
    assert count(sm, Event.id) == 6


def test_event_fields_and_times_survive_the_round_trip(sm):
    payload = (
        b'{"boot":7,"seq":42,"ts":"2026-11-26T10:15:03.120Z","type":"badge",'
        b'"uid":"04a1b2c3d4e5f6","replay":true}'
    )
    store(sm, [msg("laser-node", payload, at=T0 + timedelta(seconds=5))])
    with sm() as session:
        ev = session.scalars(select(Event)).one()
    assert (ev.device_id, ev.boot, ev.seq, ev.type, ev.replay) == (
        "laser-node",
        7,
        42,
        "badge",
        True,
    )
    assert ev.data == {"uid": "04A1B2C3D4E5F6"}
    assert ev.device_ts == datetime(2026, 11, 26, 10, 15, 3, 120000, tzinfo=UTC)
    assert ev.received_at == T0 + timedelta(seconds=5)


def test_bad_messages_become_dead_letters_and_good_ones_in_the_batch_are_kept(sm):
    big = b'{"boot":1,"seq":9,"type":"fault","code":"x","msg":"' + b"z" * 6000 + b'"}'
    result = store(
        sm,
        [
            msg("a", event_payload(1, 0)),
            msg("a", b"{oops"),
            msg("a", event_payload(1, 1, type="teleport")),
            msg("Bad_Id", event_payload(1, 0)),
            msg("a", big),
            msg("a", b"{}", leaf="cmd"),
            msg("a", event_payload(1, 2)),
        ],
    )
    assert [s.event.seq for s in result.new_events] == [0, 2]
    with sm() as session:
        dead = session.scalars(select(DeadLetter).order_by(DeadLetter.id)).all()
    reasons = [d.reason for d in dead]
    assert len(dead) == 5
    assert "not JSON" in reasons[0]
    assert "unknown event type 'teleport'" in reasons[1]
    assert "device id 'Bad_Id'" in reasons[2] and dead[2].device_id is None
    assert "over the 4096 limit" in reasons[3]
    assert len(dead[3].payload) == DEAD_LETTER_KEEP and dead[3].size == len(big)
    assert "does not take messages on .../cmd" in reasons[4]
    assert dead[0].payload == b"{oops" and dead[0].device_id == "a"


def test_a_nul_character_is_a_dead_letter_not_a_failed_batch(sm):
    # PostgreSQL cannot store U+0000 in text; one such status failed the whole commit there
    result = store(
        sm,
        [
            msg("a", event_payload(1, 0)),
            msg("a", b'{"state":"online","boot":1,"fw":"1.0\\u0000"}', leaf="status"),
            msg("a", b'{"boot":1,"seq":1,"type":"consume","item":"pla\\u0000","qty":1,"unit":"g"}'),
            msg("a", event_payload(1, 2)),
        ],
    )
    assert [s.event.seq for s in result.new_events] == [0, 2]
    assert [reason for _, reason in result.dead_letters] == [
        "payload holds a NUL character (\\u0000), which no field may"
    ] * 2
    assert count(sm, DeadLetter.id) == 2


def test_unknown_devices_are_registered_as_pending_and_their_events_kept(sm):
    result = store(
        sm, [msg("new-lathe", event_payload(3, 0)), msg("new-lathe", event_payload(3, 1))]
    )
    assert result.new_devices == ["new-lathe"]
    with sm() as session:
        device = session.get(Device, "new-lathe")
    assert device.approval == "pending"
    assert device.first_seen == T0 and device.last_seen == T0
    assert device.last_event_id == max(s.id for s in result.new_events)
    assert count(sm, Event.id) == 2


def test_birth_and_will_set_online_and_a_stale_will_is_ignored(sm):
    store(sm, [msg("n", b'{"state":"online","boot":7,"fw":"1.4.2","kind":["reader"]}', "status")])
    with sm() as session:
        d = session.get(Device, "n")
        assert (d.online, d.boot, d.fw, d.kind) == (True, 7, "1.4.2", ["reader"])
    # the device rebooted; the broker then delivers the old boot's will late
    store(sm, [msg("n", b'{"state":"online","boot":8,"fw":"1.4.3"}', "status")])
    store(sm, [msg("n", b'{"state":"offline","boot":7}', "status")])
    with sm() as session:
        d = session.get(Device, "n")
        assert (d.online, d.boot, d.fw) == (True, 8, "1.4.3")
    assert count(sm, DeviceStatusLog.id, DeviceStatusLog.ignored.is_(True)) == 1
    store(sm, [msg("n", b'{"state":"offline","boot":8}', "status")])
    with sm() as session:
        assert session.get(Device, "n").online is False
    # the retained birth arriving again after a hub reconnect is logged once
    store(sm, [msg("n", b'{"state":"online","boot":8,"fw":"1.4.3"}', "status")])
    assert count(sm, DeviceStatusLog.id, DeviceStatusLog.boot == 8) == 2


def test_a_birth_clock_is_kept_once_and_a_retained_copy_teaches_nothing(sm):
    fast = b'{"state":"online","boot":7,"ts":"2026-11-26T16:00:00Z"}'  # six hours ahead
    store(sm, [msg("n", fast, "status")])
    # the same birth again: live after a reconnect, and as the broker's retained copy
    store(sm, [msg("n", fast, "status", at=T0 + timedelta(seconds=30))])
    retained = Inbound("peershop/dev/n/status", fast, T0 + timedelta(hours=1), retained=True)
    store(sm, [retained])
    with sm() as session:
        readings = session.execute(
            select(DeviceClock.boot, DeviceClock.device_ts, DeviceClock.received_at)
        ).all()
    assert readings == [(7, T0 + timedelta(hours=6), T0)]
    # a later birth of the boot is a new reading; a will says no clock
    store(sm, [msg("n", b'{"state":"online","boot":7,"ts":"2026-11-26T12:00:00Z"}', "status")])
    store(sm, [msg("n", b'{"state":"offline","boot":7}', "status")])
    assert count(sm, DeviceClock.id) == 2


def test_an_empty_retained_status_is_nothing_said(sm):
    result = store(sm, [msg("n", b"", "status")])
    assert result.dead_letters == [] and count(sm, DeadLetter.id) == 0


def test_decimals_are_exact_on_every_backend(sm):
    with sm.begin() as session:
        session.add(Task(id="t", title="x", slots=4, hours=Decimal("0.1"), weight=Decimal("1.45")))
    with sm() as session:
        task = session.get(Task, "t")
    assert task.hours == Decimal("0.1") and task.weight * 3 == Decimal("4.35")


def test_a_plug_bound_in_the_shop_file_is_not_left_pending(sm):
    from hub.contract.messages import DeviceEvent
    from hub.store.ingest import Parsed, store_parsed

    plug = DeviceEvent("tasmota/laser_plug", 0, 12345, "power", {"w": 5.0})
    with sm.begin() as session:
        store_parsed(
            session,
            [(Inbound("tele/laser_plug/SENSOR", b"{}", T0), Parsed(plug.device_id, event=plug))],
        )
    with sm() as session:
        assert session.get(Device, "tasmota/laser_plug").approval == "approved"
