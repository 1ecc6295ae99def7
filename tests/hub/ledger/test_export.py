"""Exports a coordinator or a fork can use: json round-trips, csv rows, ValueFlows events."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy.orm import Session, sessionmaker

from hub.cli import main
from hub.ledger.closing import close_due_periods
from hub.ledger.export import collect, load_json, to_csv, to_json, to_valueflows
from hub.ledger.periods import open_period
from hub.store.db import make_engine, migrate, session_factory
from hub.store.models import UsageRecord
from tests.hub.ledger.test_periods import NEXT_WEEK, SCENARIOS, WEEK, berlin, store_scenario_week


@pytest.fixture
def sm(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(db_url)
    migrate(engine)
    factory = session_factory(engine)
    with factory.begin() as s:
        store_scenario_week(s, SCENARIOS / "production-effort.yaml")
        s.add(
            UsageRecord(
                device_id="laser-reader",
                boot=1,
                seq=7,
                at=WEEK + timedelta(days=1, minutes=30),
                tool_id="laser",
                member="D",
                item="plywood-3mm",
                qty=2.5,
                unit="sheet",
            )
        )
        open_period(s, berlin(), WEEK)
        close_due_periods(s, berlin(), NEXT_WEEK)
    yield factory
    engine.dispose()


def test_json_round_trips_every_record_of_a_closed_period(sm):
    with sm() as s:
        data = collect(s, period_id=1)
    assert (len(data["effort"]), len(data["use"]), len(data["consume"])) == (4, 6, 1)
    assert len(data["balances"]) == 4 and len(data["resource_costs"]) == 2
    assert load_json(to_json(data)) == data
    raw = json.loads(to_json(data))
    assert raw["effort"][0]["weighted_hours"] == "9.0"  # exact, as text
    assert sum(Decimal(b["balance"]) for b in raw["balances"]) == 0


def test_a_range_holds_what_started_in_it(sm):
    with sm() as s:
        data = collect(s, since=WEEK + timedelta(days=1), until=WEEK + timedelta(days=2))
    assert data["effort"] == [] and len(data["use"]) == 6 and len(data["consume"]) == 1
    assert data["balances"] == []  # the closed week is not inside the range


def test_valueflows_has_work_use_and_consume_events_with_their_quantities(sm):
    with sm() as s:
        graph = to_valueflows(collect(s, period_id=1))["@graph"]
    by_action: dict[str, list[dict]] = {}
    for event in graph:
        if event["@type"] == "EconomicEvent":  # the rest: its agents, resources, units
            by_action.setdefault(event["action"], []).append(event)
    assert sorted(by_action) == ["consume", "use", "work"]
    work = {e["provider"]: e for e in by_action["work"] if "cleaning" in e["note"]}
    cleaning = work["peershop:member/A"]
    assert cleaning["effortQuantity"] == {"hasNumericalValue": 6.0, "hasUnit": "hour"}
    assert cleaning["inScopeOf"] == "peershop:project/commons"
    assert cleaning["hasBeginning"] < cleaning["hasEnd"]
    use_hours = sorted(e["effortQuantity"]["hasNumericalValue"] for e in by_action["use"])
    assert use_hours == [2.0, 3.0, 5.0, 5.0, 5.0, 10.0]
    assert all(e["receiver"].startswith("peershop:member/") for e in by_action["use"])
    [consume] = by_action["consume"]
    assert consume["resourceQuantity"] == {"hasNumericalValue": 2.5, "hasUnit": "sheet"}
    assert consume["receiver"] == "peershop:member/D" and "hasPointInTime" in consume


def test_csv_has_one_row_per_record(sm):
    with sm() as s:
        rows = list(csv.DictReader(io.StringIO(to_csv(collect(s, period_id=1)))))
    kinds = [r["record"] for r in rows]
    assert kinds.count("effort") == 4 and kinds.count("use") == 6
    assert kinds.count("consume") == 1 and kinds.count("balance") == 4
    d = next(r for r in rows if r["record"] == "balance" and r["member"] == "D")
    assert Decimal(d["balance"]) == Decimal("-6.25")


def test_export_command_writes_a_file(sm, tmp_path: Path, db_url: str):
    cfg_file = tmp_path / "peershop.toml"
    cfg_file.write_text(f'[site]\ntimezone = "Europe/Berlin"\n[db]\nurl = "{db_url}"\n')
    out = tmp_path / "week.jsonld"
    runner = CliRunner()
    result = runner.invoke(
        main,
        [
            "--config",
            str(cfg_file),
            "export",
            "--format",
            "valueflows",
            "--period",
            "1",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    graph = json.loads(out.read_text())["@graph"]
    assert len([n for n in graph if n["@type"] == "EconomicEvent"]) == 11
    result = runner.invoke(
        main, ["--config", str(cfg_file), "export", "--format", "csv", "--period", "99"]
    )
    assert result.exit_code != 0 and "no period 99" in result.output
