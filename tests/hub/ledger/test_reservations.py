"""Scarce slots: bids, clearing by rule (c), what access sees, and the cost at close."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from hub.ledger.closing import close_due_periods
from hub.ledger.periods import open_period
from hub.ledger.reservations import ReservationError, clear_due, reserve, winning_reservations
from hub.peerconomy.scenario import load_scenario, run_scenario
from hub.rules.access import Reservation
from hub.store.db import make_engine, migrate, session_factory
from hub.store.models import PeriodResourceCost, SlotReservation, Tool, UsageSession
from tests.hub.ledger.test_periods import (
    NEXT_WEEK,
    SCENARIOS,
    WEEK,
    add_members,
    balances,
    berlin,
    store_scenario_week,
)

SCARCE = {"slots": "Mon-Fri 18:00-21:00", "per_slot": 3600}
SLOT = datetime(2026, 11, 24, 17, 0, tzinfo=UTC)  # Tuesday 18:00 in Berlin
BID_AT = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


@pytest.fixture
def sm(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(db_url)
    migrate(engine)
    yield session_factory(engine)
    engine.dispose()


def laser(session: Session) -> None:
    add_members(session, ["A", "B", "C", "D"])
    session.add(Tool(id="laser", name="Laser", scarce=SCARCE))
    session.flush()


def test_the_contract_example_week_with_a_contested_slot(sm):
    """contract-example.yaml, stored: A (2.0) and B (1.2) want the same peak slot."""
    cfg = berlin()
    path = SCENARIOS / "contract-example.yaml"
    expected = run_scenario(load_scenario(path))
    with sm.begin() as s:
        store_scenario_week(s, path)
        s.get(Tool, "laser").scarce = SCARCE
        open_period(s, cfg, WEEK)
        reserve(s, cfg, "A", "laser", SLOT, "2.0", BID_AT)
        reserve(s, cfg, "B", "laser", SLOT, "1.2", BID_AT)
        assert clear_due(s, cfg, SLOT - timedelta(hours=25)) == []  # bids still open
        [c] = clear_due(s, cfg, SLOT - timedelta(hours=24))
        assert (c.multiplier, c.winners, c.losers) == (Decimal("1.2"), ("A",), ("B",))
        assert winning_reservations(s, "laser", SLOT) == [
            Reservation("A", SLOT, SLOT + timedelta(hours=1))
        ]
        # A uses the won slot; B, who lost, uses a plain hour the next morning
        s.add(
            UsageSession(
                key="a", tool_id="laser", member="A", start=SLOT, end=SLOT + timedelta(hours=1)
            )
        )
        plain = SLOT + timedelta(hours=15)
        s.add(
            UsageSession(
                key="b", tool_id="laser", member="B", start=plain, end=plain + timedelta(hours=1)
            )
        )
        [result] = close_due_periods(s, cfg, NEXT_WEEK)
        got = balances(s, result.period_id)
        cost = s.execute(
            select(PeriodResourceCost).where(PeriodResourceCost.resource == "laser")
        ).scalar_one()
    assert got == {
        m: (v.credited, v.expected, v.balance) for m, v in expected.allocation.members.items()
    }
    assert got["A"][2] == Decimal(4) and got["D"][2] == Decimal(-6)
    assert cost.unit_cost == Decimal("0.625")
    assert (cost.scarce_units, cost.scarce_multiplier) == (Decimal(1), Decimal("1.2"))


def test_few_requests_win_at_multiplier_one_and_ties_are_drawn_reproducibly(sm):
    cfg = berlin()
    with sm.begin() as s:
        laser(s)
        reserve(s, cfg, "A", "laser", SLOT, 1, BID_AT)
        other = SLOT + timedelta(hours=1)
        for m in ("B", "C", "D"):
            reserve(s, cfg, m, "laser", other, "1.5", BID_AT)
        clearings = {c.requests: c for c in clear_due(s, cfg, SLOT)}
        assert clearings[1].multiplier == 1 and clearings[1].winners == ("A",)
        tie = clearings[3]
        assert tie.multiplier == Decimal("1.5") and len(tie.winners) == 1
        first_draw = tie.winners
        # the draw is seeded from the period and the slot: clearing again gives the same
        for r in s.execute(select(SlotReservation)).scalars():
            r.cleared_at = None
        again = {c.requests: c for c in clear_due(s, cfg, SLOT)}
        assert again[3].winners == first_draw
        assert clear_due(s, cfg, SLOT) == []  # nothing left to clear


def test_bids_are_refused_outside_slots_after_closing_and_below_one(sm):
    cfg = berlin()
    with sm.begin() as s:
        laser(s)
        with pytest.raises(ReservationError, match="does not start"):
            reserve(s, cfg, "A", "laser", SLOT + timedelta(minutes=30), 2, BID_AT)
        with pytest.raises(ReservationError, match="does not start"):
            reserve(s, cfg, "A", "laser", SLOT - timedelta(hours=1), 2, BID_AT)  # 17:00
        with pytest.raises(ReservationError, match="closed"):
            reserve(s, cfg, "A", "laser", SLOT, 2, SLOT - timedelta(hours=2))
        with pytest.raises(ReservationError):
            reserve(s, cfg, "A", "laser", SLOT, "0.9", BID_AT)
        r = reserve(s, cfg, "A", "laser", SLOT, 2, BID_AT)
        assert reserve(s, cfg, "A", "laser", SLOT, 3, BID_AT).id == r.id  # a new bid
        assert r.max == 3


def test_the_close_clears_bids_nobody_cleared(sm):
    cfg = berlin()
    with sm.begin() as s:
        laser(s)
        open_period(s, cfg, WEEK)
        reserve(s, cfg, "A", "laser", SLOT, 2, BID_AT)
        reserve(s, cfg, "B", "laser", SLOT, 3, BID_AT)
        close_due_periods(s, cfg, NEXT_WEEK)
        outcomes = {
            r.member: (r.outcome, r.multiplier)
            for r in s.execute(select(SlotReservation)).scalars()
        }
    assert outcomes == {"A": ("lost", None), "B": ("won", Decimal(2))}
