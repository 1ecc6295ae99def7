"""Admin's tool and training edits, and how a later shop-file load treats them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from hub.cli import main
from hub.errors import ShopFileError
from hub.rules.records import TrainingRec
from hub.shopfile.apply import apply_shop
from hub.shopfile.parse import parse_shop
from hub.shopfile.tool_admin import (
    ToolEditError,
    edit_tool,
    end_grant_override,
    end_override,
    form_values,
    grant_training,
    holders,
    revoke_training,
)
from hub.store.db import make_engine, migrate, session_factory
from hub.store.models import Member, ShopMeta, Tool, TrainingGrant
from hub.store.shop_store import load_shop, shop_version, write_records

SHOP = """
members:
  - {handle: cora, name: Cora C., roles: [member, coordinator]}
  - {handle: dana, name: Dana D.}
  - {handle: eli, name: Eli E.}
trainings:
  - id: laser
    name: Laser induction
    granted:
      - {member: dana, by: cora, expires: 2030-06-30}
  - {id: lathe}
tools:
  - id: laser-1
    name: Laser cutter
    devices: [laser-node]
    policy: tap
    training: laser
    power: {off_w: 8, busy_w: 250, idle_timeout: 20m}
    scarce: {slots: "Mon-Fri 18:00-21:00"}
