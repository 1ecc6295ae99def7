"""Rule (a)'s ``clock`` mode: an unfilled slot's weight rises inside the period.

The pure engine, the task board (SQLite and PostgreSQL), the shop file, the migration,
and a live hub whose task station posts the risen weight, rebuilt equal by
``peershop rebuild --check``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import insert, select, text
from sqlalchemy.orm import Session, sessionmaker

from hub.cli import main
from hub.contract.messages import DeviceEvent
from hub.errors import ShopFileError
from hub.ledger.closing import close_due_periods, close_period
from hub.ledger.periods import open_period
from hub.ledger.taskboard import board, claim, done, pin, set_rules
from hub.peerconomy import economy as pc
from hub.rules.access import MemberAccess
from hub.rules.engine import ShopEngine
from hub.rules.records import EffortRec, ShopData, TaskInfo, WeightClock
from hub.service.service import Hub
from hub.shopfile.apply import apply_shop
from hub.shopfile.parse import parse_shop
from hub.store.db import make_engine, migrate, session_factory
from hub.store.models import EffortRecord, Period, Project, ProjectRules, Task, TaskClaim
from tests.helpers import Device, event_payload, wait_for
from tests.hub.ledger.test_periods import WEEK, add_members, berlin

T0 = datetime(2026, 11, 23, tzinfo=UTC)


# --- the pure engine ---------------------------------------------------------------------


def station_data(clock: WeightClock | None, slots: int = 2) -> ShopData:
    members = {h: MemberAccess(h, h.title()) for h in ("ada", "bob", "cy")}
    return ShopData(
        members=members,
        badges={"0A0A0A0A": "ada", "0B0B0B0B": "bob", "0C0C0C0C": "cy"},
        stations={"desk": "task_station"},
        tasks={"dust": TaskInfo("dust", Decimal(1), Decimal("0.5"), "commons", slots, clock)},
        period=(T0, T0 + timedelta(days=7)),
    )


def effort_at(engine: ShopEngine, uid: str, seq: int, at: datetime) -> EffortRec:
    """Choose dust at the desk, then badge: the effort's opening record."""
    engine.on_event(DeviceEvent("desk", 1, seq, "button", {"name": "task:dust"}), at)
    out = engine.on_event(DeviceEvent("desk", 1, seq + 1, "badge", {"uid": uid}), at)
    (rec,) = [r for r in out.records if isinstance(r, EffortRec)]
    return rec


def test_a_station_effort_is_credited_at_the_weight_risen_since_the_period_start():
    engine = ShopEngine(station_data(WeightClock()))
    day3 = T0 + timedelta(days=3, hours=5)
    first = effort_at(engine, "0A0A0A0A", 0, day3)
    # three whole days of nobody: 1 x (1 + 0.2 x 3/7)
    assert first.weight == Decimal("1.085714")
    # one of two slots taken: the second taker still sees the risen weight, a day later more
    second = effort_at(engine, "0B0B0B0B", 2, day3 + timedelta(days=1))
    assert second.weight == pc.weight_at(1, T0, day3 + timedelta(days=1), slots=2, taken=1)
    assert second.weight == Decimal("1.114286")
    # both slots taken: the task shows its period's weight again
    assert effort_at(engine, "0C0C0C0C", 4, day3 + timedelta(days=2)).weight == Decimal(1)


def test_board_claims_in_the_data_count_as_taken_slots_before_their_time():
    day3 = T0 + timedelta(days=3)
    clock = WeightClock(taken=(T0 + timedelta(days=1), day3 + timedelta(hours=2)))
    engine = ShopEngine(station_data(clock))
    # the claim of day 1 is taken, the one later on day 3 not yet: one slot is left
    assert effort_at(engine, "0A0A0A0A", 0, day3 + timedelta(hours=1)).weight > 1
    # both claims and Ada's effort: every slot is taken
    assert effort_at(engine, "0B0B0B0B", 2, day3 + timedelta(hours=3)).weight == Decimal(1)


