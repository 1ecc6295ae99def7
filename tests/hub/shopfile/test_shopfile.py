"""The shop file (docs/shop-file.md): checking, the idempotent upsert, ``peershop load``."""

from __future__ import annotations

import doctest
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, func, select

import hub.rules.sessions
import hub.shopfile.parse
from hub.cli import main
from hub.errors import ShopFileError
from hub.shopfile.apply import apply_shop
from hub.shopfile.parse import parse_shop, parse_shop_file
from hub.shopfile.spec import MAX_ERRORS
from hub.store.db import make_engine, migrate, session_factory
from hub.store.models import (
    Badge,
    Device,
    Member,
    MqttAccount,
    ParticipationFactor,
    Project,
    Station,
    Task,
    Tool,
    ToolBinding,
    Training,
    TrainingGrant,
)
from hub.store.shop_store import shop_version

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "shop.yaml"
TABLES = (Project, Member, Badge, Training, TrainingGrant, Tool, ToolBinding, Task, Station, Device)

# docs/shop-file.md, verbatim (a backslash at a line's end joins it with the next).  It
# grants laser "by: bob", who is not in the file: bob has to be a trainer or coordinator
# the database already knows.
CONTRACT_EXAMPLE = """\
projects:
  - {id: commons, name: Shop commons, model: production_effort}
members:
  - {handle: ada, name: Ada L., roles: [member, trainer], badges: ["04A1B2C3D4E5F6"]}
tools:
  - id: laser-1
    name: Laser cutter
    project: commons
    devices: [laser-node, {tasmota: laser_plug}]   # ids of §2 devices, \
or {tasmota: TOPIC}, {shelly: PREFIX}
    policy: tap
    training: laser
    power: {off_w: 5, busy_w: 200, idle_timeout: 15m}
    scarce: {slots: "Mon-Fri 17:00-22:00", per_slot: 1h}
trainings:
  - {id: laser, granted: [{member: ada, by: bob}]}
tasks:
  - {id: empty-dust, title: Empty the dust collector, project: commons, slots: 4, \
hours: 0.5, weight: 1.0}
stations:
  - {device: desk-reader, kind: task_station}
  - {device: door-reader, kind: sign_in}
"""

BOB = """\
members:
  - {handle: bob, name: Bob K., roles: [member, trainer]}
"""


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    migrate(engine)
    yield engine
    engine.dispose()


def load(engine: Engine, text: str) -> list[str]:
    with session_factory(engine)() as session, session.begin():
        return apply_shop(session, parse_shop(text))


def counts(engine: Engine) -> dict[str, int]:
    with session_factory(engine)() as session:
        return {
            m.__tablename__: session.scalar(select(func.count()).select_from(m)) for m in TABLES
        }


def problems(exc: pytest.ExceptionInfo[ShopFileError]) -> list[str]:
    """The message's problem lines, without the summary line."""
    return str(exc.value).splitlines()[1:]


