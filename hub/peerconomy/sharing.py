"""The sharing models of rule (b) (docs/sharing-models.md): one function per model.

A model reads a period's exact sums (:class:`PeriodSums`: the total weighted effort
``E``, the participation factors, each resource's effort pool and units used) and says
what every member is expected to contribute (:class:`Split`).  The period close and
``peershop simulate`` both reach a model the same way: :func:`hub.peerconomy.economy.share`
sums the records and calls ``SHARING_MODELS[model]``.

A new model: a :class:`Model` value (it is what the shop file's ``model:`` and the
``projects.model`` column hold), a function here whose docstring's first line says what
it does, one entry in :data:`SHARING_MODELS`, and its section in docs/sharing-models.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction


class Model(StrEnum):
    """A project's sharing model (the shop file's ``model:``, ``projects.model``)."""

    FLAT_RATE = "flat_rate"
    FLAT_ALLOCATION = "flat_allocation"
    PRODUCTION_EFFORT = "production_effort"


@dataclass(frozen=True)
class PeriodSums:
    """A period's effort and use, summed exactly, as every model needs them.

    ``used`` maps (member, resource) to units, a scarce unit counted as its multiplier;
    ``units_r`` and ``units_m`` are its sums per resource and per member; ``pools`` is
    the weighted effort done for each resource; ``resources`` every resource, sorted.
    """

    total: Fraction
    factors: Mapping[str, Fraction]
    pools: Mapping[str, Fraction]
    used: Mapping[tuple[str, str], Decimal]
    units_r: Mapping[str, Fraction]
    units_m: Mapping[str, Fraction]
    resources: tuple[str, ...]


@dataclass(frozen=True)
class Split:
    """What a model made of a period, exactly.

    ``applied`` is the model actually used; ``overhead`` the effort shared flat;
    ``unit_cost`` per resource (None where use does not set a cost); ``resource_cost``
    the expected contribution attributed to a resource; ``absorbed`` the resources whose
    pool their use pays for, not the overhead; ``absorbs_all``: use pays for all effort.
    """

    applied: Model
    overhead: Fraction
    expected: dict[str, Fraction]
    unit_cost: dict[str, Fraction | None]
    resource_cost: dict[str, Fraction]
    absorbed: frozenset[str] = frozenset()
    absorbs_all: bool = False


def _flat(amount: Fraction, factors: Mapping[str, Fraction]) -> dict[str, Fraction]:
    if amount == 0:
        return dict.fromkeys(factors, Fraction(0))
    if not factors:
        raise ValueError("effort to share but no participants")
    total = sum(factors.values(), Fraction(0))
    return {m: amount * f / total for m, f in factors.items()}


def _costs_of_use(
    used: Mapping[tuple[str, str], Decimal],
    unit_cost: Mapping[str, Fraction | None],
    absorbed: frozenset[str],
) -> dict[str, Fraction]:
    """Per member, Σ over absorbed resources r of units used x ``unit_cost[r]``, exactly.

    Summed as integers over one common denominator: adding thousands of fractions with
    different denominators one by one would reduce each partial sum (a gcd every time).
    """
    ratios = [
        (m, r, n.as_integer_ratio()) for (m, r), n in used.items() if r in absorbed and n != 0
    ]
    if not ratios:
        return {}
    den_units = 1
    for q in {q for _, _, (_, q) in ratios}:
        den_units = math.lcm(den_units, q)
    den_costs = 1
    for r in absorbed:
        den_costs = math.lcm(den_costs, unit_cost[r].denominator)  # type: ignore[union-attr]
    factor: dict[str, int] = {}
    for r in absorbed:
        c = unit_cost[r]
        assert c is not None
        factor[r] = c.numerator * (den_costs // c.denominator)
    acc: dict[str, int] = {}
    for m, r, (p, q) in ratios:
        acc[m] = acc.get(m, 0) + p * (den_units // q) * factor[r]
    den = den_units * den_costs
    return {m: Fraction(num, den) for m, num in acc.items()}


def flat_rate(p: PeriodSums) -> Split:
    """Everyone who takes part carries the same share: ``expected_i = E * f_i / Σf``; use
    does not matter."""
    return Split(
        applied=Model.FLAT_RATE,
        overhead=p.total,
        expected=_flat(p.total, p.factors),
        unit_cost=dict.fromkeys(p.resources),
        resource_cost={},
    )


def flat_allocation(p: PeriodSums) -> Split:
    """Use pays for all effort: ``expected_i = E * n_i / Σn`` over all units of all
    resources, a scarce unit counting ``m``; factors do not matter.  A period in which
    nobody used anything is shared as flat_rate instead, so that Σ expected = E."""
    all_units = sum(p.units_r.values(), Fraction(0))
    if all_units == 0:
        return flat_rate(p)
    per_unit = p.total / all_units
    return Split(
        applied=Model.FLAT_ALLOCATION,
        overhead=Fraction(0),
        expected={m: p.units_m[m] * per_unit for m in p.factors},
        unit_cost=dict.fromkeys(p.resources, per_unit),
        resource_cost={r: p.units_r[r] * per_unit for r in p.resources},
        absorbs_all=True,
    )


def production_effort(p: PeriodSums) -> Split:
    """Each resource's pool is paid by its users per unit (``pool_r / units_r``, a scarce
    unit ``m`` times that); all other effort, and the pool of a resource nobody used, is
    overhead shared flat.  A resource used but with no pool costs 0 per unit."""
    absorbed = frozenset(r for r in p.resources if p.units_r[r] > 0)
    zero = Fraction(0)
    overhead = p.total - sum((p.pools.get(r, zero) for r in absorbed), zero)
    expected = _flat(overhead, p.factors)
    unit_cost: dict[str, Fraction | None] = dict.fromkeys(p.resources)
    resource_cost: dict[str, Fraction] = {}
    for r in sorted(absorbed):
        unit_cost[r] = p.pools.get(r, zero) / p.units_r[r]
        resource_cost[r] = p.pools.get(r, zero)
    for m, cost in _costs_of_use(p.used, unit_cost, absorbed).items():
        expected[m] += cost
    return Split(
        applied=Model.PRODUCTION_EFFORT,
        overhead=overhead,
        expected=expected,
        unit_cost=unit_cost,
        resource_cost=resource_cost,
        absorbed=absorbed,
    )


SHARING_MODELS: dict[Model, Callable[[PeriodSums], Split]] = {
    Model.FLAT_RATE: flat_rate,
    Model.FLAT_ALLOCATION: flat_allocation,
    Model.PRODUCTION_EFFORT: production_effort,
}
"""Every sharing model by its name: the one place :func:`~hub.peerconomy.economy.share`
looks a model up."""

MODELS: tuple[Model, ...] = tuple(SHARING_MODELS)
"""The models' names, in the order the docs list them (the shop file's choices)."""
