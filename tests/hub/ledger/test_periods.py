"""Periods on SQLite and PostgreSQL: boundaries, the close, balances, weights, immutability."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from hub.cli import main
from hub.config import Config, load_config
from hub.errors import ClosedPeriodError, PeriodError
from hub.ledger.closing import close_due_periods, close_period
from hub.ledger.periods import correct_effort, open_period, period_bounds
from hub.ledger.taskboard import claim, done, pin
from hub.peerconomy.scenario import load_scenario, run_scenario
from hub.shopfile.apply import apply_shop
from hub.shopfile.parse import parse_shop
from hub.store.db import make_engine, migrate, session_factory
from hub.store.models import (
    EffortRecord,
    Member,
    ParticipationFactor,
    Period,
    PeriodBalance,
    PeriodResourceCost,
    PresenceChange,
    Project,
    Task,
    TaskWeightHistory,
    Tool,
    UsageSession,
)
from tests.helpers import peershop_command

SCENARIOS = Path(__file__).resolve().parents[3] / "examples" / "scenarios"
# Monday 2026-11-23 00:00 in Berlin is 2026-11-22 23:00 UTC.
WEEK = datetime(2026, 11, 22, 23, 0, tzinfo=UTC)
NEXT_WEEK = WEEK + timedelta(days=7)


def berlin(**period: object) -> Config:
    return load_config(
        env={}, search=(), overrides={"site": {"timezone": "Europe/Berlin"}, "period": period}
    )


@pytest.fixture
def sm(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(db_url)
    migrate(engine)
    yield session_factory(engine)
    engine.dispose()


def add_members(session: Session, handles: list[str]) -> None:
    for h in handles:
        if session.execute(select(Member).where(Member.handle == h)).scalar() is None:
            session.add(Member(handle=h, name=h))
    session.flush()


def store_scenario_week(session: Session, path: Path, at: datetime = WEEK) -> None:
    """The scenario's effort and use as stored records of the week starting ``at``."""
    sc = load_scenario(path)
    members = [p.member for p in sc.participants]
    add_members(session, members)
    session.add(Project(id="commons", name="Commons", model=sc.model))
    session.flush()
    resources = {e.resource for e in sc.effort if e.resource} | {u.resource for u in sc.use}
    for r in sorted(resources):
        session.add(Tool(id=r, name=r, project_id="commons"))
    for e in sc.effort:
        if session.get(Task, e.task) is None:
            session.add(
                Task(
                    id=e.task,
                    title=e.task,
                    project_id="commons",
                    resource=e.resource,
                    weight=e.weight,
                    slots=1,
                )
            )
    t = at + timedelta(hours=10)
    for i, e in enumerate(sc.effort):
        session.add(
            EffortRecord(
                key=f"e{i}",
                member=e.member,
                task_id=e.task,
                project_id="commons",
                start=t,
                end=t + timedelta(hours=1),
                hours=e.hours,
                weight=e.weight,
                source="coordinator",
            )
        )
    for i, u in enumerate(sc.use):
        start = at + timedelta(days=1, hours=i)
        session.add(
            UsageSession(
                key=f"u{i}",
                tool_id=u.resource,
                member=u.member,
                start=start,
                end=start + timedelta(hours=float(u.units)),
            )
        )
    for m in members:
        session.add(
            PresenceChange(member=m, at=at + timedelta(hours=9), state="in", reason="badge")
        )
    session.flush()


def balances(session: Session, period_id: int) -> dict[str, tuple[Decimal, Decimal, Decimal]]:
    return {
        b.member: (b.credited, b.expected, b.balance)
        for b in session.execute(
            select(PeriodBalance).where(PeriodBalance.period_id == period_id)
        ).scalars()
    }


# ---------------------------------------------------------------------------------------
# boundaries