def test_contract_example_loads_into_the_columns_the_hub_reads(engine):
    load(engine, BOB)
    changes = load(engine, CONTRACT_EXAMPLE)

    assert "+ member ada (Ada L.) [member, trainer]" in changes
    assert "+ badge 04A1B2C3D4E5F6 -> ada" in changes
    assert "+ training grant laser: ada (by bob)" in changes
    with session_factory(engine)() as session:
        tool = session.get(Tool, "laser-1")
        assert (tool.name, tool.project_id, tool.policy, tool.training_id) == (
            "Laser cutter",
            "commons",
            "tap",
            "laser",
        )
        assert tool.power == {
            "off_w": 5,
            "idle_w": None,
            "busy_w": 200,
            "hysteresis_w": 0.0,
            "idle_timeout": 900,
        }
        assert tool.options == {
            "hours": None,
            "max_duration": 43200,
            "enforce_reservations": True,
            "no_cut_while_busy": False,
            "end_on_stop": False,
            "units": "hours",
        }
        assert tool.scarce == {"slots": "Mon-Fri 17:00-22:00", "per_slot": 3600}
        assert not tool.locked
        assert {(b.kind, b.ref) for b in tool.bindings} == {
            ("device", "laser-node"),
            ("tasmota", "laser_plug"),
        }
        devices = {d.id: d.approval for d in session.scalars(select(Device))}
        assert devices == dict.fromkeys(["laser-node", "desk-reader", "door-reader"], "approved")
        stations = {s.device_id: s.kind for s in session.scalars(select(Station))}
        assert stations == {"desk-reader": "task_station", "door-reader": "sign_in"}
        task = session.get(Task, "empty-dust")
        assert (task.slots, task.hours, task.weight, task.project_id) == (
            4,
            Decimal("0.5"),
            Decimal("1.0"),
            "commons",
        )
        ada = session.scalar(select(Member).where(Member.handle == "ada"))
        bob = session.scalar(select(Member).where(Member.handle == "bob"))
        assert session.get(Badge, "04A1B2C3D4E5F6").member_id == ada.id
        grant = session.scalar(select(TrainingGrant))
        assert (grant.training_id, grant.member_id, grant.granted_by_id) == (
            "laser",
            ada.id,
            bob.id,
        )
        assert grant.expires_at is None
        assert session.get(Project, "commons").model == "production_effort"


def test_contract_example_alone_names_the_grant_by_an_unknown_member(engine):
    with pytest.raises(ShopFileError) as exc:
        load(engine, CONTRACT_EXAMPLE)
    assert problems(exc) == [
        "shop.yaml:15: trainings[0] (laser) granted[0] (ada): unknown member 'bob'"
    ]
    assert set(counts(engine).values()) == {0}


def test_the_example_shop_loads_and_a_second_load_changes_nothing(engine):
    shop = parse_shop_file(EXAMPLE)
    assert len(shop.members) >= 12 and len(shop.tools) >= 6 and len(shop.tasks) >= 8
    kinds = {b.kind for t in shop.tools for b in t.bindings}
    assert kinds == {"device", "tasmota", "shelly"}
    assert {s.kind for s in shop.stations} == {"sign_in", "task_station"}

    first = load(engine, EXAMPLE.read_text())
    assert len(first) == sum(counts(engine).values())  # one line per row written
    assert load(engine, EXAMPLE.read_text()) == []


def test_a_change_shows_as_a_tilde_line_and_is_applied(engine):
    load(engine, BOB)
    load(engine, CONTRACT_EXAMPLE)
    edited = (
        CONTRACT_EXAMPLE.replace("policy: tap", "policy: timeout")
        .replace("busy_w: 200,", "busy_w: 150, max_duration: 4h,")
        .replace("Ada L.", "Ada Lovelace")
        .replace("per_slot: 1h}", "per_slot: 30m, enforce: false}")
        .replace("hours: 0.5, weight: 1.0", "hours: 0.75, weight: 1.5")
    )
    changes = load(engine, edited)
    assert changes == [
        "~ member ada: name 'Ada L.' -> 'Ada Lovelace'",
        "~ tool laser-1: policy tap -> timeout",
        "~ tool laser-1: power.busy_w 200 -> 150",
        "~ tool laser-1: power.max_duration 12h -> 4h",
        "~ tool laser-1: scarce.enforce true -> false",
        "~ tool laser-1: scarce.per_slot 1h -> 30m",
        "~ task empty-dust: hours 0.5 -> 0.75",
        "~ task empty-dust: weight 1.0 -> 1.5",
    ]
    with session_factory(engine)() as session:
        tool = session.get(Tool, "laser-1")
        assert tool.policy == "timeout"
        assert tool.power["busy_w"] == 150
        assert tool.options["max_duration"] == 4 * 3600
        assert tool.options["enforce_reservations"] is False
        assert tool.scarce["per_slot"] == 1800
        rules = hub.rules.sessions.tool_rules(tool.policy, tool.power, tool.options)
        assert (rules.busy_w, rules.idle_timeout.total_seconds()) == (150, 900)
        assert session.get(Task, "empty-dust").weight == Decimal("1.5")
    assert load(engine, edited) == []