"""
UTC_TZ = __import__("zoneinfo").ZoneInfo("UTC")


@pytest.fixture
def sm(db_url: str):
    engine = make_engine(db_url)
    migrate(engine)
    factory = session_factory(engine)
    with factory.begin() as session:
        apply_shop(session, parse_shop(SHOP))
    yield factory
    engine.dispose()


def load(sm: Any, text: str = SHOP) -> list[str]:
    with sm.begin() as session:
        return apply_shop(session, parse_shop(text))


def edit(sm: Any, **changes: Any) -> list[str]:
    with sm.begin() as session:
        values = form_values(session.get(Tool, "laser-1"))
        values.update({k.replace("__", "."): v for k, v in changes.items()})
        return edit_tool(session, "laser-1", values, "cora")


def member(session: Any, handle: str) -> Member:
    return session.scalar(select(Member).where(Member.handle == handle))


def test_form_values_show_the_settings_as_the_file_writes_them(sm):
    with sm() as session:
        values = form_values(session.get(Tool, "laser-1"))
    assert values == {
        "policy": "tap",
        "training": "laser",
        "power.off_w": "8",
        "power.idle_w": "",
        "power.busy_w": "250",
        "power.hysteresis_w": "0",
        "power.idle_timeout": "20m",
        "power.max_duration": "12h",
        "hours": "",
        "scarce.enforce": True,
        "no_cut_while_busy": False,
        "end_on_stop": False,
    }


def test_an_edit_changes_the_row_bumps_the_version_and_the_rules_follow(sm):
    with sm() as session:
        version = shop_version(session)
    changes = edit(sm, policy="timeout", power__idle_timeout="5m", hours="Mon-Fri 09:00-17:00")
    assert changes == [
        "~ tool laser-1: policy tap -> timeout",
        "~ tool laser-1: power.idle_timeout 20m -> 5m",
        "~ tool laser-1: hours none -> 'Mon-Fri 09:00-17:00'",
    ]
    with sm() as session:
        assert shop_version(session) == version + 1
        tool = load_shop(session, UTC_TZ).tools["laser-1"]
    assert tool.rules.policy == "timeout"
    assert tool.rules.idle_timeout == timedelta(minutes=5)
    assert tool.hours is not None
    assert edit(sm, policy="timeout", power__idle_timeout="5m", hours="Mon-Fri 09:00-17:00") == []


def test_an_edit_keeps_what_admin_does_not_edit(sm):
    with sm.begin() as session:
        apply_shop(
            session, parse_shop(SHOP.replace("    policy: tap", "    site: annex\n    policy: tap"))
        )
    assert edit(sm, policy="card_present") == ["~ tool laser-1: policy tap -> card_present"]
    with sm() as session:
        tool = session.get(Tool, "laser-1")
        assert (tool.site, tool.name, tool.scarce["slots"]) == (
            "annex",
            "Laser cutter",
            "Mon-Fri 18:00-21:00",
        )
        assert [(b.kind, b.ref) for b in tool.bindings] == [("device", "laser-node")]


def test_bad_values_are_refused_naming_each_setting_and_nothing_is_written(sm):
    with pytest.raises(ToolEditError) as caught:
        edit(
            sm,
            policy="timeout",
            power__idle_timeout="",
            power__off_w="ten",
            hours="Mon 25:00-26:00",
            power__max_duration="forever",
        )
    problems = caught.value.problems
    assert set(problems) == {"policy", "power.off_w", "hours", "power.max_duration"}
    assert problems["policy"] == "policy timeout needs power.idle_timeout (such as 15m)"
    assert problems["power.off_w"] == "power.off_w must be a number, not 'ten'"
    assert "25:00" in problems["hours"]
    with pytest.raises(ToolEditError) as caught:
        edit(sm, power__off_w="300", training="welding", policy="sometimes")
    assert caught.value.problems == {
        "power": "power.off_w (300) must not be above power.busy_w (250)",
        "training": "unknown training 'welding'",
        "policy": "policy must be one of card_present, tap, timeout, not 'sometimes'",
    }
    with sm() as session:
        tool = session.get(Tool, "laser-1")
        assert (tool.policy, tool.power["off_w"], tool.options.get("overrides")) == ("tap", 8, None)


def test_a_load_keeps_what_admin_set_reports_it_and_changes_nothing_else(sm):
    edit(sm, policy="timeout", power__idle_timeout="5m")
    with sm() as session:
        version = shop_version(session)
    lines = load(sm)
    assert len(lines) == 2 and all(line.startswith("! tool laser-1: ") for line in lines)
    assert "policy timeout kept (set in Admin by cora at " in lines[0]
    assert lines[0].endswith("the file says tap")
    assert lines[1].endswith("the file says 20m")
    with sm() as session:
        tool = session.get(Tool, "laser-1")
        assert (tool.policy, tool.power["idle_timeout"]) == ("timeout", 300)
        assert shop_version(session) == version  # reports are not changes: no reload
    # the file's other changes still apply around the overrides
    lines = load(sm, SHOP.replace("busy_w: 250", "busy_w: 200"))
    assert "~ tool laser-1: power.busy_w 250 -> 200" in lines


def test_an_override_ends_when_the_file_says_the_same(sm):
    edit(sm, policy="timeout", power__idle_timeout="5m")
    lines = load(sm, SHOP.replace("policy: tap", "policy: timeout"))
    assert lines[0] == "= tool laser-1: policy timeout is in the file now; override ends"
    assert lines[1].startswith("! tool laser-1: power.idle_timeout 5m kept")
    # from now on the file rules the policy again
    assert "~ tool laser-1: policy timeout -> card_present" in load(
        sm, SHOP.replace("policy: tap", "policy: card_present")
    )


def test_a_load_that_would_make_a_tool_unrunnable_with_the_overrides_is_refused(sm):
    edit(sm, policy="timeout")  # the file's idle_timeout 20m makes it valid
    with pytest.raises(ShopFileError, match="with the settings kept from Admin"):
        load(sm, SHOP.replace(", idle_timeout: 20m", ""))
    with sm() as session:
        assert session.get(Tool, "laser-1").power["idle_timeout"] == 1200  # nothing loaded


def test_giving_a_setting_back_restores_the_files_value(sm):
    edit(sm, policy="card_present")
    with sm.begin() as session:
        assert end_override(session, "laser-1", "policy") == [
            "= tool laser-1: policy given back to the shop file",
            "~ tool laser-1: policy card_present -> tap",
        ]
    with sm() as session:
        tool = session.get(Tool, "laser-1")
        assert tool.policy == "tap" and "overrides" not in tool.options
    with sm.begin() as session, pytest.raises(ToolEditError):
        end_override(session, "laser-1", "policy")
    # setting a value back to the file's in Admin ends the override too
    edit(sm, policy="card_present")
    edit(sm, policy="tap")
    with sm() as session:
        assert "overrides" not in session.get(Tool, "laser-1").options


def test_revoke_is_immediate_and_a_load_does_not_grant_it_again(sm):
    now = datetime.now(UTC).replace(microsecond=0)
    with sm.begin() as session:
        lines = revoke_training(session, "laser", "dana", member(session, "cora"), now=now)
    assert lines == ["- training grant laser: dana (revoked by cora)"]
    with sm() as session:
        dana = load_shop(session, UTC_TZ).members["dana"]
    assert dana.trained("laser", now - timedelta(seconds=1))
    assert not dana.trained("laser", now)  # from the revoke on
    [line] = load(sm)
    assert line.startswith("! training grant laser: dana: expires ")
    assert line.endswith("kept (set in Admin by cora); the file says 2030-07-01T00:00:00Z")
    with sm() as session:
        assert not load_shop(session, UTC_TZ).members["dana"].trained("laser", now)
        [h] = holders(session)
    assert (h.handle, h.admin, h.valid(datetime.now(UTC))) == ("dana", "cora", False)
    with sm.begin() as session, pytest.raises(ToolEditError, match="does not hold"):
        revoke_training(session, "laser", "dana", member(session, "cora"))


def test_grant_and_renew_in_admin_then_the_file_catches_up(sm):
    until = datetime(2031, 1, 1, tzinfo=UTC)
    with sm.begin() as session:
        cora = member(session, "cora")
        assert grant_training(session, "laser", "eli", cora, None) == [
            "+ training grant laser: eli (by cora)"
        ]
        assert grant_training(session, "laser", "dana", cora, until) == [
            "~ training grant laser: dana: expires 2030-07-01T00:00:00Z -> 2031-01-01T00:00:00Z"
        ]
    assert load(sm) == [
        "! training grant laser: dana: expires 2031-01-01T00:00:00Z kept (set in Admin by "
        "cora); the file says 2030-07-01T00:00:00Z"
    ]
    assert load(sm, SHOP.replace("2030-06-30", "2030-12-31")) == [
        "= training grant laser: dana: expires 2031-01-01T00:00:00Z is in the file now; "
        "override ends"
    ]
    # the file rules dana's grant again; eli's, which the file never names, stays marked
    assert load(sm, SHOP.replace("2030-06-30", "2031-06-30")) == [
        "~ training grant laser: dana: expires 2031-01-01T00:00:00Z -> 2031-07-01T00:00:00Z"
    ]
    with sm() as session:
        marked = {h.handle: h.admin for h in holders(session)}
        assert marked == {"dana": None, "eli": "cora"}
        assert end_grant_override(session, "laser", "eli") == [
            "= training grant laser: eli given back to the shop file"
        ]
        session.commit()
        assert session.scalar(select(ShopMeta).where(ShopMeta.key.startswith("override:"))) is None


def test_grant_checks_its_inputs(sm):
    with sm.begin() as session:
        cora = member(session, "cora")
        with pytest.raises(ToolEditError) as caught:
            grant_training(session, "welding", "zed", cora, None)
        assert caught.value.problems == {
            "training": "unknown training 'welding'",
            "member": "unknown member 'zed'",
        }
        with pytest.raises(ToolEditError, match="future"):
            grant_training(session, "laser", "eli", cora, datetime(2020, 1, 1, tzinfo=UTC))
        assert (
            session.scalar(select(TrainingGrant).where(TrainingGrant.member_id == cora.id)) is None
        )


def test_peershop_load_counts_kept_overrides_apart(sm, db_url, tmp_path):
    edit(sm, policy="timeout")
    shop = tmp_path / "shop.yaml"
    shop.write_text(SHOP)
    result = CliRunner().invoke(
        main,
        ["load", str(shop)],
        env={"PEERSHOP_DB_URL": db_url, "PEERSHOP_SITE_DATA_DIR": str(tmp_path)},
    )
    assert result.exit_code == 0, result.output
    assert "! tool laser-1: policy timeout kept" in result.output
    assert "0 changes (changed; 1 kept as set in Admin)" in result.output


def test_an_induction_at_the_tool_after_a_revoke_is_no_admin_override(sm):
    with sm.begin() as session:
        revoke_training(session, "laser", "dana", member(session, "cora"))
    with sm.begin() as session:
        write_records(session, [TrainingRec("dana", "cora", "laser", datetime.now(UTC))])
    with sm() as session:
        [h] = holders(session)
    assert (h.expires_at, h.admin) == (None, None)
    # as for any induction, the file's expiry applies at the next load
    assert load(sm) == ["~ training grant laser: dana: expires none -> 2030-07-01T00:00:00Z"]