def test_a_week_is_seven_local_days_across_daylight_saving_changes():
    cfg = berlin()
    spring = period_bounds(cfg, datetime(2026, 3, 27, 12, tzinfo=UTC))  # clocks go forward 29th
    autumn = period_bounds(cfg, datetime(2026, 10, 22, 12, tzinfo=UTC))  # back on 25th
    plain = period_bounds(cfg, datetime(2026, 11, 25, 12, tzinfo=UTC))
    assert spring[1] - spring[0] == timedelta(hours=167)
    assert autumn[1] - autumn[0] == timedelta(hours=169)
    assert plain == (WEEK, NEXT_WEEK)
    # every boundary is Monday midnight on the wall clock in Berlin
    for start, end in (spring, autumn, plain):
        for edge in (start, end):
            local = edge.astimezone(cfg.site.timezone)
            assert (local.weekday(), local.hour, local.minute) == (0, 0, 0)


def test_anchor_and_length_come_from_the_config():
    cfg = berlin(length="14d", anchor="wednesday 18:00")
    start, end = period_bounds(cfg, datetime(2026, 11, 28, 12, tzinfo=UTC))
    local = start.astimezone(cfg.site.timezone)
    assert (local.weekday(), local.hour) == (2, 18)
    assert end - start == timedelta(days=14)
    assert start <= datetime(2026, 11, 28, 12, tzinfo=UTC) < end


def test_periods_follow_each_other_without_gaps(sm):
    cfg = berlin()
    with sm.begin() as s:
        first = open_period(s, cfg, WEEK + timedelta(days=1))
        third = open_period(s, cfg, WEEK + timedelta(days=15))
        assert third.start == first.end + timedelta(days=7)
        assert s.scalar(select(func.count()).select_from(Period)) == 3
        assert open_period(s, cfg, WEEK + timedelta(days=2)).id == first.id


# ---------------------------------------------------------------------------------------
# the close reproduces the engine


@pytest.mark.parametrize("name", ["flat-rate", "flat-allocation", "production-effort"])
def test_a_stored_week_closes_to_the_same_balances_as_simulate(sm, name):
    path = SCENARIOS / f"{name}.yaml"
    expected = run_scenario(load_scenario(path)).allocation
    cfg = berlin()
    with sm.begin() as s:
        store_scenario_week(s, path)
        closed = close_due_periods(s, cfg, WEEK + timedelta(days=1))  # creates the open one
        assert closed == []
        [result] = close_due_periods(s, cfg, NEXT_WEEK)
        stored = balances(s, result.period_id)
        assert stored == {
            m: (v.credited, v.expected, v.balance) for m, v in expected.members.items()
        }
        assert sum(b for _, _, b in stored.values()) == 0
        costs = {
            c.resource: c.unit_cost
            for c in s.execute(
                select(PeriodResourceCost).where(PeriodResourceCost.period_id == result.period_id)
            ).scalars()
        }
        # resources someone used; a pool nobody used has no unit cost to store
        assert costs == {r: v.unit_cost for r, v in expected.resources.items() if v.units}


def test_production_effort_balances_are_those_of_peerconomy_md(sm):
    cfg = berlin()
    with sm.begin() as s:
        store_scenario_week(s, SCENARIOS / "production-effort.yaml")
        open_period(s, cfg, WEEK)
        [result] = close_due_periods(s, cfg, NEXT_WEEK + timedelta(minutes=1))
        got = {m: b for m, (_, _, b) in balances(s, result.period_id).items()}
    assert got == {
        "A": Decimal("4.75"),
        "B": Decimal("2.75"),
        "C": Decimal("-1.25"),
        "D": Decimal("-6.25"),
    }


