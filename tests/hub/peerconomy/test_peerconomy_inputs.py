"""What the peerconomy rules say to a shop file or scenario with a wrong number: each
message names the value that is wrong, and the edges of each range are where the rules
say (a gain of 0 or 1, bounds that meet, a weight at its bound, a claim at its limit)."""

from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from hub.peerconomy import economy as pc
from hub.peerconomy.economy import EffortEntry, Participant, UseEntry

T0 = datetime(2026, 11, 23)


def says(call) -> str:
    with pytest.raises(ValueError) as caught:
        call()
    return str(caught.value)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: pc.next_weight("x", 1, 0), "weight must be a number, not 'x'"),
        (lambda: pc.next_weight(0, 1, 0), "weight must be positive"),
        (lambda: pc.next_weight(1, 0, 0), "slots must be at least 1"),
        (lambda: pc.next_weight(1, 1, -1), "volunteers must not be negative"),
        (lambda: pc.next_weight(1, 1.5, 0), "slots must be a whole number, not 1.5"),
        (lambda: pc.next_weight(1, 1, 0, k="x"), "k must be a number, not 'x'"),
        (lambda: pc.next_weight(1, 1, 0, lo="x"), "lo must be a number, not 'x'"),
        (lambda: pc.next_weight(1, 1, 0, hi="x"), "hi must be a number, not 'x'"),
        (lambda: pc.next_weight(1, 1, 0, k="1.1"), "k 1.1 is outside [0, 1]"),
        (lambda: pc.next_weight(1, 1, 0, k="-0.1"), "k -0.1 is outside [0, 1]"),
        (lambda: pc.next_weight(1, 1, 0, lo=0), "bounds [0, 4.0] must satisfy 0 < lo <= hi"),
        (lambda: pc.next_weight(1, 1, 0, lo=2, hi=1), "bounds [2, 1] must satisfy 0 < lo <= hi"),
        (lambda: pc.weight_at("x", T0, T0, slots=1, taken=0), "weight must be a number, not 'x'"),
        (lambda: pc.weight_at(0, T0, T0, slots=1, taken=0), "weight must be positive"),
        (lambda: pc.weight_at(1, T0, T0, slots=0, taken=0), "slots must be at least 1"),
        (lambda: pc.weight_at(1, T0, T0, slots=1, taken=-1), "taken must not be negative"),
        (
            lambda: pc.weight_at(1, T0, T0 - timedelta(seconds=1), slots=1, taken=0),
            "2026-11-22T23:59:59 is before the period's start",
        ),
        (lambda: pc.check_weight("x"), "weight must be a number, not 'x'"),
        (lambda: pc.check_weight(1, lo="x"), "lo must be a number, not 'x'"),
        (lambda: pc.check_weight(1, hi="x"), "hi must be a number, not 'x'"),
        (lambda: pc.check_weight("4.01"), "weight 4.01 is outside [0.25, 4.0]"),
        (lambda: pc.check_weight("0.24"), "weight 0.24 is outside [0.25, 4.0]"),
        (lambda: pc.confirmations_needed("x", 1), "hours must be a number, not 'x'"),
        (lambda: pc.confirmations_needed(1, "x"), "posted hours must be a number, not 'x'"),
        (lambda: pc.confirmations_needed(0, 1), "hours and posted hours must be positive"),
        (lambda: pc.confirmations_needed(1, 0), "hours and posted hours must be positive"),
        (lambda: pc.hours_to_earn("x", 1), "weighted hours must be a number, not 'x'"),
        (lambda: pc.hours_to_earn(1, "x"), "weight must be a number, not 'x'"),
        (lambda: pc.hours_to_earn(1, 0), "weight must be positive"),
        (lambda: EffortEntry("", "t", 1, 1), "member must be a non-empty string, not ''"),
        (lambda: EffortEntry(5, "t", 1, 1), "member must be a non-empty string, not 5"),
        (lambda: EffortEntry("ada", "t", "x", 1), "hours must be a number, not 'x'"),
        (lambda: EffortEntry("ada", "t", 1, "x"), "weight must be a number, not 'x'"),
        (lambda: EffortEntry("ada", "t", -1, 1), "hours must not be negative"),
        (lambda: EffortEntry("ada", "t", 1, 0), "weight must be positive"),
        (lambda: UseEntry("", "laser", 1), "member must be a non-empty string, not ''"),
        (lambda: UseEntry("ada", "laser", "x"), "units must be a number, not 'x'"),
        (lambda: UseEntry("ada", "laser", -1), "units must not be negative"),
        (lambda: Participant("ada", "x"), "factor must be a number, not 'x'"),
        (lambda: Participant("ada", 0), "factor 0 must be positive"),
        (lambda: Participant("", 1), "member must be a non-empty string, not ''"),
    ],
)
def test_a_wrong_number_is_refused_naming_it(call, message):
    assert says(call) == message


