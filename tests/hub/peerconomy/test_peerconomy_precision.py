"""Exact numbers however large: a shop's credit is a decimal computed without floats.

A long-lived shop, or one that counts effort in a small unit, reaches totals with more
digits than a float holds (about 16).  Each record's weighted hours, a period's total and
every balance stay exact to the last digit, and the balances still sum to exactly zero.
"""

from decimal import Decimal
from fractions import Fraction

import pytest

from hub.peerconomy import economy as pc
from hub.peerconomy.economy import EffortEntry, UseEntry

BIG = "123456789012345678.25"  # 21 significant digits


def test_weighted_hours_of_a_large_record_are_exact():
    entry = EffortEntry("ada", "cleaning", BIG, "1.5")
    assert entry.weighted_hours == Decimal("185185183518518517.375")
    assert EffortEntry("bob", "teaching", "98765432109876543210", "0.25").weighted_hours == (
        Decimal("24691358027469135802.5")
    )


@pytest.mark.parametrize(
    ("fraction", "decimal"),
    [
        (Fraction(3, 8), "0.375"),
        (Fraction(10**30 + 1, 4), "250000000000000000000000000000.25"),
        (Fraction(7, 10**25), "7E-25"),
        (Fraction(123456789012345678901234567, 5), "24691357802469135780246913.4"),
        (Fraction(40), "40"),
        (Fraction(-5, 2), "-2.5"),
    ],
)
def test_a_terminating_fraction_becomes_its_exact_decimal(fraction, decimal):
    assert pc._terminating(fraction) == Decimal(decimal)


def test_a_fraction_without_a_finite_decimal_is_refused():
    with pytest.raises(ValueError, match="1/3 has no finite decimal form"):
        pc._terminating(Fraction(1, 3))


def test_a_period_with_huge_effort_shares_exactly():
    effort = [
        EffortEntry("ada", "cleaning", BIG, "1.5"),
        EffortEntry("bob", "teaching", "0.1", "1"),
    ]
    alloc = pc.share("flat_rate", effort, participants=["ada", "bob", "cy"])
    assert alloc.total == Decimal("185185183518518517.475")
    assert alloc.members["ada"].credited == Decimal("185185183518518517.375")
    assert alloc.members["bob"].credited == Decimal("0.1")
    # summed as fractions: Python's own Decimal context keeps only 28 digits
    assert sum(Fraction(m.expected) for m in alloc.members.values()) == alloc.total
    assert sum(Fraction(m.balance) for m in alloc.members.values()) == 0
    for m in alloc.members.values():
        assert Fraction(m.balance) == Fraction(m.credited) - Fraction(m.expected)
    assert alloc.members["ada"].balance == Decimal("123456789012345678.216666666666")
    # a third each, rounded once to 12 places: within one quantum of exact
    third = Fraction(alloc.total) / 3
    for m in alloc.members.values():
        assert abs(Fraction(m.expected) - third) <= Fraction(1, 10**12)


def test_a_pool_report_with_huge_effort_is_exact():
    effort = [
        EffortEntry("ada", "laser-care", BIG, "1.5", resource="laser", project="laser"),
        EffortEntry("bob", "sweeping", "2", "1", project="commons"),
    ]
    use = [UseEntry("cy", "laser", 4)]
    report = pc.pool_report("production_effort", effort, use, resource_projects={"laser": "laser"})
    assert report["laser"].earned == Decimal("185185183518518517.375")
    assert report["laser"].expected == Decimal("185185183518518517.375")
    assert report["commons"].earned == Decimal("2")
    assert sum(Fraction(p.balance) for p in report.values()) == 0
    for p in report.values():
        assert Fraction(p.balance) == Fraction(p.earned) - Fraction(p.expected)


def test_the_unit_cost_of_a_resource_with_a_huge_pool_keeps_every_digit():
    effort = [EffortEntry("ada", "laser-care", BIG, "1", resource="laser")]
    use = [UseEntry("bob", "laser", 3)]
    alloc = pc.share("production_effort", effort, use)
    # 123456789012345678.25 / 3, rounded once to 12 places
    assert alloc.resources["laser"].unit_cost == Decimal("41152263004115226.083333333333")
    assert alloc.members["bob"].expected == Decimal(BIG)
    assert alloc.members["ada"].balance == Decimal(BIG)