def test_running_balances_add_up_across_periods(sm):
    cfg = berlin()
    with sm.begin() as s:
        store_scenario_week(s, SCENARIOS / "flat-rate.yaml")
        open_period(s, cfg, WEEK)
        close_due_periods(s, cfg, NEXT_WEEK)
        # week two: A cleans again, D signs in
        s.add(
            EffortRecord(
                key="w2",
                member="A",
                task_id="cleaning",
                project_id="commons",
                start=NEXT_WEEK + timedelta(hours=5),
                hours=Decimal(2),
                weight=Decimal("1.5"),
                source="coordinator",
            )
        )
        s.add(
            PresenceChange(
                member="D", at=NEXT_WEEK + timedelta(hours=6), state="in", reason="badge"
            )
        )
        [second] = close_due_periods(s, cfg, NEXT_WEEK + timedelta(days=7))
        rows = {
            b.member: b
            for b in s.execute(
                select(PeriodBalance).where(PeriodBalance.period_id == second.period_id)
            ).scalars()
        }
    # week one: A +4, D -5; week two: E = 3 shared by A and D, A +1.5, D -1.5
    assert (rows["A"].balance, rows["A"].running) == (Decimal("1.5"), Decimal("5.5"))
    assert (rows["D"].balance, rows["D"].running) == (Decimal("-1.5"), Decimal("-6.5"))
    assert "B" not in rows  # B took no part in week two; their running balance stays +2


def test_effort_without_a_task_is_left_out_and_reported(sm):
    cfg = berlin()
    with sm.begin() as s:
        store_scenario_week(s, SCENARIOS / "flat-rate.yaml")
        s.add(
            EffortRecord(
                key="station-1",
                member="D",
                task_id=None,
                start=WEEK + timedelta(hours=3),
                hours=Decimal(5),
                source="station",
            )
        )
        open_period(s, cfg, WEEK)
        [result] = close_due_periods(s, cfg, NEXT_WEEK)
        assert [e["key"] for e in result.excluded] == ["station-1"]
        assert balances(s, result.period_id)["D"] == (0, 5, -5)
        assert s.get(Period, result.period_id).report["excluded"][0]["reason"] == "no task chosen"


# ---------------------------------------------------------------------------------------
# closing once, and never changing a closed period


def test_close_is_idempotent(sm):
    cfg = berlin()
    with sm.begin() as s:
        store_scenario_week(s, SCENARIOS / "flat-rate.yaml")
        open_period(s, cfg, WEEK)
        assert len(close_due_periods(s, cfg, NEXT_WEEK)) == 1
        assert close_due_periods(s, cfg, NEXT_WEEK) == []
        assert close_due_periods(s, cfg, NEXT_WEEK + timedelta(hours=1)) == []
        assert s.scalar(select(func.count()).select_from(PeriodBalance)) == 4


def test_two_hubs_closing_at_once_close_the_period_once(sm):
    cfg = berlin()
    with sm.begin() as s:
        store_scenario_week(s, SCENARIOS / "flat-rate.yaml")
        open_period(s, cfg, WEEK)
    with sm() as first, sm() as second:
        a = close_due_periods(first, cfg, NEXT_WEEK)
        first.commit()
        b = close_due_periods(second, cfg, NEXT_WEEK)
        second.commit()
    assert (len(a), len(b)) == (1, 0)
    with sm() as s:
        assert s.scalar(select(func.count()).select_from(PeriodBalance)) == 4


def test_a_closed_period_refuses_changes_and_corrections_land_in_the_open_one(sm):
    cfg = berlin()
    with sm.begin() as s:
        store_scenario_week(s, SCENARIOS / "flat-rate.yaml")
        open_period(s, cfg, WEEK)
        [result] = close_due_periods(s, cfg, NEXT_WEEK)
        pid = result.period_id
    with sm() as s, pytest.raises(ClosedPeriodError):
        s.get(Period, pid).end = NEXT_WEEK + timedelta(days=1)
        s.flush()
    with sm() as s, pytest.raises(ClosedPeriodError):
        row = s.execute(select(PeriodBalance).where(PeriodBalance.period_id == pid)).scalar()
        row.balance = Decimal(0)
        s.flush()
    with sm() as s, pytest.raises(ClosedPeriodError):
        s.delete(s.execute(select(PeriodBalance).where(PeriodBalance.period_id == pid)).scalar())
        s.flush()
    with sm.begin() as s:
        fix = correct_effort(s, cfg, "C", "teaching", "-1", NEXT_WEEK + timedelta(hours=2))
        assert open_period(s, cfg, fix.start).id != pid
        assert balances(s, pid)["C"] == (4, 5, -1)  # the closed week is as it was