def test_dry_run_prints_the_diff_and_changes_nothing(engine, db_url, tmp_path):
    path = tmp_path / "shop.yaml"
    path.write_text(CONTRACT_EXAMPLE.replace("members:\n", BOB))
    env = {"PEERSHOP_DB_URL": db_url, "PEERSHOP_SITE_DATA_DIR": str(tmp_path / "data")}
    runner = CliRunner()

    dry = runner.invoke(main, ["load", "--dry-run", str(path)], env=env)
    assert dry.exit_code == 0, dry.output
    assert "+ member ada (Ada L.) [member, trainer]" in dry.stdout
    assert "+ tool laser-1 (Laser cutter, tap)" in dry.stdout
    assert "(would change)" in dry.stderr
    assert set(counts(engine).values()) == {0}

    real = runner.invoke(main, ["load", str(path)], env=env)
    assert real.exit_code == 0, real.output
    assert real.stdout == dry.stdout
    assert counts(engine)["tools"] == 1


BAD = """\
projects:
  - {id: commons, name: Shop commons, modle: flat_rate}
members:
  - {handle: ada, name: Ada L., badges: ["04A1B2C3D4E5F6", 12345678]}
  - {handle: bob, name: Bob K., badges: ["04a1b2c3d4e5f6"]}
tools:
  - id: laser-1
    devices: [laser-node, {tasmota: laser_plug}]
    policy: timeout
    power: {off_w: 300, busy_w: 200}
  - id: laser-2
    devices: [laser-node]
    hours: "Mon-Fri 17:00-25:00"
tasks:
  - {id: empty-dust, title: Empty the dust collector, slots: 0, weight: 5}
stations:
  - {device: Door_Reader, kind: door}
"""


def test_a_bad_file_is_rejected_whole_with_every_problem_and_its_line(engine, db_url, tmp_path):
    load(engine, BOB)
    before = counts(engine)
    path = tmp_path / "shop.yaml"
    path.write_text(BAD)

    result = CliRunner().invoke(
        main, ["load", str(path)], env={"PEERSHOP_DB_URL": db_url, "PEERSHOP_SITE_DATA_DIR": "x"}
    )
    assert result.exit_code != 0
    assert f"{path}: 11 problems, nothing was loaded:" in result.stderr
    with pytest.raises(ShopFileError) as exc:
        parse_shop(BAD)
    assert problems(exc) == [
        "shop.yaml:2: projects[0] (commons): modle: unknown key (known: id, name, model, gain, "
        "weight_min, weight_max, weight_mode)",
        "shop.yaml:4: members[0] (ada): badge 12345678 must be written in quotes, "
        'as hex text such as "04A1B2C3D4E5F6"',
        "shop.yaml:5: members[1] (bob): badge 04A1B2C3D4E5F6 is listed on members[0] (ada) too",
        "shop.yaml:9: tools[0] (laser-1): policy timeout needs power.idle_timeout (such as 15m)",
        "shop.yaml:10: tools[0] (laser-1): power.off_w (300) must not be above power.busy_w (200)",
        "shop.yaml:12: tools[1] (laser-2): device laser-node is already bound to "
        "tools[0] (laser-1)",
        "shop.yaml:13: tools[1] (laser-2): hours: '25:00' is not a time of day",
        "shop.yaml:15: tasks[0] (empty-dust): slots must be a whole number of at least 1, not 0",
        "shop.yaml:15: tasks[0] (empty-dust): weight must be between 0.25 and 4.0, got 5",
        "shop.yaml:17: stations[0] (Door_Reader): device 'Door_Reader' is not a valid device id "
        "(lowercase letters, digits and '-', at most 63)",
        "shop.yaml:17: stations[0] (Door_Reader): kind must be one of sign_in, task_station, "
        "not 'door'",
    ]
    assert counts(engine) == before


