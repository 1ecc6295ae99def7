"""Admin changes reach a running hub: a real Mosquitto, the hub, and the web app.

The web app runs in the hub's process (``create_app(hub=hub)``, as ``peershop run``
serves it), so a change is applied at once; a second app on the database alone stands
for a web view in another process, which the hub picks up from the shop version.
"""

from __future__ import annotations

from typing import Any

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from hub.contract.allowlist import uid_hash
from hub.service.service import Hub
from hub.shopfile.apply import apply_shop
from hub.shopfile.parse import parse_shop
from hub.store.db import make_engine, migrate, session_factory
from hub.store.models import Member
from tests.helpers import Device, Listener, event_payload, wait_for
from tests.web.test_web_app import csrf, login
from web import create_app
from web.auth import set_password

SHOP = """
members:
  - {handle: cora, name: Cora C., roles: [member, coordinator]}
  - {handle: ada, name: Ada L., badges: ["04A1B2C3D4E5F6"]}
  - {handle: nia, name: Nia C.}
trainings:
  - id: laser
    granted:
      - {member: ada, by: cora}
tools:
  - {id: laser-1, name: Laser cutter, devices: [laser-node], policy: tap, training: laser}
  - {id: drill-1, name: Drill press, devices: [drill-node], policy: tap}
stations:
  - {device: door, kind: sign_in}
"""
ADA, NIA = "04A1B2C3D4E5F6", "0A1B2C3D"
TOOL_FORM = {
    "policy": "tap",
    "training": "laser",
    "off_w": "5",
    "busy_w": "50",
    "hysteresis_w": "0",
    "max_duration": "12h",
}


@pytest.fixture(autouse=True)
def fast_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    import web.auth

    monkeypatch.setattr(
        web.auth, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    )


@pytest.fixture
def running(hub_config, broker):
    engine = make_engine(hub_config.db.url)
    migrate(engine)
    sm = session_factory(engine)
    with sm.begin() as session:
        apply_shop(session, parse_shop(SHOP))
        cora = session.scalar(select(Member).where(Member.handle == "cora"))
        set_password(session, cora, "cora-password")
    listener = Listener(broker.port, "peershop/dev/+/cmd", "peershop/dev/+/allowlist")
    hub = Hub(hub_config)
    hub.start()
    assert hub.wait_ready(10)
    yield hub, sm, listener
    hub.stop()
    listener.close()
    engine.dispose()


def coordinator(app: Any) -> tuple[Any, str]:
    client = app.test_client()
    login(client, "cora")
    return client, csrf(client, "/admin/")


def reply_to(listener: Listener, device: str, seq: int) -> dict[str, Any]:
    topic = f"peershop/dev/{device}/cmd"
    listener.wait(lambda _: any(p.get("re") == seq for p in listener.payloads(topic)))
    return next(p for p in listener.payloads(topic) if p.get("re") == seq)


def allowlist(listener: Listener, device: str) -> list[str]:
    lists = listener.payloads(f"peershop/dev/{device}/allowlist")
    return lists[-1]["uids"] if lists else []


def test_policy_and_training_changed_in_admin_change_the_hubs_decisions(running, broker):
    hub, sm, listener = running
    laser = Device(broker.port, "laser-node")
    client, token = coordinator(create_app({"SECRET_KEY": "live"}, hub=hub))

    laser.send(event_payload(1, 0, type="badge", uid=ADA))
    assert reply_to(listener, "laser-node", 0)["max_s"] == 43200
    laser.send(event_payload(1, 1, type="badge", uid=ADA))
    assert reply_to(listener, "laser-node", 1)["action"] == "release"

    # the longest session, which a grant tells the tool, set in Admin: at once
    r = client.post(
        "/admin/tools/laser-1", data={**TOOL_FORM, "max_duration": "1h", "csrf_token": token}
    )
    assert r.status_code == 302
    laser.send(event_payload(1, 2, type="badge", uid=ADA))
    assert reply_to(listener, "laser-node", 2) == {
        "re": 2,
        "action": "grant",
        "member": "Ada L.",
        "max_s": 3600,
    }
    laser.send(event_payload(1, 3, type="badge", uid=ADA))
    assert reply_to(listener, "laser-node", 3)["action"] == "release"

    # revoking ada's training: refused at once, and gone from the tool's offline list
    listener.wait(lambda _: uid_hash(ADA) in allowlist(listener, "laser-node"))
    r = client.post("/admin/trainings/laser/ada/revoke", data={"csrf_token": token})
    assert r.status_code == 302
    laser.send(event_payload(1, 4, type="badge", uid=ADA))
    assert reply_to(listener, "laser-node", 4) == {
        "re": 4,
        "action": "deny",
        "reason": "not_trained",
    }
    listener.wait(lambda _: uid_hash(ADA) not in allowlist(listener, "laser-node"))

    # granted again from a web view in another process: the hub reads the shop version
    other, other_token = coordinator(create_app({"SECRET_KEY": "other"}, sm=sm))
    r = other.post(
        "/admin/trainings/grant",
        data={"grant-csrf_token": other_token, "grant-training": "laser", "grant-member": "ada"},
    )
    assert r.status_code == 302
    listener.wait(lambda _: uid_hash(ADA) in allowlist(listener, "laser-node"))
    laser.send(event_payload(1, 5, type="badge", uid=ADA))
    assert reply_to(listener, "laser-node", 5)["action"] == "grant"
    laser.close()


def test_the_last_unknown_card_at_the_door_is_given_in_admin_and_opens_a_tool(running, broker):
    hub, _sm, listener = running
    door, drill = Device(broker.port, "door"), Device(broker.port, "drill-node")
    client, token = coordinator(create_app({"SECRET_KEY": "live"}, hub=hub))
    door.send(event_payload(1, 0, type="badge", uid=NIA.lower()))
    assert reply_to(listener, "door", 0)["reason"] == "unknown_badge"
    wait_for(lambda: NIA in client.get("/admin/").get_data(as_text=True), what="the card listed")
    r = client.post(
        "/admin/badges/assign",
        data={"assign-csrf_token": token, "assign-reader": "door", "assign-member": "nia"},
    )
    assert r.status_code == 302
    listener.wait(lambda _: uid_hash(NIA) in allowlist(listener, "drill-node"))
    drill.send(event_payload(1, 0, type="badge", uid=NIA))
    assert reply_to(listener, "drill-node", 0)["member"] == "Nia C."
    door.close()
    drill.close()