def test_closing_early_ends_the_period_at_that_instant(sm):
    cfg = berlin()
    at = WEEK + timedelta(days=3)
    with sm.begin() as s:
        store_scenario_week(s, SCENARIOS / "flat-rate.yaml")
        open_period(s, cfg, WEEK)
        [result] = close_period(s, cfg, at)
        assert (result.start, result.end) == (WEEK, at)
        nxt = open_period(s, cfg, at)
        assert (nxt.start, nxt.end) == (at, NEXT_WEEK)
        with pytest.raises(PeriodError):
            close_period(s, cfg, at)  # the new period is empty at its first instant


# ---------------------------------------------------------------------------------------
# weights, rule (a)


def test_weights_move_by_rule_a_at_close_and_are_kept(sm):
    cfg = berlin()
    with sm.begin() as s:
        add_members(s, ["A", "B", "C", "D", "E"])
        s.add(Project(id="commons", name="Commons", model="flat_rate"))
        s.flush()
        s.add(Task(id="dust", title="Empty the dust collector", project_id="commons", slots=4))
        s.add(Task(id="intro", title="Teach the laser intro", project_id="commons", slots=2))
        s.add(Task(id="tidy", title="Tidy", project_id="commons", slots=1, weight=Decimal("3.8")))
        s.add(Task(id="oil", title="Oil the lathe", project_id="commons", slots=1))
        s.flush()
        now = WEEK + timedelta(days=1)
        for m in ("A", "B"):
            claim(s, m, "dust", now, cfg)
        for m in ("A", "B"):
            claim(s, m, "intro", now, cfg)
        done(s, "A", "intro", now, cfg=cfg)
        # three more take the intro at a station (no claim)
        for i, m in enumerate(("C", "D", "E")):
            s.add(
                EffortRecord(
                    key=f"st{i}",
                    member=m,
                    task_id="intro",
                    project_id="commons",
                    start=now,
                    hours=Decimal(1),
                    weight=Decimal(1),
                    source="station",
                )
            )
        pin(s, "oil", "2.0")
        [result] = close_due_periods(s, cfg, NEXT_WEEK)
        weights = {t.id: t.weight for t in s.execute(select(Task)).scalars()}
        history = {
            h.task_id: (h.weight, h.slots, h.volunteers, h.next_weight)
            for h in s.execute(select(TaskWeightHistory)).scalars()
        }
    assert weights == {
        "dust": Decimal("1.1"),
        "intro": Decimal("0.88"),
        "tidy": Decimal("4"),
        "oil": Decimal("2.0"),
    }
    assert history["dust"] == (Decimal(1), 4, 2, Decimal("1.1"))
    assert history["intro"] == (Decimal(1), 2, 5, Decimal("0.88"))
    assert result.weights["oil"] == (Decimal("2.0"), Decimal("2.0"))


# ---------------------------------------------------------------------------------------
# commands


def test_period_close_and_show_commands(tmp_path: Path, db_url: str):
    cfg_file = tmp_path / "peershop.toml"
    cfg_file.write_text(f'[site]\ntimezone = "Europe/Berlin"\n[db]\nurl = "{db_url}"\n')
    engine = make_engine(db_url)
    migrate(engine)
    with session_factory(engine).begin() as s:
        store_scenario_week(s, SCENARIOS / "flat-rate.yaml")
        open_period(s, berlin(), WEEK)
    engine.dispose()
    runner = CliRunner()
    out = runner.invoke(
        main, ["--config", str(cfg_file), "period", "close", "--at", "2026-11-30T00:00:00+01:00"]
    )
    assert out.exit_code == 0, out.output
    assert "A" in out.output and "+4.00" in out.output and "-5.00" in out.output
    out = runner.invoke(main, ["--config", str(cfg_file), "period", "show", "--json"])
    assert out.exit_code == 0, out.output
    shown = json.loads(out.output)["periods"]
    last = next(p for p in shown if p["closed_at"])
    assert last["projects"]["commons"]["members"]["D"]["balance"] == -5.0
    bad = runner.invoke(main, ["--config", str(cfg_file), "period", "close", "--at", "yesterday"])
    assert bad.exit_code != 0 and "ISO" in bad.output