def test_unknown_references_are_found_against_the_database_before_anything_is_written(engine):
    load(engine, BOB + "  - {handle: dora, name: Dora M.}\n")
    before = counts(engine)
    text = """\
members:
  - {handle: cleo, name: Cleo, badges: ["0A0B0C0D"]}
tools:
  - id: laser-1
    training: lazer
    project: comons
trainings:
  - {id: lathe, granted: [{member: cleo, by: dora}, {member: zed, by: bob}]}
tasks:
  - {id: oil-lathe, title: Oil the lathe, resource: lathe-1}
"""
    with session_factory(engine)() as session, session.begin():
        with pytest.raises(ShopFileError) as exc:
            apply_shop(session, parse_shop(text))
        assert not session.new and not session.dirty
    assert problems(exc) == [
        "shop.yaml:5: tools[0] (laser-1): unknown training 'lazer'",
        "shop.yaml:6: tools[0] (laser-1): unknown project 'comons'",
        "shop.yaml:8: trainings[0] (lathe) granted[0] (cleo): "
        "dora is not a trainer or coordinator, so cannot grant lathe",
        "shop.yaml:8: trainings[0] (lathe) granted[1] (zed): unknown member 'zed'",
        "shop.yaml:10: tasks[0] (oil-lathe): unknown tool 'lathe-1'",
    ]
    assert counts(engine) == before


def test_references_to_rows_already_in_the_database_resolve(engine):
    load(engine, EXAMPLE.read_text())
    before = counts(engine)
    # a second file naming the example's project, training, members and tool
    changes = load(
        engine,
        """\
members:
  - {handle: pia, name: Pia N., badges: ["77665544"]}
tools:
  - {id: laser-2, name: Small laser, project: commons, training: laser, devices: [laser2-node]}
trainings:
  - {id: laser, name: Laser cutter induction, granted: [{member: pia, by: ada}]}
tasks:
  - {id: laser-2-lens, title: Clean the small laser's lens, project: commons, resource: laser-1}
""",
    )
    assert changes == [
        "+ member pia (Pia N.)",
        "+ badge 77665544 -> pia",
        "+ training grant laser: pia (by ada)",
        "+ device laser2-node (approved)",
        "+ tool laser-2 (Small laser, tap)",
        "+ binding laser-2: device laser2-node",
        "+ task laser-2-lens (Clean the small laser's lens, 1 x 1 h at 1)",
    ]
    after = counts(engine)
    assert after["members"] == before["members"] + 1  # nothing left out was deleted
    assert after["tools"] == before["tools"] + 1


def test_badges_bindings_and_devices_follow_the_file_and_left_out_settings_reset(engine):
    load(engine, EXAMPLE.read_text())
    with session_factory(engine)() as session, session.begin():
        session.add(Device(id="spare-node", approval="pending"))
    text = """\
members:
  - {handle: ada, name: Ada Lindqvist, roles: [member, trainer], badges: ["5E2A9C11"]}
tools:
  - {id: drillpress-1, name: Drill press, devices: [spare-node, {tasmota: laser_extractor}]}
"""
    assert load(engine, text) == [
        "~ badge 5E2A9C11: bob -> ada",
        "~ device spare-node: pending -> approved",
        "~ tool drillpress-1: project commons -> none",
        "~ tool drillpress-1: power.busy_w 80 -> 50",
        "~ tool drillpress-1: power.idle_timeout 15m -> none",
        "~ tool drillpress-1: power.max_duration 2h -> 12h",
        "~ binding tasmota laser_extractor: laser-1 -> drillpress-1",
        "- binding drillpress-1: device drill-node",
        "+ binding drillpress-1: device spare-node",
    ]
    with session_factory(engine)() as session:
        bindings = {(b.kind, b.ref): b.tool_id for b in session.scalars(select(ToolBinding))}
        assert bindings[("tasmota", "laser_extractor")] == "drillpress-1"
        assert bindings[("device", "laser-node")] == "laser-1"  # laser-1 is not in this file
        assert ("device", "drill-node") not in bindings
        ada = session.scalar(select(Member).where(Member.handle == "ada"))
        assert {b.uid for b in ada.badges} == {"04A1B2C3D4E5F6", "5E2A9C11"}  # none removed
        assert session.get(Device, "spare-node").approval == "approved"
        assert session.get(Device, "drill-node").approval == "approved"  # kept, only unbound
    assert load(engine, text) == []


