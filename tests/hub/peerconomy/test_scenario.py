"""Scenario files (docs/scenario-format.md): the examples, the checks and ``peershop simulate``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from hub.cli.ledger_cli import simulate_command
from hub.errors import ScenarioError
from hub.peerconomy.scenario import (
    load_scenario,
    parse_scenario,
    run_scenario,
    simulate,
    to_json,
)

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "scenarios"


def balances(result: dict) -> dict[str, float]:
    return {m: v["balance"] for m, v in result["members"].items()}


def simulate_data(data: dict) -> dict:
    return to_json(run_scenario(parse_scenario(data)))


def test_flat_rate_example():
    result = simulate(EXAMPLES / "flat-rate.yaml")
    assert {m: v["expected"] for m, v in result["members"].items()} == dict.fromkeys("ABCD", 5.0)
    assert balances(result) == {"A": 4.0, "B": 2.0, "C": -1.0, "D": -5.0}
    assert result["resources"]["laser"] == {"unit_cost": None}


def test_flat_allocation_example():
    result = simulate(EXAMPLES / "flat-allocation.yaml")
    assert balances(result) == {"A": 4.0, "B": 4.0, "C": 2.0, "D": -10.0}
    assert result["resources"] == {"slot": {"unit_cost": 0.5}}


def test_production_effort_example():
    result = simulate(EXAMPLES / "production-effort.yaml")
    assert {m: v["expected"] for m, v in result["members"].items()} == {
        "A": 4.25,
        "B": 4.25,
        "C": 5.25,
        "D": 6.25,
    }
    assert balances(result) == {"A": 4.75, "B": 2.75, "C": -1.25, "D": -6.25}
    assert result["resources"] == {"laser": {"unit_cost": 0.5}, "printer": {"unit_cost": 0.1}}


def test_auction_example():
    result = simulate(EXAMPLES / "auction.yaml")
    assert result["resources"]["laser"] == {
        "unit_cost": 0.625,
        "scarce_multiplier": 1.2,
        "scarce_unit_cost": 0.75,
        "winners": [f"b{i:02}" for i in range(1, 11)],
    }
    assert result["members"]["b11"]["expected"] == 0.625  # the highest loser, now plain
    assert result["invariant"] == {"credited_total": 20.0, "expected_total": 20.0}


def test_few_requests_example():
    result = simulate(EXAMPLES / "few-requests.yaml")
    laser = result["resources"]["laser"]
    assert laser["scarce_multiplier"] == 1.0
    assert laser["unit_cost"] == laser["scarce_unit_cost"] == 0.8
    assert len(laser["winners"]) == 8
    assert result["invariant"]["expected_total"] == 24.0


def test_weights_example_is_the_weight_table():
    result = simulate(EXAMPLES / "weights.yaml")
    assert result["next_weights"] == {
        "empty-dust": 1.1,
        "empty-dust-next-week": 1.32,
        "teach-laser-intro": 0.88,
        "balanced": 1.0,
        "clamp": 4.0,
        "door-rota": 1.3,
    }
    assert result["members"] == {} and result["invariant"]["credited_total"] == 0.0


def test_contract_example_output_is_reproduced():
    result = simulate(EXAMPLES / "contract-example.yaml")
    assert result["members"]["A"] == {"credited": 9.0, "expected": 5.0, "balance": 4.0}
    assert result["resources"]["laser"] == {
        "unit_cost": 0.625,
        "scarce_multiplier": 1.2,
        "scarce_unit_cost": 0.75,
        "winners": ["A"],
    }
    assert result["next_weights"] == {"empty-dust": 1.1}
    assert result["invariant"] == {"credited_total": 20.0, "expected_total": 20.0}


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_keeps_the_invariant(path):
    result = simulate(path)
    totals = result["invariant"]
    assert totals["credited_total"] == totals["expected_total"]
    assert abs(sum(balances(result).values())) < 1e-5  # display rounding only


def test_numbers_are_rounded_to_six_places():
    data = {
        "model": "flat_rate",
        "members": ["A", "B", "C"],
        "effort": [{"member": "A", "task": "t", "hours": 20, "weight": 1}],
    }
    result = run_scenario(parse_scenario(data))
    out = to_json(result)
    assert out["members"]["B"]["expected"] == 6.666667
    assert out["members"]["C"]["balance"] == -6.666667
    assert out["invariant"]["expected_total"] == 20.0
    # the exact values underneath still add up
    assert sum(s.expected for s in result.allocation.members.values()) == 20


def test_period_seeds_the_lottery():
    def winners(period: str) -> list[str]:
        data = {
            "model": "production_effort",
            "period": period,
            "auctions": [
                {
                    "resource": "laser",
                    "scarce_units": 2,
                    "bids": [{"member": m, "max": 1.5} for m in "PQRSTUVW"],
                }
            ],
        }
        return simulate_data(data)["resources"]["laser"]["winners"]

    assert winners("2026-W48") == winners("2026-W48")
    assert len({tuple(winners(f"2026-W{w}")) for w in range(10)}) > 1


# --- checks -----------------------------------------------------------------------------

BASE = {
    "model": "production_effort",
    "members": ["A", "B", {"id": "C", "factor": 0.5}],
    "effort": [{"member": "A", "task": "cleaning", "hours": 6, "weight": 1.5}],
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": "auction"}, "model: must be one of flat_rate"),
        ({"modle": "flat_rate"}, "modle: unknown key"),
        (
            {"effort": [{"member": "Z", "task": "t", "hours": 1, "weight": 1}]},
            "effort[0]: unknown member 'Z'",
        ),
        (
            {
                "effort": [
                    {"member": "A", "task": "t", "hours": 1, "weight": 1},
                    {"member": "B", "task": "t", "hours": 1, "weight": 1},
                    {"member": "B", "task": "t", "hours": -2, "weight": 1},
                ]
            },
            "effort[2]: hours must not be negative",
        ),
        (
            {"effort": [{"member": "A", "task": "t", "hours": 1, "weight": 5}]},
            "effort[0]: weight 5 is outside [0.25, 4.0]",
        ),
        (
            {"effort": [{"member": "A", "task": "t", "hours": "six", "weight": 1}]},
            "effort[0]: hours must be a number",
        ),
        ({"effort": [{"member": "A", "task": "t", "hours": 1}]}, "effort[0]: weight is missing"),
        (
            {"effort": [{"member": "A", "task": "t", "hours": 1, "weight": 1, "hour": 2}]},
            "effort[0].hour: unknown key (known: member, task",
        ),
        ({"effort": {"member": "A"}}, "effort: must be a list"),
        ({"use": [{"member": "A", "resource": "laser", "units": -1}]}, "use[0]: units must not"),
        ({"use": [{"member": "Q", "resource": "laser", "units": 1}]}, "use[0]: unknown member"),
        (
            {
                "auctions": [
                    {
                        "resource": "laser",
                        "scarce_units": 2,
                        "bids": [{"member": "A", "max": 2}, {"member": "B", "max": 0.9}],
                    }
                ]
            },
            "auctions[0].bids[1]: max 0.9 is below 1",
        ),
        (
            {"auctions": [{"resource": "laser", "scarce_units": -1, "bids": []}]},
            "auctions[0]: scarce_units must not be negative",
        ),
        (
            {
                "auctions": [
                    {"resource": "laser", "scarce_units": 1, "bids": []},
                    {"resource": "laser", "scarce_units": 2, "bids": []},
                ]
            },
            "auctions[1]: a second auction for resource 'laser'",
        ),
        (
            {
                "tasks": [
                    {"task": "a", "weight": 1, "slots": 1, "volunteers": 0},
                    {"task": "b", "weight": 1, "slots": 0, "volunteers": 0},
                ]
            },
            "tasks[1]: slots must be at least 1",
        ),
        (
            {"tasks": [{"task": "a", "weight": 0.2, "slots": 1, "volunteers": 0}]},
            "tasks[0]: weight 0.2 is outside [0.25, 4.0]",
        ),
        (
            {"tasks": [{"task": "a", "weight": 1, "slots": 1.5, "volunteers": 0}]},
            "tasks[0]: slots must be a whole number",
        ),
        (
            {"tasks": [{"task": "a", "weight": 1, "slots": 2, "volunteers": 1, "pinned": "y"}]},
            "tasks[0]: pinned must be true or false",
        ),
        ({"members": ["A", "A"]}, "members[1]: member 'A' is listed twice"),
        ({"members": [{"id": "A", "factor": 0}]}, "members[0]: factor 0 must be positive"),
    ],
)
def test_a_bad_scenario_names_the_entry(change, message):
    with pytest.raises(ScenarioError) as info:
        parse_scenario(BASE | change)
    assert str(info.value).startswith(message)


def test_without_members_everyone_named_takes_part():
    data = {
        "model": "flat_rate",
        "effort": [{"member": "A", "task": "t", "hours": 4, "weight": 1}],
        "use": [{"member": "B", "resource": "laser", "units": 1}],
    }
    assert simulate_data(data)["members"]["B"] == {
        "credited": 0.0,
        "expected": 2.0,
        "balance": -2.0,
    }


def test_a_participation_factor_weighs_the_flat_share():
    out = simulate_data(BASE | {"model": "flat_rate"})
    assert {m: v["expected"] for m, v in out["members"].items()} == {
        "A": 3.6,
        "B": 3.6,
        "C": 1.8,
    }


def test_load_reports_bad_yaml_and_missing_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [flat_rate\n")
    with pytest.raises(ScenarioError, match="not valid YAML"):
        load_scenario(bad)
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "missing.yaml")
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ScenarioError, match="scenario: must be a mapping"):
        load_scenario(empty)


# --- the command ------------------------------------------------------------------------


def test_simulate_json_prints_the_contract_object():
    result = CliRunner().invoke(
        simulate_command, [str(EXAMPLES / "contract-example.yaml"), "--json"]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert set(out) == {"members", "resources", "next_weights", "invariant"}
    assert out["members"]["A"] == {"credited": 9.0, "expected": 5.0, "balance": 4.0}


def test_simulate_prints_a_table_for_a_meeting():
    result = CliRunner().invoke(simulate_command, [str(EXAMPLES / "production-effort.yaml")])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Model production_effort") and "E = 20" in lines[0]
    assert any(line.split() == ["A", "cleaning", "6", "1.5", "9", "overhead"] for line in lines)
    assert any(line.split() == ["D", "0", "6.25", "-6.25"] for line in lines)
    assert any(line.split() == ["laser", "10", "0.5", "-", "-", "-"] for line in lines)
    assert lines[-1] == "Totals: credited 20, expected 20; balances sum to 0."


def test_simulate_table_shows_auctions_and_weights():
    text = CliRunner().invoke(simulate_command, [str(EXAMPLES / "contract-example.yaml")]).stdout
    assert any(
        line.split() == ["laser", "7.2", "0.625", "1.2", "0.75", "A"] for line in text.splitlines()
    )
    assert any(line.split() == ["empty-dust", "1", "1.1", "4", "2"] for line in text.splitlines())


def test_simulate_rejects_a_bad_scenario_without_a_result(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(BASE | {"use": [{"member": "Z", "resource": "x", "units": 1}]}))
    result = CliRunner().invoke(simulate_command, [str(path), "--json"])
    assert result.exit_code != 0
    assert result.stdout == ""
    assert "use[0]: unknown member 'Z'" in result.stderr


def test_simulate_table_shows_pools_only_where_they_count():
    text = CliRunner().invoke(simulate_command, [str(EXAMPLES / "flat-rate.yaml")]).stdout
    lines = [line.split() for line in text.splitlines()]
    assert ["A", "cleaning", "6", "1.5", "9"] in lines  # flat_rate: no pool column
    assert not any(line and line[0] == "laser" for line in lines)  # nobody used the laser


def test_participation_factors_example():
    result = simulate(EXAMPLES / "participation-factors.yaml")
    assert {m: v["expected"] for m, v in result["members"].items()} == {
        "A": 5.0,
        "B": 5.0,
        "C": 6.0,
        "D": 4.0,
    }
    assert balances(result) == {"A": 4.0, "B": 2.0, "C": -2.0, "D": -4.0}


def test_busy_hours_example():
    result = simulate(EXAMPLES / "busy-hours.yaml")
    assert result["resources"]["laser"] == {"unit_cost": 1.0}
    assert balances(result) == {"A": 4.25, "B": 2.75, "C": -1.25, "D": -5.75}


DOCS = Path(__file__).resolve().parents[3] / "docs"


def documented_runs(page: Path) -> list[tuple[list[str], list[str]]]:
    """Each ``$ peershop simulate …`` in a code block of ``page``: its arguments and the
    output printed under it (up to the next command or the end of the block)."""
    runs: list[tuple[list[str], list[str]]] = []
    in_block = False
    shown: list[str] | None = None  # the output of the run being read
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            in_block, shown = not in_block, None
        elif in_block and line.startswith("$ "):
            shown = []
            runs.append((line.removeprefix("$ peershop simulate ").split(), shown))
        elif shown is not None and (line or shown):
            shown.append(line)
    return [(args, out) for args, out in runs if args and args[0].startswith("examples/")]


def test_the_sharing_models_page_shows_what_simulate_prints():
    runs = documented_runs(DOCS / "sharing-models.md")
    assert len(runs) >= 8  # three models, factors, busy hours, weights, auction, JSON
    root = EXAMPLES.parent.parent
    for args, shown in runs:
        out = CliRunner().invoke(simulate_command, [str(root / args[0]), *args[1:]])
        assert out.exit_code == 0, out.output
        printed = out.stdout.rstrip("\n").splitlines()
        while shown and shown[-1] == "":
            shown.pop()
        if "…" not in shown:
            assert shown == printed, args
            continue
        # an elided run: what is shown appears in the output, in order
        rest = iter(printed)
        for line in (x for x in shown if x != "…"):
            assert any(line == p for p in rest), (args, line)