def closed_periods(url: str) -> list[tuple[datetime, datetime]]:
    engine = make_engine(url)
    try:
        with session_factory(engine)() as s:
            rows = s.execute(
                select(Period.start, Period.end)
                .where(Period.closed_at.is_not(None))
                .order_by(Period.start)
            )
            return [tuple(r) for r in rows]
    finally:
        engine.dispose()


def test_closing_twice_in_a_row_is_refused_unless_forced(tmp_path: Path, db_url: str):
    """Issue 13, item 16: a second `peershop period close` right after the first closed a
    period of a second.  It is refused below period.min_length, naming the key and
    --force, and changes nothing; --force closes it."""
    cfg_file = tmp_path / "peershop.toml"
    cfg_file.write_text(f'[site]\ntimezone = "Europe/Berlin"\n[db]\nurl = "{db_url}"\n')
    now = datetime.now(UTC)
    engine = make_engine(db_url)
    with session_factory(engine).begin() as s:
        s.add(Period(start=now - timedelta(days=2), end=now + timedelta(days=5)))
    engine.dispose()

    first = peershop_command(cfg_file, "period", "close")
    assert first.returncode == 0, first.stderr
    closed = closed_periods(db_url)
    assert closed[-1][0] == now - timedelta(days=2) and closed[-1][1] > now

    again = peershop_command(cfg_file, "period", "close")
    assert again.returncode != 0
    assert "period.min_length" in again.stderr and "--force" in again.stderr
    assert closed_periods(db_url) == closed  # nothing closed, nothing changed

    forced = peershop_command(cfg_file, "period", "close", "--force")
    assert forced.returncode == 0, forced.stderr
    after = closed_periods(db_url)
    assert len(after) == len(closed) + 1
    start, end = after[-1]
    assert start == closed[-1][1] and end - start < timedelta(hours=1)


# ---------------------------------------------------------------------------------------
# the shop file's settings at close: participation factors, busy hours


def effort(s: Session, key: str, member: str, task: str, hours: str, weight: str = "1") -> None:
    t = WEEK + timedelta(hours=10)
    s.add(
        EffortRecord(
            key=key,
            member=member,
            task_id=task,
            start=t,
            end=t + timedelta(hours=1),
            hours=Decimal(hours),
            weight=Decimal(weight),
            source="coordinator",
        )
    )


def signed_in(s: Session, *members: str) -> None:
    for m in members:
        s.add(PresenceChange(member=m, at=WEEK + timedelta(hours=9), state="in", reason="badge"))


def test_a_half_time_member_is_expected_half_as_much_under_flat_rate(sm):
    shop = """
projects: [{id: commons, model: flat_rate}]
members:
  - {handle: ana, name: Ana, factor: 0.5}
  - {handle: bo, name: Bo}
  - {handle: cy, name: Cy, factor: 1}
tasks: [{id: sweep, title: Sweep, project: commons}]
"""
    cfg = berlin()
    with sm.begin() as s:
        changes = apply_shop(s, parse_shop(shop))
        assert "~ member ana: factor 1 -> 0.5" in changes
        open_period(s, cfg, WEEK)
        effort(s, "e1", "bo", "sweep", "10")
        signed_in(s, "ana", "cy")
        [result] = close_due_periods(s, cfg, NEXT_WEEK)
        got = balances(s, result.period_id)
    # E = 10 shared by factors 0.5 + 1 + 1: Ana is expected 2, the others 4 each.
    assert got == {
        "ana": (Decimal(0), Decimal(2), Decimal(-2)),
        "bo": (Decimal(10), Decimal(4), Decimal(6)),
        "cy": (Decimal(0), Decimal(4), Decimal(-4)),
    }