def test_a_task_weight_left_out_keeps_the_weight_period_close_gave_it(engine):
    text = "tasks:\n  - {id: empty-dust, title: Empty the dust collector, slots: 4}\n"
    assert load(engine, text) == ["+ task empty-dust (Empty the dust collector, 4 x 1 h at 1)"]
    with session_factory(engine)() as session, session.begin():
        session.get(Task, "empty-dust").weight = Decimal("1.32")
    assert load(engine, text) == []
    assert load(engine, text.replace("slots: 4", "slots: 4, weight: 1")) == [
        "~ task empty-dust: weight 1.32 -> 1"
    ]


def test_a_revoked_device_is_not_approved_again_by_a_file(engine):
    with session_factory(engine)() as session, session.begin():
        session.add(Device(id="old-reader", approval="revoked"))
    with pytest.raises(ShopFileError) as exc:
        load(engine, "stations:\n  - {device: old-reader, kind: sign_in}\n")
    assert problems(exc) == [
        "shop.yaml:2: stations[0] (old-reader): device 'old-reader' was revoked; a file never "
        "approves a revoked device again (remove it here, or approve it on the hub)"
    ]
    assert counts(engine)["stations"] == 0


def test_a_stored_station_cannot_become_a_tools_reader(engine):
    load(engine, "stations:\n  - {device: door-reader, kind: sign_in}\n")
    with pytest.raises(ShopFileError) as exc:
        load(engine, "tools:\n  - {id: door-1, devices: [door-reader]}\n")
    assert problems(exc) == [
        "shop.yaml:2: tools[0] (door-1): device 'door-reader' is a sign_in station (stored)"
    ]


def test_a_plug_topic_may_not_reach_reserved_topics_or_another_plugs(engine):
    load(engine, "tools:\n  - {id: saw, devices: [{shelly: shop/saw}]}\n")
    with session_factory(engine).begin() as session:
        session.add(
            MqttAccount(username="drill-plug", kind="tasmota", topic="drill", password_hash="x")
        )
    before = counts(engine)
    text = """\
tools:
  - {id: laser-1, devices: [{shelly: peershop}]}
  - {id: lathe-1, devices: [{tasmota: tele}]}
  - {id: printer-1, devices: [{shelly: ha/printer}]}
  - {id: press-1, devices: [{shelly: homeassistant}]}
  - {id: fan-1, devices: [{shelly: shop}]}
  - {id: drill-1, devices: [{tasmota: drill/press}]}
  - {id: bench-1, devices: [{shelly: bench}, {shelly: bench/light}]}
"""
    with session_factory(engine)() as session, session.begin():
        with pytest.raises(ShopFileError) as exc:
            apply_shop(session, parse_shop(text), discovery_prefix="ha")
    reserved = "which is reserved (peershop/, tele/, stat/, cmnd/, homeassistant/, ha/ and $ "
    reserved += "topics are not a plug's)"
    assert problems(exc) == [
        f"shop.yaml:2: tools[0] (laser-1): Shelly prefix 'peershop' overlaps peershop/, {reserved}",
        f"shop.yaml:3: tools[1] (lathe-1): Tasmota topic 'tele' overlaps tele/, {reserved}",
        f"shop.yaml:4: tools[2] (printer-1): Shelly prefix 'ha/printer' overlaps ha/, {reserved}",
        "shop.yaml:5: tools[3] (press-1): Shelly prefix 'homeassistant' overlaps "
        f"homeassistant/, {reserved}",
        "shop.yaml:6: tools[4] (fan-1): Shelly prefix 'shop' overlaps Shelly prefix "
        "'shop/saw' bound to tool saw",
        "shop.yaml:7: tools[5] (drill-1): Tasmota topic 'drill/press' overlaps Tasmota topic "
        "'drill' of plug drill-plug",
        "shop.yaml:8: tools[6] (bench-1): Shelly prefix 'bench' overlaps Shelly prefix "
        "'bench/light' bound to tool bench-1",
        "shop.yaml:8: tools[6] (bench-1): Shelly prefix 'bench/light' overlaps Shelly prefix "
        "'bench' bound to tool bench-1",
    ]
    assert counts(engine) == before  # nothing written
    # the plug's own login and the plug it was added for are the same plug: no conflict
    load(engine, "tools:\n  - {id: drill-1, devices: [{tasmota: drill}]}\n")


