"""The peerconomy rules of docs/sharing-models.md as pure functions over frozen data.

The hub calls these at period close and ``peershop simulate`` calls them on a scenario
file, so both give the same numbers.  Nothing here reads a clock, a file or a database:
effort, use and bids come in as plain records, time comes in as an argument.

Three rules:

* (a) task weights: :func:`next_weight` at period close, :func:`weight_at` in ``clock`` mode;
* (b) sharing models: :func:`share` turns a period's effort and use into every member's
  credited and expected contribution and balance, :func:`pool_report` shows a
  distribution pool per project;
* (c) preference weighting: :func:`clear_auction` settles contested scarce units;
* (j) big claims: :func:`confirmations_needed` says when a done waits for a confirmation.

Exactness: amounts are :class:`~decimal.Decimal`; every division is done on
:class:`~fractions.Fraction`, so nothing is lost inside.  A share such as 20/3 has no
finite decimal form, so expected contributions are rounded once, at the end, to
``PLACES`` (12) decimal places (finer when the period's total effort itself has more
places) by the largest-remainder method: everyone gets their exact share rounded down,
and the few quanta that are left go to the largest remainders, ties to the member id
that sorts first.  So Σ expected equals Σ credited *exactly*, Σ balance is exactly 0,
each expected contribution is within one quantum of its exact value, and the result
does not depend on the order of the records.

>>> effort = [EffortEntry("A", "cleaning", 6, "1.5"), EffortEntry("C", "teaching", 5, "0.8")]
>>> alloc = share("flat_rate", effort, participants=["A", "B", "C", "D"])
>>> alloc.total, alloc.members["A"].balance, alloc.members["D"].balance
(Decimal('13'), Decimal('5.75'), Decimal('-3.25'))
"""

from __future__ import annotations

import decimal
import hashlib
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from fractions import Fraction
from typing import Any

# The sharing models of rule (b), one function each; MODELS and Model are read from here too.
from hub.peerconomy.sharing import MODELS, SHARING_MODELS, Model, PeriodSums


class WeightMode(StrEnum):
    """Rule (a)'s modes: weights move at period close only, or also rise inside the period."""

    CLOSE = "close"
    CLOCK = "clock"


WEIGHT_MODES = tuple(WeightMode)

K = Decimal("0.2")
"""Default gain of the weight rule."""
LO = Decimal("0.25")
"""Default lower bound of a task weight."""
HI = Decimal("4.0")
"""Default upper bound of a task weight."""
START_WEIGHT = Decimal(1)

WEIGHT_PLACES = 6
"""A posted weight is rounded to this many places: it is what people see and are credited at."""
PLACES = 12
"""Expected contributions and unit costs are rounded to this many places (at least)."""

# Decimal arithmetic that is exact or raises: sums and products of decimals never need
# rounding with unlimited precision, and Inexact is trapped in case one ever would.
_EXACT = decimal.Context(
    prec=decimal.MAX_PREC,
    Emax=decimal.MAX_EMAX,
    Emin=decimal.MIN_EMIN,
    traps=[decimal.Inexact, decimal.Overflow, decimal.InvalidOperation],
)


# ---------------------------------------------------------------------------------------
# numbers


def to_decimal(value: Any, name: str) -> Decimal:
    """``value`` as an exact :class:`Decimal`; a float is read by its shortest repr.

    Raises :class:`ValueError` naming ``name`` for anything that is not a finite number.
    """
    if type(value) is Decimal and value.is_finite():  # the common case, first
        return value
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number, not {value!r}")
    if isinstance(value, Decimal):
        d = value
    elif isinstance(value, int):
        d = Decimal(value)
    elif isinstance(value, float):
        d = Decimal(repr(value))
    elif isinstance(value, str):
        try:
            d = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"{name} must be a number, not {value!r}") from None
    else:
        raise ValueError(f"{name} must be a number, not {value!r}")
    if not d.is_finite():
        raise ValueError(f"{name} must be a finite number, not {value!r}")
    return d