def test_a_factor_halves_the_overhead_share_but_not_the_cost_of_use(sm):
    cfg = berlin()
    with sm.begin() as s:
        store_scenario_week(s, SCENARIOS / "production-effort.yaml")
        d = s.execute(select(Member).where(Member.handle == "D")).scalar_one()
        s.add(ParticipationFactor(member_id=d.id, factor=Decimal("0.5")))
        open_period(s, cfg, WEEK)
        [result] = close_due_periods(s, cfg, NEXT_WEEK + timedelta(minutes=1))
        got = balances(s, result.period_id)
    # docs/sharing-models.md's week: overhead 13; laser 0.5/h, printer 0.1/h.  A used 2 laser
    # hours (1.0), D 5 laser and 5 printer hours (3.0).  With D at 0.5, the overhead is
    # shared 1 : 1 : 1 : 0.5, so A, B, C carry 13/3.5 each and D half of that.
    overhead_a = got["A"][1] - Decimal("1.0")
    overhead_d = got["D"][1] - Decimal("3.0")
    assert abs(overhead_a - Decimal(13) / Decimal("3.5")) < Decimal("1e-12")
    assert abs(overhead_d * 2 - overhead_a) < Decimal("1e-11")
    assert sum(b for _, _, b in got.values()) == 0
    assert {m: c for m, (c, _, _) in got.items()} == {
        "A": Decimal(9),
        "B": Decimal(7),
        "C": Decimal(4),
        "D": Decimal(0),
    }


def test_a_busy_hours_tool_charges_its_busy_hours_not_its_session_hours(sm):
    shop = """
projects: [{id: commons, model: production_effort}]
members:
  - {handle: ana, name: Ana}
  - {handle: bo, name: Bo}
tools:
  - {id: laser-1, project: commons, devices: [{tasmota: laser-plug}], units: busy_hours}
  - {id: drill-1, project: commons, devices: [{tasmota: drill-plug}]}
tasks:
  - {id: laser-care, title: Laser upkeep, project: commons, resource: laser-1}
  - {id: drill-care, title: Drill upkeep, project: commons, resource: drill-1}
"""
    cfg = berlin()
    with sm.begin() as s:
        apply_shop(s, parse_shop(shop))
        open_period(s, cfg, WEEK)
        effort(s, "e1", "ana", "laser-care", "3")
        effort(s, "e2", "ana", "drill-care", "3")
        # Ana: the laser on for 2 h, cutting for 30 min; Bo: 1 h, cutting all the time.
        # The same sessions on the drill count their whole length.
        for i, (tool, member, hours, busy_s) in enumerate(
            [
                ("laser-1", "ana", 2, 1800),
                ("laser-1", "bo", 1, 3600),
                ("drill-1", "ana", 2, 1800),
                ("drill-1", "bo", 1, 3600),
            ]
        ):
            start = WEEK + timedelta(days=1, hours=3 * i)
            s.add(
                UsageSession(
                    key=f"u{i}",
                    tool_id=tool,
                    member=member,
                    start=start,
                    end=start + timedelta(hours=hours),
                    busy_s=busy_s,
                )
            )
        [result] = close_due_periods(s, cfg, NEXT_WEEK)
        costs = {
            c.resource: (c.units, c.unit_cost)
            for c in s.execute(
                select(PeriodResourceCost).where(PeriodResourceCost.period_id == result.period_id)
            ).scalars()
        }
        got = balances(s, result.period_id)
    assert costs == {"laser-1": (Decimal("1.5"), Decimal(2)), "drill-1": (Decimal(3), Decimal(1))}
    # Laser pool 3 over 1.5 busy hours: Ana 0.5 h = 1, Bo 1 h = 2; drill: Ana 2, Bo 1.
    assert got == {
        "ana": (Decimal(6), Decimal(3), Decimal(3)),
        "bo": (Decimal(0), Decimal(3), Decimal(-3)),
    }