def test_grant_expiry_is_the_end_of_the_day_given(engine):
    load(engine, BOB)
    text = """\
members:
  - {handle: dana, name: Dana K.}
trainings:
  - {id: laser, granted: [{member: dana, by: bob, expires: 2027-06-30}]}
"""
    assert load(engine, text)[-1] == (
        "+ training grant laser: dana (by bob, until 2027-07-01T00:00:00Z)"
    )
    with session_factory(engine)() as session:
        grant = session.scalar(select(TrainingGrant))
        assert grant.expires_at == datetime(2027, 7, 1, tzinfo=UTC)
    assert load(engine, text) == []


def test_yaml_mistakes_name_their_line():
    with pytest.raises(ShopFileError) as exc:
        parse_shop("members:\n  - {handle: ada, name: Ada, handle: bob}\n")
    assert problems(exc) == ["shop.yaml:2: key 'handle' is given twice in one mapping"]
    with pytest.raises(ShopFileError, match=r"^shop.yaml:3: not valid YAML"):
        parse_shop("tools:\n  - id: laser-1\n  name: [oops\n")
    with pytest.raises(ShopFileError) as exc:
        parse_shop("tool:\n  - {id: laser-1}\n")
    assert problems(exc) == [
        "shop.yaml:1: unknown section 'tool' (sections are projects, members, trainings, "
        "tools, tasks, stations)"
    ]


def test_many_problems_are_listed_up_to_the_limit_and_the_rest_counted():
    text = "tasks:\n" + "".join(f"  - {{id: t{i}, title: T, slots: 0}}\n" for i in range(25))
    with pytest.raises(ShopFileError) as exc:
        parse_shop(text)
    lines = str(exc.value).splitlines()
    assert lines[0] == "shop.yaml: 25 problems, nothing was loaded:"
    assert len(lines) == 1 + MAX_ERRORS + 1
    assert lines[-1] == "shop.yaml: 5 more not shown"


def test_docstring_examples_hold():
    results = doctest.testmod(hub.shopfile.parse)
    assert results.attempted > 0
    assert results.failed == 0


