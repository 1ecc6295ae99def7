"""Every closed vocabulary the hub stores fits its column, and the shop file offers the same.

Close reasons, deny reasons, policies, sharing models and the rest are StrEnums in the
layer that owns the idea; the database keeps their values in String columns.  A value
longer than its column is refused by PostgreSQL (the write of that session or decision
fails) and kept whole by SQLite, so the test suite on SQLite alone would never notice:
this test compares every value with its column's length instead.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from enum import StrEnum

import pytest
from sqlalchemy import String

import hub
from hub.contract.messages import DENY_REASONS, DenyReason
from hub.errors import ShopFileError
from hub.ledger.taskboard import ClaimStatus
from hub.peerconomy import economy as pc
from hub.peerconomy.sharing import Model
from hub.rules.access import Role
from hub.rules.presence import PresenceReason, PresenceState
from hub.rules.records import DecisionAction, EffortSource, StationKind
from hub.rules.sessions import CLOSE_REASONS, POLICIES, CloseReason, Policy
from hub.shopfile import spec
from hub.shopfile.parse import parse_shop
from hub.store.models import (
    ApiToken,
    BadgeDecision,
    ClaimReview,
    EffortRecord,
    PresenceChange,
    Project,
    ProjectRules,
    Standing,
    Station,
    Tool,
    UsageSession,
    Verdict,
)

STORED = {
    Model: [Project.model],
    pc.WeightMode: [ProjectRules.weight_mode],
    Policy: [Tool.policy],
    CloseReason: [UsageSession.close_reason],
    DenyReason: [BadgeDecision.reason],
    PresenceState: [PresenceChange.state],
    PresenceReason: [PresenceChange.reason],
    StationKind: [Station.kind, BadgeDecision.station],
    DecisionAction: [BadgeDecision.action],
    EffortSource: [EffortRecord.source],
    Role: [ApiToken.role],
    Verdict: [ClaimReview.verdict],
    Standing: [ClaimReview.standing],
}
"""Each StrEnum the hub stores, and the columns that hold its values."""

NOT_STORED = {
    ClaimStatus: "worked out from a claim's rows and reviews each time it is shown",
}
"""StrEnums of these layers that never reach a column, and why."""

# The packages whose StrEnums can reach the database: the store and what it may import,
# and the ledger and shop file, which write through it.
PACKAGES = (
    "hub.contract",
    "hub.peerconomy",
    "hub.rules",
    "hub.store",
    "hub.ledger",
    "hub.shopfile",
)


def _str_enums() -> set[type[StrEnum]]:
    found: set[type[StrEnum]] = set()
    for info in pkgutil.walk_packages(hub.__path__, "hub."):
        if not info.name.startswith(PACKAGES) or ".migrations" in info.name:
            continue
        module = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, StrEnum) and obj.__module__ == info.name:
                found.add(obj)
    return found


def test_every_vocabulary_of_the_store_is_checked():
    """A new StrEnum in these layers is either stored (and listed above) or says so here."""
    missing = {e.__qualname__ for e in _str_enums() - set(STORED) - set(NOT_STORED)}
    assert not missing, f"add these StrEnums and their columns to STORED: {sorted(missing)}"


@pytest.mark.parametrize(
    ("vocabulary", "column"),
    [(enum, column) for enum, columns in STORED.items() for column in columns],
    ids=lambda x: x.__name__ if isinstance(x, type) else str(x),
)
def test_the_longest_value_fits_its_column(vocabulary, column):
    kind = column.property.columns[0].type
    assert isinstance(kind, String) and kind.length, f"{column} is not a String with a length"
    longest = max(vocabulary, key=len)
    assert len(longest) <= kind.length, (
        f"{vocabulary.__name__}.{longest.name} ({longest.value!r}, {len(longest)} characters) "
        f"does not fit {column} (String({kind.length}))"
    )


def test_the_shop_file_offers_the_enums_values():
    assert pc.MODELS == tuple(Model)
    assert pc.WEIGHT_MODES == tuple(pc.WeightMode)
    assert POLICIES == tuple(Policy)
    assert spec.ROLES == tuple(Role)
    assert spec.STATION_KINDS == tuple(StationKind)
    assert CLOSE_REASONS == tuple(CloseReason)
    assert DENY_REASONS == tuple(DenyReason)
    assert spec.DEFAULT_MODEL in Model.__members__.values()


@pytest.mark.parametrize(
    ("entry", "key", "vocabulary"),
    [
        ("projects:\n  - {id: shop, model: %s}\n", "model", Model),
        ("projects:\n  - {id: shop, weight_mode: %s}\n", "weight_mode", pc.WeightMode),
        ("tools:\n  - {id: saw, policy: %s}\n", "policy", Policy),
        ("stations:\n  - {device: door-node, kind: %s}\n", "kind", StationKind),
    ],
)
def test_a_wrong_value_in_the_shop_file_is_answered_with_the_enums_values(entry, key, vocabulary):
    with pytest.raises(ShopFileError) as caught:
        parse_shop(entry % "nonsense")
    listed = ", ".join(vocabulary)
    assert f"{key} must be one of {listed}, not 'nonsense'" in str(caught.value)


def test_a_member_with_an_unknown_role_is_told_the_roles():
    with pytest.raises(ShopFileError) as caught:
        parse_shop("members:\n  - {handle: ada, name: Ada, roles: [lead]}\n")
    assert f"(roles are {', '.join(Role)})" in str(caught.value)