def test_pinned_close_mode_and_out_of_period_efforts_are_not_risen():
    day5 = T0 + timedelta(days=5)
    pinned = ShopEngine(station_data(WeightClock(pinned=True)))
    assert effort_at(pinned, "0A0A0A0A", 0, day5).weight == 1
    assert effort_at(ShopEngine(station_data(None)), "0A0A0A0A", 0, day5).weight == 1
    late = T0 + timedelta(days=8)  # after the period the data knows: the posted weight
    assert effort_at(ShopEngine(station_data(WeightClock())), "0A0A0A0A", 0, late).weight == 1


def test_gain_and_bounds_of_the_project_apply_to_the_rise():
    clock = WeightClock(gain=Decimal("0.7"), hi=Decimal("1.5"))
    engine = ShopEngine(station_data(clock))
    assert effort_at(engine, "0A0A0A0A", 0, T0 + timedelta(days=2)).weight == Decimal("1.2")
    assert effort_at(engine, "0B0B0B0B", 2, T0 + timedelta(days=6)).weight == Decimal("1.5")


# --- the task board, on SQLite and PostgreSQL ---------------------------------------------


@pytest.fixture
def sm(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(db_url)
    migrate(engine)
    factory = session_factory(engine)
    with factory.begin() as s:
        add_members(s, ["ada", "bob", "cy"])
        s.add(Project(id="commons", name="Commons", model="flat_rate"))
        s.add(Project(id="bikes", name="Bikes", model="flat_rate"))
        s.flush()
        for tid, project, weight, slots in (
            ("dust", "commons", "1.0", 4),
            ("oil", "commons", "1.0", 2),
            ("intro", "commons", "1.5", 1),
            ("chain", "bikes", "1.0", 2),
        ):
            s.add(
                Task(
                    id=tid,
                    title=tid,
                    project_id=project,
                    slots=slots,
                    hours=Decimal("0.5"),
                    weight=Decimal(weight),
                )
            )
        s.flush()
        set_rules(s, "commons", "0.2", "0.25", "4.0", weight_mode="clock")
    yield factory
    engine.dispose()


def test_the_board_shows_and_a_claim_records_the_clock_weight(sm):
    cfg = berlin()
    now = WEEK + timedelta(days=2, hours=5)  # two whole days into the period
    risen = Decimal("1.057143")  # 1 x (1 + 0.2 x 2/7)
    with sm.begin() as s:
        pin(s, "intro", "1.5")
        entries = {e.task: e for e in board(s, now, cfg)}
        assert entries["dust"].weight == risen and entries["dust"].start_weight == 1
        assert entries["dust"].clock and not entries["chain"].clock
        assert entries["chain"].weight == 1  # a close-mode project: no rise
        assert entries["intro"].weight == Decimal("1.5")  # pinned: no rise
        c = claim(s, "ada", "dust", now, cfg)
        assert c.weight == risen
        record = done(s, "ada", "dust", now + timedelta(hours=1), cfg=cfg)
        assert record.weight == risen  # credited at the weight seen when taken
        # a station effort took one of oil's two slots, a claim the other: oil is filled
        s.add(
            EffortRecord(
                key="st-1",
                member="bob",
                task_id="oil",
                start=WEEK + timedelta(days=1),
                source="station",
            )
        )
        s.flush()
        assert {e.task: e for e in board(s, now, cfg)}["oil"].weight == risen
        assert claim(s, "cy", "oil", now, cfg).weight == risen
        assert {e.task: e for e in board(s, now, cfg)}["oil"].weight == 1


def test_the_close_starts_from_the_periods_weight_not_the_risen_one(sm):
    cfg = berlin()
    with sm.begin() as s:
        claim(s, "ada", "dust", WEEK + timedelta(days=6), cfg)
        assert s.scalars(select(TaskClaim.weight)).one() == Decimal("1.171429")
        close_due_periods(s, cfg, WEEK + timedelta(days=7, minutes=1))
        # S = 4, V = 1 from w = 1: 1 x (1 + 0.2 x 3/4)
        assert s.get(Task, "dust").weight == Decimal("1.15")


def test_a_new_period_and_a_clock_claim_tell_a_running_hub_to_reload(sm):
    from hub.store.shop_store import shop_version

    cfg = berlin()
    now = WEEK + timedelta(days=1)
    with sm.begin() as s:
        before = shop_version(s)
        open_period(s, cfg, now)  # a new period: task stations post weights from it
        assert shop_version(s) == before + 1
        open_period(s, cfg, now)
        claim(s, "ada", "chain", now, cfg)  # close mode: nothing for task stations
        assert shop_version(s) == before + 1
        claim(s, "ada", "dust", now, cfg)
        assert shop_version(s) == before + 2


# --- the shop file ------------------------------------------------------------------------

CLOCK_SHOP = """
projects:
  - {id: commons, name: Shop commons, model: flat_rate, weight_mode: clock, gain: 0.3}
members:
  - {handle: ada, name: Ada L., badges: ["04A1B2C3D4E5F6"]}
  - {handle: bob, name: Bob B., badges: ["5E2A9C11"]}
  - {handle: cy, name: Cy C., badges: ["77001122"]}
  - {handle: dee, name: Dee D., badges: ["8A11F0C3"]}
tasks:
  - {id: dust, title: Empty the dust collector, project: commons, slots: 2, hours: 0.5}
  - {id: sweep, title: Sweep the floor, project: commons, slots: 1, hours: 0.25}
stations:
  - {device: desk, kind: task_station}
"""


def test_the_shop_file_sets_the_weight_mode_per_project(db_url):
    engine = make_engine(db_url)
    migrate(engine)
    try:
        with session_factory(engine).begin() as s:
            changes = apply_shop(s, parse_shop(CLOCK_SHOP))
            rules = s.get(ProjectRules, "commons")
            assert (rules.weight_mode, rules.gain) == ("clock", Decimal("0.3"))
            assert "~ project commons: weight_mode close -> clock" in changes
        with session_factory(engine).begin() as s:
            back = CLOCK_SHOP.replace(", weight_mode: clock, gain: 0.3", "")
            assert "~ project commons: weight_mode clock -> close" in apply_shop(
                s, parse_shop(back)
            )
            assert s.get(ProjectRules, "commons").gain == pc.K
    finally:
        engine.dispose()


def test_a_bad_weight_mode_is_refused_naming_the_key():
    with pytest.raises(ShopFileError) as exc:
        parse_shop(CLOCK_SHOP.replace("weight_mode: clock", "weight_mode: daily"))
    assert "projects[0] (commons): weight_mode must be one of close, clock, not 'daily'" in str(
        exc.value
    )
    with pytest.raises(ShopFileError) as exc:
        parse_shop(CLOCK_SHOP.replace("gain: 0.3", "gain: 1.5, weight_min: 2, weight_max: 1"))
    assert "gain must be more than 0 and less than 1, not 1.5" in str(exc.value)
    assert "weight_max 1 is below weight_min 2" in str(exc.value)


# --- the migration ------------------------------------------------------------------------


@pytest.mark.empty_database
def test_migration_0008_gives_existing_projects_the_close_mode(db_url):
    engine = make_engine(db_url)
    try:
        migrate(engine, "0007")
        with engine.begin() as conn:
            conn.execute(
                insert(Project.__table__).values(id="commons", name="C", model="flat_rate")
            )
            conn.execute(
                text(
                    "INSERT INTO project_rules (project_id, gain, weight_min, weight_max) "
                    "VALUES ('commons', '0.3', '0.5', '2')"
                )
            )
        migrate(engine)
        with session_factory(engine)() as s:
            rules = s.get(ProjectRules, "commons")
            assert (rules.weight_mode, rules.gain, rules.weight_max) == (
                "close",
                Decimal("0.3"),
                Decimal("2"),
            )
    finally:
        engine.dispose()


# --- the live hub and its rebuild ---------------------------------------------------------

ADA, BOB, CY = "04A1B2C3D4E5F6", "5E2A9C11", "77001122"


def station_weights(hub: Hub) -> list[Decimal]:
    with hub.sm() as s:
        return list(
            s.scalars(
                select(EffortRecord.weight)
                .where(EffortRecord.source == "station", EffortRecord.end.is_not(None))
                .order_by(EffortRecord.start)
            )
        )


def desk_effort(
    desk: Device, hub: Hub, seq: int, uid: str, done_before: int, task: str = "dust"
) -> None:
    desk.send(event_payload(1, seq, type="button", name=task))
    desk.send(event_payload(1, seq + 1, type="badge", uid=uid))
    desk.send(event_payload(1, seq + 2, type="badge", uid=uid))
    desk.flush()
    wait_for(lambda: len(station_weights(hub)) == done_before + 1, what="the effort at the desk")


def rebuild_check(cfg, tmp_path: Path) -> None:
    env = {"PEERSHOP_DB_URL": cfg.db.url, "PEERSHOP_SITE_DATA_DIR": str(tmp_path / "data")}
    result = CliRunner().invoke(main, ["rebuild", "--check"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output


def test_a_task_station_posts_the_clock_weight_live_and_rebuild_agrees(
    hub_config, broker, tmp_path: Path
):
    now = datetime.now(UTC)
    start = now - timedelta(days=3, hours=12)  # the open period began three days ago
    engine = make_engine(hub_config.db.url)
    migrate(engine)
    sm = session_factory(engine)
    with sm.begin() as s:
        apply_shop(s, parse_shop(CLOCK_SHOP))
        s.add(Period(start=start, end=start + timedelta(days=7)))
        s.flush()
        claim(s, "cy", "dust", now - timedelta(days=1), hub_config)  # one of three slots
    desk = Device(broker.port, "desk")
    hub = Hub(hub_config)
    running: Hub | None = None
    try:
        running = hub
        hub.start()
        assert hub.wait_ready(10)
        desk_effort(desk, hub, 0, ADA, 0)  # Cy's claim: 1 of 2 dust slots taken, risen
        running = None
        hub.stop()
        hub = Hub(hub_config)  # a restart: Ada's effort before it still counts
        running = hub
        hub.start()
        assert hub.wait_ready(10)
        desk_effort(desk, hub, 3, BOB, 1)  # Cy's claim + Ada: every dust slot taken
        with sm.begin() as s:  # a claim while the hub runs: it reloads and counts it
            claim(s, "dee", "sweep", datetime.now(UTC), hub_config)
        wait_for(lambda: hub.rules.data.tasks["sweep"].clock.taken, what="the hub reloaded")
        desk_effort(desk, hub, 6, CY, 2, task="sweep")  # Dee's claim took the one slot
    finally:
        desk.close()
        if running is not None:
            running.stop()
    with sm() as s:
        starts = list(
            s.scalars(
                select(EffortRecord.start)
                .where(EffortRecord.source == "station")
                .order_by(EffortRecord.start)
            )
        )
    ada_weight = pc.weight_at(1, start, starts[0], slots=2, taken=1, k="0.3")
    assert ada_weight == Decimal("1.128571")  # 1 x (1 + 0.3 x 3/7)
    assert station_weights(hub) == [ada_weight, Decimal(1), Decimal(1)]
    rebuild_check(hub_config, tmp_path)
    # After the close the task's weight moved; the rebuild uses the period's own weight.
    with sm.begin() as s:
        close_period(s, hub_config, datetime.now(UTC), force=True)
        # S = 2, V = 3 (Cy's claim, two station efforts): 1 x (1 - 0.3 x 1/3) from w = 1
        assert s.get(Task, "dust").weight == Decimal("0.9")
        pin(s, "dust", "2.5")
    rebuild_check(hub_config, tmp_path)
    engine.dispose()