def test_a_gain_of_zero_or_one_and_bounds_that_meet_are_allowed():
    assert pc.next_weight(1, slots=4, volunteers=0, k=0) == 1
    assert pc.next_weight(1, slots=4, volunteers=0, k=1) == 2
    assert pc.next_weight(2, slots=4, volunteers=0, lo=2, hi=2) == 2
    assert pc.weight_at(1, T0, T0 + timedelta(days=7), slots=1, taken=0, k=1) == 2


def test_a_weight_at_its_bounds_is_valid():
    assert pc.check_weight("0.25") == Decimal("0.25")
    assert pc.check_weight("4.0") == Decimal("4.0")
    assert pc.check_weight(2, lo=2, hi=2) == 2


def test_the_weight_on_the_board_rises_from_the_first_whole_day():
    assert pc.weight_at(1, T0, T0, slots=2, taken=0) == 1
    assert pc.weight_at(1, T0, T0 + timedelta(hours=23, minutes=59), slots=2, taken=0) == 1
    assert pc.weight_at(1, T0, T0 + timedelta(days=1), slots=2, taken=0) == Decimal("1.028571")
    assert pc.weight_at(1, T0, T0 + timedelta(days=7), slots=2, taken=1) == Decimal("1.2")
    assert pc.weight_at(1, T0, T0 + timedelta(days=7), slots=2, taken=2) == 1  # filled
    assert pc.weight_at(1, T0, T0 + timedelta(days=7), slots=2, taken=0, pinned=True) == 1
    assert pc.weight_at(3, T0, T0 + timedelta(days=70), slots=2, taken=0) == Decimal("4")


def test_a_claim_of_exactly_one_and_a_half_times_the_posted_hours_needs_no_confirmation():
    assert pc.confirmations_needed("1.5", "1") == 0
    assert pc.confirmations_needed("1.500001", "1") == 1


def test_hours_to_earn_at_small_weights():
    assert pc.hours_to_earn(9, "0.25") == 36
    assert pc.hours_to_earn(0, 2) == 0
    assert pc.hours_to_earn(1, 3) == Decimal("0.333333333333")


def test_a_cleared_auction_says_its_supply_and_how_many_asked():
    few = pc.clear_auction("laser", 3, [pc.Bid("ada", 2), pc.Bid("bob", "1.5")], seed="W48")
    assert (few.supply, few.requests, few.multiplier, few.winners, few.losers) == (
        3,
        2,
        Decimal(1),
        ("ada", "bob"),
        (),
    )
    bids = [pc.Bid("ada", 3), pc.Bid("bob", "1.5"), pc.Bid("cy", 2)]
    many = pc.clear_auction("laser", 2, bids, seed="W48")
    assert (many.supply, many.requests, many.multiplier, many.winners, many.losers) == (
        2,
        3,
        Decimal("1.5"),
        ("ada", "cy"),
        ("bob",),
    )
    assert says(lambda: pc.clear_auction("laser", -1, bids, seed="W48")) == (
        "scarce_units must not be negative"
    )


def test_a_project_that_only_owns_a_used_resource_is_expected_its_cost():
    effort = [
        EffortEntry("ada", "laser-care", 6, 1, resource="laser", project="commons"),
        EffortEntry("bob", "sweeping", 2, 1, project="commons"),
    ]
    use = [UseEntry("cy", "laser", 2)]
    report = pc.pool_report("production_effort", effort, use, resource_projects={"laser": "lab"})
    assert report["lab"] == pc.ProjectShare(Decimal(0), Decimal(6), Decimal(-6))
    assert report["commons"] == pc.ProjectShare(Decimal(8), Decimal(2), Decimal(6))