def test_typos_and_conflicts_inside_the_file_are_caught_before_the_database():
    text = """\
members:
  - {handle: cleo, name: Cleo}
trainings:
  - {id: laser, granted: [{member: cleo, by: cleo}]}
tools:
  - id: laser-1
    devices: [desk-reader]
    power: {busy_W: 200}
    scarce: {per_slot: 2d}
stations:
  - {device: desk-reader, kind: task_station}
"""
    with pytest.raises(ShopFileError) as exc:
        parse_shop(text)
    assert problems(exc) == [
        "shop.yaml:4: trainings[0] (laser) granted[0] (cleo): "
        "cleo is not a trainer or coordinator, so cannot grant laser",
        "shop.yaml:8: tools[0] (laser-1): power.busy_W: unknown key (known: off_w, idle_w, "
        "busy_w, hysteresis_w, idle_timeout, max_duration)",
        "shop.yaml:9: tools[0] (laser-1): scarce.slots is missing",
        "shop.yaml:9: tools[0] (laser-1): scarce.per_slot must be at most 24h",
        "shop.yaml:11: stations[0] (desk-reader): device 'desk-reader' is bound to "
        "tools[0] (laser-1); a tool's reader cannot be a station too",
    ]


def test_every_example_in_the_coordinators_reference_is_a_valid_shop_file():
    doc = (EXAMPLE.parent.parent / "docs" / "shop-file.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", doc, re.S)
    assert len(blocks) >= 6
    for block in blocks:
        parse_shop(block, "docs/shop-file.md")


def test_a_load_that_changes_something_tells_a_running_hub_to_reload(engine):
    def version() -> int:
        with session_factory(engine)() as session:
            return shop_version(session)

    start = version()
    load(engine, BOB)
    assert version() == start + 1
    load(engine, BOB)
    assert version() == start + 1  # nothing changed, nothing to reload
    load(engine, BOB.replace("Bob K.", "Bob Kay"))
    assert version() == start + 2


def test_units_and_factors_are_checked_with_their_lines():
    text = """\
members:
  - {handle: ana, name: Ana, factor: 0}
  - {handle: bo, name: Bo, factor: -1}
  - {handle: cy, name: Cy, factor: half}
tools:
  - {id: laser-1, devices: [laser-node], units: minutes}
  - {id: saw-1, units: busy_hours}
"""
    with pytest.raises(ShopFileError) as exc:
        parse_shop(text)
    assert problems(exc) == [
        "shop.yaml:2: members[0] (ana): factor must be more than 0, not 0",
        "shop.yaml:3: members[1] (bo): factor must be more than 0, not -1",
        "shop.yaml:4: members[2] (cy): factor must be a number, not 'half'",
        "shop.yaml:6: tools[0] (laser-1): units must be one of hours, busy_hours, not 'minutes'",
        "shop.yaml:7: tools[1] (saw-1): units busy_hours needs a device that measures the "
        "tool's power (devices:); without one no hour is ever busy",
    ]


def test_units_and_factors_are_stored_and_changes_are_shown(engine):
    first = """\
projects: [{id: commons}]
members: [{handle: ana, name: Ana}, {handle: bo, name: Bo, factor: 0.5}]
tools: [{id: laser-1, project: commons, devices: [{tasmota: laser-plug}]}]
"""
    changes = load(engine, first)
    assert "~ member bo: factor 1 -> 0.5" in changes
    assert not [c for c in changes if "ana: factor" in c]
    second = """\
projects: [{id: commons}]
members: [{handle: ana, name: Ana, factor: 0.75}, {handle: bo, name: Bo}]
tools:
  - {id: laser-1, project: commons, devices: [{tasmota: laser-plug}], units: busy_hours}
"""
    assert load(engine, second) == [
        "~ member ana: factor 1 -> 0.75",
        "~ member bo: factor 0.5 -> 1",
        "~ tool laser-1: units hours -> busy_hours",
    ]
    assert load(engine, second) == []
    with session_factory(engine)() as session:
        assert session.get(Tool, "laser-1").options["units"] == "busy_hours"
        factors = {
            h: f
            for h, f in session.execute(
                select(Member.handle, ParticipationFactor.factor).join(
                    Member, Member.id == ParticipationFactor.member_id
                )
            )
        }
        assert factors == {"ana": Decimal("0.75")}  # factor 1 is no row
    load(engine, first)
    with session_factory(engine)() as session:
        assert session.get(Tool, "laser-1").options["units"] == "hours"