def _tidy(d: Decimal) -> Decimal:
    """Drop trailing zeros without switching to exponent notation (20, not 2E+1)."""
    if d == d.to_integral_value():
        return d.quantize(Decimal(1), context=_EXACT)
    return d.normalize(context=_EXACT)


def _terminating(fr: Fraction) -> Decimal:
    """The exact Decimal of a fraction whose denominator divides a power of ten."""
    den = fr.denominator
    twos = fives = 0
    while den % 2 == 0:
        den //= 2
        twos += 1
    while den % 5 == 0:
        den //= 5
        fives += 1
    if den != 1:
        raise ValueError(f"{fr} has no finite decimal form")
    scale = max(twos, fives)
    return _tidy(Decimal(fr.numerator * 10**scale // fr.denominator).scaleb(-scale, _EXACT))


def _rounded(fr: Fraction, places: int = PLACES) -> Decimal:
    """``fr`` rounded half-even to ``places`` decimal places (for display values)."""
    n = round(fr * 10**places)  # Fraction.__round__ rounds half to even, exactly
    return _tidy(Decimal(n).scaleb(-places, _EXACT))


def apportion(total: Decimal, exact: Mapping[str, Fraction]) -> dict[str, Decimal]:
    """Round exact shares of ``total`` to decimals that sum to ``total`` exactly.

    The quantum is ``10**-PLACES``, or finer if ``total`` has more places.  Each share is
    rounded down to the quantum; the quanta left over go one each to the largest
    remainders, ties to the key that sorts first.  Each result is within one quantum of
    its exact share.

    >>> apportion(Decimal(20), {"A": Fraction(20, 3), "B": Fraction(20, 3), "C": Fraction(20, 3)})
    {'A': Decimal('6.666666666667'), 'B': Decimal('6.666666666667'), 'C': Decimal('6.666666666666')}
    """
    if sum(exact.values(), Fraction(0)) != Fraction(total):
        raise ValueError("shares do not add up to the total")
    exponent = min(-PLACES, total.as_tuple().exponent)  # type: ignore[operator]
    per_quantum = Fraction(10) ** -exponent
    floors: dict[str, int] = {}
    remainders: dict[str, Fraction] = {}
    for key, value in exact.items():
        scaled = value * per_quantum
        floors[key] = scaled.numerator // scaled.denominator
        remainders[key] = scaled - floors[key]
    left = int(Fraction(total) * per_quantum) - sum(floors.values())
    for key in sorted(remainders, key=lambda k: (-remainders[k], k))[:left]:
        floors[key] += 1
    return {key: _tidy(Decimal(n).scaleb(exponent, _EXACT)) for key, n in floors.items()}


# ---------------------------------------------------------------------------------------
# (a) task weights


def check_weight(weight: Any, lo: Any = LO, hi: Any = HI) -> Decimal:
    """``weight`` as a Decimal; :class:`ValueError` if it lies outside ``[lo, hi]``."""
    w = to_decimal(weight, "weight")
    if not to_decimal(lo, "lo") <= w <= to_decimal(hi, "hi"):
        raise ValueError(f"weight {w} is outside [{lo}, {hi}]")
    return w


def _weight_rule_args(k: Any, lo: Any, hi: Any) -> tuple[Fraction, Decimal, Decimal]:
    k_d, lo_d, hi_d = to_decimal(k, "k"), to_decimal(lo, "lo"), to_decimal(hi, "hi")
    if not 0 <= k_d <= 1:
        raise ValueError(f"k {k_d} is outside [0, 1]")
    if not 0 < lo_d <= hi_d:
        raise ValueError(f"bounds [{lo_d}, {hi_d}] must satisfy 0 < lo <= hi")
    return Fraction(k_d), lo_d, hi_d


def _count(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be a whole number, not {value!r}")
    if value < minimum:
        if minimum == 0:
            raise ValueError(f"{name} must not be negative")
        raise ValueError(f"{name} must be at least {minimum}")
    return value


def _post_weight(fr: Fraction, lo: Decimal, hi: Decimal) -> Decimal:
    w = _rounded(fr, WEIGHT_PLACES)
    return _tidy(min(max(w, lo), hi))


def next_weight(
    w: Any,
    slots: int,
    volunteers: int,
    k: Any = K,
    lo: Any = LO,
    hi: Any = HI,
    pinned: bool = False,
) -> Decimal:
    """Next period's weight of a task by rule (a) of docs/sharing-models.md.

    ``slots`` (S, at least 1) were needed and ``volunteers`` (V) were claimed or done in
    the closing period.  Too few takers make the task heavier, too many lighter::

        V < S: w' = w * (1 + k(S - V)/S);  V > S: w' = w * (1 - k(V - S)/V);  else w' = w

    then clamped to ``[lo, hi]`` and rounded to ``WEIGHT_PLACES`` places (the weight is
    posted, and people are credited at what they saw).  A pinned weight does not move.

    >>> next_weight(1, slots=4, volunteers=2), next_weight("3.8", slots=1, volunteers=0)
    (Decimal('1.1'), Decimal('4'))
    """
    w_d = to_decimal(w, "weight")
    if w_d <= 0:
        raise ValueError("weight must be positive")
    s = _count(slots, "slots", 1)
    v = _count(volunteers, "volunteers", 0)
    k_f, lo_d, hi_d = _weight_rule_args(k, lo, hi)
    if pinned:
        return w_d
    wf = Fraction(w_d)
    if v < s:
        wf *= 1 + k_f * (s - v) / s
    elif v > s:
        wf *= 1 - k_f * (v - s) / v
    return _post_weight(wf, lo_d, hi_d)


def weight_at(
    w: Any,
    period_start: datetime,
    at: datetime,
    *,
    slots: int,
    taken: int,
    k: Any = K,
    lo: Any = LO,
    hi: Any = HI,
    pinned: bool = False,
) -> Decimal:
    """The weight an unfilled slot shows at ``at`` in ``clock`` mode.

    While fewer than ``slots`` are ``taken``, the weight rises by ``k/7`` of the period's
    starting weight ``w`` per whole day since ``period_start`` (so a week of nobody
    taking it adds ``k * w``, as much as rule (a) adds at close when V = 0), capped at
    ``hi``.  Whole days, so the board shows one price per day, not a price per second.
    A taker is credited at the weight they saw when they took it; rule (a) at close
    still starts from ``w``, not from the risen weight.  Filled and pinned tasks show ``w``.

    >>> from datetime import datetime, timedelta
    >>> t0 = datetime(2026, 11, 23)
    >>> weight_at(1, t0, t0 + timedelta(days=3, hours=5), slots=4, taken=1)
    Decimal('1.085714')
    """
    w_d = to_decimal(w, "weight")
    if w_d <= 0:
        raise ValueError("weight must be positive")
    s = _count(slots, "slots", 1)
    t = _count(taken, "taken", 0)
    k_f, lo_d, hi_d = _weight_rule_args(k, lo, hi)
    if at < period_start:
        raise ValueError(f"{at.isoformat()} is before the period's start")
    if pinned or t >= s:
        return w_d
    days = (at - period_start) // timedelta(days=1)
    return _post_weight(Fraction(w_d) * (1 + k_f * days / 7), lo_d, hi_d)


BIG_CLAIM = Decimal("1.5")
"""A done whose hours exceed this many times the task's posted hours waits (rule (j))."""


def confirmations_needed(hours: Any, posted: Any) -> int:
    """How many confirmations a done of ``hours`` on a task posted at ``posted`` hours
    waits for before its hours count (docs/sharing-models.md, rule (j), "Big claims are confirmed").

    A done whose hours exceed the posted hours by more than half waits for one, by a
    coordinator or by another member who was there; until then it is credited at the
    posted hours.  Any other done counts as given (0).  So a member alone can never be
    credited more than a task's posted hours per slot taken.

    >>> confirmations_needed("0.75", "0.5"), confirmations_needed("1000", "0.75")
    (0, 1)
    """
    h, p = to_decimal(hours, "hours"), to_decimal(posted, "posted hours")
    if h <= 0 or p <= 0:
        raise ValueError("hours and posted hours must be positive")
    return 1 if h > p * BIG_CLAIM else 0


def hours_to_earn(weighted_hours: Any, weight: Any) -> Decimal:
    """Hours of a task at ``weight`` that earn ``weighted_hours`` (rounded to ``PLACES``).

    Siefkes' figure: owing 9 weighted hours, at weight 1.45 that is about 6 h 12 min.

    >>> hours_to_earn(9, "1.45").quantize(Decimal("0.0001")), hours_to_earn(9, "0.5")
    (Decimal('6.2069'), Decimal('18'))
    """
    wh = to_decimal(weighted_hours, "weighted hours")
    w = to_decimal(weight, "weight")
    if w <= 0:
        raise ValueError("weight must be positive")
    return _rounded(Fraction(wh) / Fraction(w))


# ---------------------------------------------------------------------------------------
# records


def _member(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"member must be a non-empty string, not {value!r}")
    return value


@dataclass(frozen=True)
class Participant:
    """A member taking part in the period, with a participation ``factor`` (default 1).

    The factor weighs the member's share of flat-rate effort (half-time members: 0.5).
    """

    member: str
    factor: Decimal = Decimal(1)

    def __post_init__(self) -> None:
        _member(self.member)
        factor = to_decimal(self.factor, "factor")
        if factor <= 0:
            raise ValueError(f"factor {factor} must be positive")
        object.__setattr__(self, "factor", factor)


@dataclass(frozen=True)
class EffortEntry:
    """``member`` did ``hours`` of ``task`` at the posted ``weight``.

    ``resource`` puts the effort into that resource's pool (production_effort);
    ``project`` says which project of a distribution pool it was done for.
    """

    member: str
    task: str
    hours: Decimal
    weight: Decimal
    resource: str | None = None
    project: str | None = None

    def __post_init__(self) -> None:
        if type(self.member) is not str or not self.member:
            _member(self.member)
        hours, weight = self.hours, self.weight
        # A close builds tens of thousands of entries from Decimals: set only what changes.
        if type(hours) is not Decimal or not hours.is_finite():
            hours = to_decimal(hours, "hours")
            object.__setattr__(self, "hours", hours)
        if type(weight) is not Decimal or not weight.is_finite():
            weight = to_decimal(weight, "weight")
            object.__setattr__(self, "weight", weight)
        if hours < 0:
            raise ValueError("hours must not be negative")
        if weight <= 0:
            raise ValueError("weight must be positive")

    @property
    def weighted_hours(self) -> Decimal:
        """``hours * weight``, exactly: the member's credit for this record."""
        return _terminating(Fraction(self.hours) * Fraction(self.weight))


@dataclass(frozen=True)
class UseEntry:
    """``member`` used ``units`` of ``resource``; ``scarce`` units were won at auction."""

    member: str
    resource: str
    units: Decimal
    scarce: bool = False

    def __post_init__(self) -> None:
        if type(self.member) is not str or not self.member:
            _member(self.member)
        units = self.units
        if type(units) is not Decimal or not units.is_finite():
            units = to_decimal(units, "units")
            object.__setattr__(self, "units", units)
        if units < 0:
            raise ValueError("units must not be negative")


@dataclass(frozen=True)
class Bid:
    """A request for one scarce unit; ``max`` is the highest multiplier accepted (≥ 1)."""

    member: str
    max: Decimal

    def __post_init__(self) -> None:
        _member(self.member)
        value = to_decimal(self.max, "max")
        if value < 1:
            raise ValueError(f"max {value} is below 1")
        object.__setattr__(self, "max", value)


@dataclass(frozen=True)
class Clearing:
    """A cleared auction: the multiplier ``m`` and who won a scarce unit.

    ``winners`` and ``losers`` list one member per request, sorted (a member with two
    requests may appear twice).  Losers fall back to a plain unit.
    """

    resource: str
    supply: int
    requests: int
    multiplier: Decimal
    winners: tuple[str, ...]
    losers: tuple[str, ...]

    def use_entries(self) -> tuple[UseEntry, ...]:
        """One scarce unit per winner and one plain unit per loser, as if all were used."""
        return tuple(UseEntry(m, self.resource, Decimal(1), scarce=True) for m in self.winners) + (
            tuple(UseEntry(m, self.resource, Decimal(1)) for m in self.losers)
        )


@dataclass(frozen=True)
class MemberShare:
    """A member's period: ``balance = credited - expected``."""

    credited: Decimal
    expected: Decimal
    balance: Decimal


@dataclass(frozen=True)
class ResourceCost:
    """What one unit of a resource cost in expected contribution this period.

    ``units`` counts plain units, a scarce unit as ``m``.  ``unit_cost`` is ``None`` when
    use does not set the cost: under flat_rate, or when the resource's pool joined the
    overhead because nobody used it.  Costs are rounded to ``PLACES`` places; members'
    expected contributions come from the exact fractions, not from these.
    """

    resource: str
    units: Decimal
    unit_cost: Decimal | None
    scarce_multiplier: Decimal | None = None
    scarce_unit_cost: Decimal | None = None
    winners: tuple[str, ...] = ()


@dataclass(frozen=True)
class Allocation:
    """A period's result.  ``applied`` is the model actually used (see :func:`share`)."""

    model: Model
    applied: Model
    total: Decimal
    overhead: Decimal
    members: dict[str, MemberShare]
    resources: dict[str, ResourceCost]


@dataclass(frozen=True)
class ProjectShare:
    """One project of a distribution pool: effort earned in it, expected for its goods."""

    earned: Decimal
    expected: Decimal
    balance: Decimal


# ---------------------------------------------------------------------------------------
# (c) preference weighting


def lottery(seed: str, resource: str) -> random.Random:
    """The reproducible random source of one (period, resource): sha256, not ``hash()``."""
    digest = hashlib.sha256(f"peershop lottery\x1f{seed}\x1f{resource}".encode()).digest()
    return random.Random(int.from_bytes(digest, "big"))


def clear_auction(resource: str, scarce_units: int, bids: Iterable[Bid], seed: str) -> Clearing:
    """Settle who gets the ``scarce_units`` (Q) of ``resource`` and at what multiplier.

    With D requests: if D ≤ Q, ``m = 1`` and all win.  Otherwise ``m`` is the (Q+1)-th
    highest ``max`` (the highest losing bid), the Q highest win and a tie at the cut is
    settled by :func:`lottery` seeded from (``seed``, ``resource``); ``seed`` is the
    period's id.  Bids are sorted first, so their order does not matter.

    >>> c = clear_auction("laser", 1, [Bid("A", 2), Bid("B", "1.2")], seed="2026-W48")
    >>> c.multiplier, c.winners, c.losers
    (Decimal('1.2'), ('A',), ('B',))
    """
    q = _count(scarce_units, "scarce_units", 0)
    ranked = sorted(bids, key=lambda b: (-b.max, b.member))
    if len(ranked) <= q:
        winners = [b.member for b in ranked]
        return Clearing(resource, q, len(ranked), Decimal(1), tuple(sorted(winners)), ())
    cut = ranked[q].max
    above = [b.member for b in ranked if b.max > cut]
    tied = [b.member for b in ranked if b.max == cut]  # sorted by member: canonical order
    below = [b.member for b in ranked if b.max < cut]
    lottery(seed, resource).shuffle(tied)
    need = q - len(above)
    winners = above + tied[:need]
    losers = tied[need:] + below
    return Clearing(
        resource, q, len(ranked), _tidy(cut), tuple(sorted(winners)), tuple(sorted(losers))
    )


# ---------------------------------------------------------------------------------------
# (b) sharing models


@dataclass(frozen=True)
class _Exact:
    applied: Model
    total: Decimal
    credited: dict[str, Decimal]
    expected: dict[str, Fraction]
    overhead: Fraction
    units: dict[str, Fraction]  # per resource, scarce counted m
    unit_cost: dict[str, Fraction | None]
    resource_cost: dict[str, Fraction]  # expected contribution attributed to a resource
    absorbed: frozenset[str]  # resources whose pool is paid by their use, not overhead
    absorbs_all: bool  # flat_allocation: use pays for all effort, none is overhead
    clearings: dict[str, Clearing]


def _participants(items: Iterable[Participant | str]) -> dict[str, Fraction]:
    factors: dict[str, Fraction] = {}
    for item in items:
        p = Participant(item) if isinstance(item, str) else item
        if p.member in factors:
            raise ValueError(f"member {p.member!r} is listed twice")
        factors[p.member] = Fraction(p.factor)
    return factors


def _exact_shares(
    model: str,
    effort: Iterable[EffortEntry],
    use: Iterable[UseEntry],
    participants: Iterable[Participant | str],
    clearings: Iterable[Clearing],
) -> _Exact:
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; expected one of {', '.join(MODELS)}")
    effort = list(effort)
    use = list(use)
    factors = _participants(participants)
    by_resource: dict[str, Clearing] = {}
    for c in clearings:
        if c.resource in by_resource:
            raise ValueError(f"two auctions for resource {c.resource!r}")
        by_resource[c.resource] = c
    one = Fraction(1)
    for members in (
        {e.member for e in effort} | {u.member for u in use},
        *(c.winners + c.losers for c in by_resource.values()),
    ):
        for m in sorted(members):
            factors.setdefault(m, one)

    # Sums of decimals are exact in Decimal with unlimited precision (and much faster
    # than in Fraction); only the per-member and per-resource aggregates become fractions.
    add, mul = _EXACT.add, _EXACT.multiply
    zero = Decimal(0)
    credited_d: dict[str, Decimal] = dict.fromkeys(factors, zero)
    pools_d: dict[str, Decimal] = {}
    for e in effort:
        wh_d = mul(e.hours, e.weight)
        credited_d[e.member] = add(credited_d[e.member], wh_d)
        if e.resource is not None:
            pools_d[e.resource] = add(pools_d.get(e.resource, zero), wh_d)
    credited_f = {m: Fraction(c) for m, c in credited_d.items()}
    pools = {r: Fraction(p) for r, p in pools_d.items()}
    total_f = sum(credited_f.values(), Fraction(0))

    used: dict[tuple[str, str], Decimal] = {}  # (member, resource) -> units, scarce as m
    for u in use:
        units_d = u.units
        if u.scarce:
            if u.resource not in by_resource:
                raise ValueError(f"scarce use of {u.resource!r} without a cleared auction")
            units_d = mul(units_d, by_resource[u.resource].multiplier)
        key = (u.member, u.resource)
        used[key] = add(used.get(key, zero), units_d)
    resources = sorted({r for _, r in used} | set(pools) | set(by_resource))
    units_rd = dict.fromkeys(resources, zero)
    units_md = dict.fromkeys(factors, zero)
    for (m, r), n_d in used.items():
        units_rd[r] = add(units_rd[r], n_d)
        units_md[m] = add(units_md[m], n_d)
    units_r = {r: Fraction(n_d) for r, n_d in units_rd.items()}
    units_m = {m: Fraction(n_d) for m, n_d in units_md.items()}

    split = SHARING_MODELS[model](
        PeriodSums(total_f, factors, pools, used, units_r, units_m, tuple(resources))
    )
    return _Exact(
        applied=split.applied,
        total=_terminating(total_f),
        credited={m: _terminating(c) for m, c in credited_f.items()},
        expected=split.expected,
        overhead=split.overhead,
        units=units_r,
        unit_cost=split.unit_cost,
        resource_cost=split.resource_cost,
        absorbed=split.absorbed,
        absorbs_all=split.absorbs_all,
        clearings=by_resource,
    )


def share(
    model: str,
    effort: Iterable[EffortEntry] = (),
    use: Iterable[UseEntry] = (),
    *,
    participants: Iterable[Participant | str] = (),
    clearings: Iterable[Clearing] = (),
) -> Allocation:
    """Every member's credited and expected contribution for a period, by ``model``.

    ``E`` is the period's total weighted effort.  Participants are everyone with effort,
    use or a bid (in ``clearings``), plus anyone in ``participants`` (a member who signed
    in; a :class:`Participant` also carries a factor, default 1).  ``model`` is looked
    up in :data:`hub.peerconomy.sharing.SHARING_MODELS`, whose functions say what each
    model does (flat_rate, flat_allocation, production_effort); effort with
    ``resource: r`` forms r's pool.  ``applied`` is the model actually used: a
    flat_allocation period in which nobody used anything is shared as flat_rate.

    Edge cases: no effort (E = 0) gives everyone expected 0; no participants gives an
    empty allocation.  Scarce use (``UseEntry.scarce``) needs the resource's clearing.
    Credit depends only on effort, never on use or bids (no exchange).
    """
    ex = _exact_shares(model, effort, use, participants, clearings)
    expected = apportion(ex.total, ex.expected)
    members = {
        m: MemberShare(
            ex.credited[m], expected[m], _tidy(_EXACT.subtract(ex.credited[m], expected[m]))
        )
        for m in sorted(ex.credited)
    }
    resources: dict[str, ResourceCost] = {}
    for r, units in ex.units.items():
        cost = ex.unit_cost[r]
        c = ex.clearings.get(r)
        resources[r] = ResourceCost(
            resource=r,
            units=_rounded(units),
            unit_cost=None if cost is None else _rounded(cost),
            scarce_multiplier=None if c is None else c.multiplier,
            scarce_unit_cost=(
                None if c is None or cost is None else _rounded(cost * Fraction(c.multiplier))
            ),
            winners=() if c is None else c.winners,
        )
    return Allocation(
        model=Model(model),
        applied=ex.applied,
        total=ex.total,
        overhead=_rounded(ex.overhead),
        members=members,
        resources=resources,
    )


def pool_report(
    model: str,
    effort: Iterable[EffortEntry] = (),
    use: Iterable[UseEntry] = (),
    *,
    resource_projects: Mapping[str, str],
    participants: Iterable[Participant | str] = (),
    clearings: Iterable[Clearing] = (),
) -> dict[str, ProjectShare]:
    """Per project of a distribution pool: effort earned in it and expected for its goods.

    The pool is shared as one project by ``model`` (see :func:`share`).  A project's
    ``earned`` is the weighted effort of records with ``project`` = it.  Its
    ``expected`` is what members are expected to contribute for its goods: the cost of
    using its resources (``resource_projects`` maps each resource to its project), plus
    its own effort that no resource's use pays for (overhead such as cleaning, and pools
    that joined the overhead), which is the good the project gives everyone.  So under
    flat_rate every project balances, and under the other models a project whose goods
    are used more than its effort covers has a negative balance.  The balances of the
    pool sum to exactly zero.  Every effort record must name its project.
    """
    effort = list(effort)
    for e in effort:
        if e.project is None:
            raise ValueError(f"effort by {e.member!r} on {e.task!r} names no project")
    ex = _exact_shares(model, effort, use, participants, clearings)
    earned: dict[str, Fraction] = {}
    expected: dict[str, Fraction] = {}
    for e in effort:
        assert e.project is not None
        wh = Fraction(e.hours) * Fraction(e.weight)
        earned[e.project] = earned.get(e.project, Fraction(0)) + wh
        expected.setdefault(e.project, Fraction(0))
        if not ex.absorbs_all and e.resource not in ex.absorbed:
            expected[e.project] += wh
    for r, cost in sorted(ex.resource_cost.items()):
        if r not in resource_projects:
            raise ValueError(f"resource {r!r} belongs to no project")
        p = resource_projects[r]
        expected[p] = expected.get(p, Fraction(0)) + cost
        earned.setdefault(p, Fraction(0))
    rounded = apportion(ex.total, expected)
    report = {}
    for p in sorted(expected):
        e_d = _terminating(earned[p])
        report[p] = ProjectShare(e_d, rounded[p], _tidy(_EXACT.subtract(e_d, rounded[p])))
    return report