def test_a_random_week_closes_to_the_exact_shares_of_peerconomy_b(sm):
    """Many odd decimals and factors: every expected contribution is within one 10^-12
    quantum of the exact rational share computed here record by record."""
    import random
    from fractions import Fraction

    rnd = random.Random(48)
    members = [f"m{i}" for i in range(12)]
    tools = ["laser", "saw", "printer"]
    chosen = {m: Decimal(rnd.choice(["1", "0.5", "0.75", "1.25", "0.3"])) for m in members}
    factors = {m: Fraction(f) for m, f in chosen.items()}
    cfg = berlin()
    with sm.begin() as s:
        add_members(s, members)
        s.add(Project(id="commons", name="Commons", model="production_effort"))
        s.flush()
        for m in members:
            if factors[m] != 1:
                member_id = s.execute(select(Member.id).where(Member.handle == m)).scalar_one()
                s.add(ParticipationFactor(member_id=member_id, factor=chosen[m]))
        for t in tools:
            s.add(Tool(id=t, name=t, project_id="commons"))
            s.add(Task(id=f"{t}-care", title=t, project_id="commons", resource=t))
        s.add(Task(id="sweep", title="Sweep", project_id="commons"))  # overhead
        s.add(Task(id="unused", title="Idle", project_id="commons", resource="lathe"))
        open_period(s, cfg, WEEK)
        credited = dict.fromkeys(members, Fraction(0))
        pools: dict[str | None, Fraction] = {}
        for i in range(150):
            m = rnd.choice(members)
            task = rnd.choice([*(f"{t}-care" for t in tools), "sweep", "unused"])
            hours = Decimal(rnd.randint(1, 4000)) / 1000
            weight = Decimal(rnd.randint(250_000, 4_000_000)) / 1_000_000
            effort(s, f"e{i}", m, task, str(hours), str(weight))
            wh = Fraction(hours) * Fraction(weight)
            credited[m] += wh
            resource = None if task in ("sweep", "unused") else task.removesuffix("-care")
            pools[resource] = pools.get(resource, Fraction(0)) + wh
        used: dict[tuple[str, str], Fraction] = {}
        for i in range(200):
            m, t = rnd.choice(members[:9]), rnd.choice(tools)
            seconds = 36 * rnd.randint(1, 500)  # whole hundredths of an hour
            start = WEEK + timedelta(minutes=1 + 40 * i)  # all start inside the week
            s.add(
                UsageSession(
                    key=f"u{i}",
                    tool_id=t,
                    member=m,
                    start=start,
                    end=start + timedelta(seconds=seconds),
                )
            )
            used[(m, t)] = used.get((m, t), Fraction(0)) + Fraction(seconds, 3600)
        signed_in(s, *members)
        [result] = close_due_periods(s, cfg, NEXT_WEEK)
        got = balances(s, result.period_id)
    units = {t: sum((n for (_, r), n in used.items() if r == t), Fraction(0)) for t in tools}
    overhead = sum(credited.values()) - sum(pools.get(t, Fraction(0)) for t in tools)
    exact = {m: overhead * factors[m] / sum(factors.values()) for m in members}
    for (m, t), n in used.items():
        exact[m] += n * pools.get(t, Fraction(0)) / units[t]
    quantum = Fraction(1, 10**12)
    for m in members:
        c, e, b = got[m]
        assert Fraction(c) == credited[m]
        assert abs(Fraction(e) - exact[m]) <= quantum, m
        assert b == c - e
    assert sum(b for _, _, b in got.values()) == 0
