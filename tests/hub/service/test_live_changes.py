"""Changes made while the hub runs reach the tools at once: enrolment, locks, allow-lists."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from hub.cli import main
from hub.contract.allowlist import uid_hash
from hub.service.service import Hub
from hub.shopfile.apply import apply_shop
from hub.shopfile.parse import parse_shop
from hub.store.db import make_engine, migrate, session_factory
from tests.helpers import Device, Listener, clear_retained, event_payload, wait_for

SHOP = """
members:
  - {handle: ada, name: Ada L., badges: ["04A1B2C3D4E5F6"]}
  - {handle: nia, name: Nia C.}
tools:
  - {id: drill-1, name: Drill press, devices: [drill-node], policy: tap}
stations:
  - {device: door, kind: sign_in}
"""
ADA, NIA = "04A1B2C3D4E5F6", "0A1B2C3D"


@pytest.fixture
def running(hub_config, broker):
    engine = make_engine(hub_config.db.url)
    migrate(engine)
    with session_factory(engine).begin() as session:
        apply_shop(session, parse_shop(SHOP))
    engine.dispose()
    # The broker serves the whole module: an earlier test's retained allow-lists and
    # tool states would otherwise pass for this hub's.
    clear_retained(
        broker.port,
        "peershop/dev/drill-node/allowlist",
        "peershop/dev/door/allowlist",
        "peershop/tool/drill-1/state",
    )
    listener = Listener(
        broker.port, "peershop/dev/+/cmd", "peershop/dev/+/allowlist", "peershop/tool/#"
    )
    hub = Hub(hub_config)
    hub.start()
    assert hub.wait_ready(10)
    env = {
        "PEERSHOP_DB_URL": hub_config.db.url,
        "PEERSHOP_SITE_DATA_DIR": str(hub_config.site.data_dir),
    }
    yield hub, listener, env
    hub.stop()
    listener.close()


def cli(env, *args):
    result = CliRunner().invoke(main, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result.output


def reply_to(listener, device, seq):
    topic = f"peershop/dev/{device}/cmd"
    listener.wait(lambda _: any(p.get("re") == seq for p in listener.payloads(topic)))
    return next(p for p in listener.payloads(topic) if p.get("re") == seq)


def latest_allowlist(listener, device):
    lists = listener.payloads(f"peershop/dev/{device}/allowlist")
    return lists[-1] if lists else None


def test_the_last_unknown_badge_at_the_door_is_enrolled_and_works_at_once(running, broker):
    _hub, listener, env = running
    door, drill = Device(broker.port, "door"), Device(broker.port, "drill-node")
    door.send(event_payload(1, 0, type="badge", uid=NIA.lower()))
    assert reply_to(listener, "door", 0) == {"re": 0, "action": "deny", "reason": "unknown_badge"}
    door.flush()
    listener.wait(lambda _: latest_allowlist(listener, "drill-node") is not None)
    assert uid_hash(NIA) not in latest_allowlist(listener, "drill-node")["uids"]

    # the reply leaves before the decision is committed; the record follows at once
    listed = wait_for(
        lambda: (
            NIA in (out := CliRunner().invoke(main, ["enrol", "--reader", "door"], env=env)).output
            and out.output
        ),
        what="the unknown badge to be listed",
    )
    assert "seen" in listed
    assert f"badge {NIA}" in cli(env, "enrol", "--reader", "door", "--member", "nia")

    # the hub notices within seconds: a new allow-list for the tool, then a grant
    listener.wait(lambda _: uid_hash(NIA) in latest_allowlist(listener, "drill-node")["uids"])
    drill.send(event_payload(1, 0, type="badge", uid=NIA))
    assert reply_to(listener, "drill-node", 0) == {
        "re": 0,
        "action": "grant",
        "member": "Nia C.",
        "max_s": 43200,
    }
    # a badge given twice is refused with the owner's name
    result = CliRunner().invoke(main, ["enrol", "--reader", "door", "--member", "ada"], env=env)
    assert result.exit_code != 0 and "no unknown badge" in result.output
    door.close()
    drill.close()


def test_locking_a_tool_ends_its_session_tells_the_device_and_empties_its_allowlist(
    running, broker
):
    hub, listener, env = running
    drill = Device(broker.port, "drill-node")
    drill.send(event_payload(1, 0, type="badge", uid=ADA))
    assert reply_to(listener, "drill-node", 0)["action"] == "grant"
    listener.wait(lambda _: latest_allowlist(listener, "drill-node") is not None)
    version = latest_allowlist(listener, "drill-node")["version"]

    cli(env, "tool", "lock", "drill-1")
    topic = "peershop/dev/drill-node/cmd"
    listener.wait(lambda _: {"action": "lock"} in listener.payloads(topic))
    states = lambda: listener.payloads("peershop/tool/drill-1/state")  # noqa: E731
    listener.wait(lambda _: states() and states()[-1]["state"] == "locked")
    listener.wait(lambda _: latest_allowlist(listener, "drill-node")["version"] > version)
    assert latest_allowlist(listener, "drill-node")["uids"] == []
    drill.send(event_payload(1, 1, type="badge", uid=ADA))
    assert reply_to(listener, "drill-node", 1)["reason"] == "locked_out"

    cli(env, "tool", "unlock", "drill-1")
    listener.wait(lambda _: {"action": "unlock"} in listener.payloads(topic))
    drill.send(event_payload(1, 2, type="badge", uid=ADA))
    assert reply_to(listener, "drill-node", 2)["action"] == "grant"
    drill.close()

    from sqlalchemy import select

    from hub.store.models import UsageSession

    def sessions():
        with hub.sm() as session:
            return session.scalars(select(UsageSession).order_by(UsageSession.id)).all()

    rows = wait_for(lambda: len(sessions()) == 2 and sessions(), what="the second session")
    assert [(s.member, s.close_reason) for s in rows] == [("ada", "locked"), ("ada", None)]
