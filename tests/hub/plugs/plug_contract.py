"""``help_test_plug``: the battery every plug kind's tests call (issue 14).

A kind is right when a plug bound in the shop file is heard as power with its Wh
counter, a redelivered message is the same reading, topics of plugs not bound are
ignored, online and offline reach the hub, the hub's switch commands reach the plug,
the generated ACL lets the plug's login write its own topics and nothing else, and no
plug may take a reserved topic.  The first half is pure; the second runs the real hub on
Mosquitto with exactly the files ``peershop mosquitto-config`` writes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from hub.contract.messages import DeviceEvent, DeviceStatus
from hub.errors import ShopFileError
from hub.plugs import KINDS, plug_ref_problem
from hub.plugs.decode import parse_plug, plug_subscriptions, switch_commands
from hub.rules.records import ShopData, ToolConfig
from hub.rules.sessions import ToolRules
from hub.shopfile.apply import apply_shop
from hub.shopfile.parse import parse_shop
from hub.store.db import make_engine, session_factory
from hub.store.models import DeadLetter, Event
from tests.helpers import wait_for
from tests.hub.admin.test_credentials import db_of, peershop
from tests.hub.service.test_mosquitto_security import Shop

RULES = ToolRules("tap", off_w=5, busy_w=50, idle_timeout=timedelta(minutes=15))
RESERVED = ("peershop", "peershop/dev/x", "tele/x", "cmnd", "homeassistant/x", "$SYS/x")


@dataclass(frozen=True)
class PlugCase:
    """One kind's messages, as its plugs publish them."""

    binding: dict[str, Any]
    """The shop file's binding: ``{tasmota: saw_plug}``; its topic is the plug's login topic."""
    reading: tuple[str, bytes]
    """A message carrying power and the energy counter."""
    w: float
    wh_total: float
    online: tuple[str, bytes]
    offline: tuple[str, bytes]
    unbound: tuple[str, ...]
    """Topics of the kind's forms that are no bound plug's (the reading is sent on each)."""
    other_ref: str
    """Another plug's topic of the same kind, which this plug's login may not write."""

    @property
    def kind(self) -> str:
        (name,) = set(self.binding) & set(KINDS)
        return name

    @property
    def ref(self) -> str:
        return self.binding[self.kind]


def help_test_plug(case: PlugCase, shop: Shop) -> dict[str, Any]:
    """Every behaviour a plug kind owes the hub; ``shop`` is the generated broker
    (the ``broker_shop`` fixture of tests/hub/plugs/conftest.py).  Returns the data of
    the one power event the hub stored from the plug's reading, sent twice."""
    data, plug = _pure(case)
    return _through_the_broker(case, shop, data, plug)


def _shop_file(case: PlugCase, *, other: bool = False) -> str:
    """The plug bound to tool ``saw``; with ``other``, the other plug to tool ``lathe``."""
    refs = {"saw": case.ref, **({"lathe": case.other_ref} if other else {})}
    tools = [
        {"id": tool, "devices": [{**case.binding, case.kind: ref}], "power": {"busy_w": 50}}
        for tool, ref in refs.items()
    ]
    return yaml.safe_dump({"tools": tools}, sort_keys=False)


def _pure(case: PlugCase) -> tuple[ShopData, Any]:
    kind = KINDS[case.kind]
    (binding,) = parse_shop(_shop_file(case)).tools[0].bindings
    plug = binding.plug
    data = ShopData(tools={"saw": ToolConfig("saw", "saw", RULES, plugs=(plug,))})

    # a bound plug's reading is power with its counter in Wh
    topic, payload = case.reading
    (event,) = parse_plug(topic, payload, data)
    assert isinstance(event, DeviceEvent)
    assert (event.device_id, event.type) == (plug.device_id, "power")
    assert event.data == {"w": case.w, "wh_total": case.wh_total}
    # redelivered, it is the same reading (one identity, stored once)
    (again,) = parse_plug(topic, payload, data)
    assert (again.boot, again.seq) == (event.boot, event.seq)
    # the topics of plugs not bound are not the hub's
    for other in case.unbound:
        assert parse_plug(other, payload, data) == [], other
    # online and offline
    for (topic, payload), state in ((case.online, "online"), (case.offline, "offline")):
        (status,) = parse_plug(topic, payload, data)
        assert status == DeviceStatus(plug.device_id, state, None)
    # the hub listens to its topics
    subscribed = plug_subscriptions(data)
    for topic in (case.reading[0], case.online[0]):
        assert any(_matches(sub, topic) for sub in subscribed), (topic, subscribed)
    # switching: commands on the plug's own topics, or none for a meter
    for on in (True, False):
        commands = switch_commands(plug, on=on)
        assert bool(commands) is kind.switches
        for command in commands:
            assert any(_matches(f"{tree}/#", command.topic) for tree in kind.trees(case.ref))
    if kind.switches:
        assert switch_commands(plug, on=True) != switch_commands(plug, on=False)
    # no plug's topic reaches a reserved tree
    for ref in RESERVED:
        assert plug_ref_problem(case.kind, ref) is not None, ref
    assert plug_ref_problem(case.kind, case.ref) is None
    # the database holds its name
    assert len(case.kind) <= Event.__table__.c.device_id.type.length
    return data, plug


def _through_the_broker(case: PlugCase, shop: Shop, data: ShopData, plug: Any) -> dict[str, Any]:
    flag = "--" + case.kind.replace("_", "-")
    # a reserved topic is refused at the login and in the shop file
    result = peershop(shop.config_path, "device", "add", "rogue", flag, "peershop")
    assert result.exit_code != 0 and "reserved" in result.output, result.output
    # the plug's login and the other plug's, and the shop file binding the plug
    shop.add("saw-plug", flag, case.ref)
    shop.add("other-plug", flag, case.other_ref)
    engine = make_engine(db_of(shop.config_path))
    try:
        rogue = replace(case, binding={**case.binding, case.kind: "peershop"})
        with pytest.raises(ShopFileError, match="reserved"):
            with session_factory(engine).begin() as session:
                apply_shop(session, parse_shop(_shop_file(rogue)))
        with session_factory(engine).begin() as session:
            apply_shop(session, parse_shop(_shop_file(case, other=True)))
    finally:
        engine.dispose()
    hub = shop.hub()
    plug_client = shop.client("saw-plug", *[c.topic for c in switch_commands(plug, on=True)])
    other = plug._replace(ref=case.other_ref)

    def stored(model: Any, device_id: str) -> list[Any]:
        with hub.sm() as session:
            return session.scalars(select(model).where(model.device_id == device_id)).all()

    try:
        assert plug_client.link.wait_connected(10), plug_client.link.last_error
        # what the plug may not write: the hub's tree, another bound plug's topic (either
        # would reach the hub: a dead letter, or a reading of the other plug)
        topic, payload = case.reading
        plug_client.publish("peershop/dev/laser-node/event", payload)
        plug_client.publish(topic.replace(case.ref, case.other_ref, 1), payload)
        # its own reading, twice (a redelivery): one power event with its counter
        plug_client.publish(*case.online)
        plug_client.publish(topic, payload)
        plug_client.publish(topic, payload)
        (event,) = wait_for(lambda: stored(Event, plug.device_id), what="the plug's reading")
        assert event.data == {"w": case.w, "wh_total": case.wh_total}
        assert stored(Event, other.device_id) == []
        with hub.sm() as session:
            assert session.scalars(select(DeadLetter)).all() == []
        # the hub's switch commands reach the plug
        for command in switch_commands(plug, on=True):
            hub.link.publish(command.topic, command.payload, qos=1).wait_for_publish(10)
            plug_client.wait_topic(command.topic)
        assert len(stored(Event, plug.device_id)) == 1
        return event.data
    finally:
        plug_client.close()
        hub.stop()


def _matches(sub: str, topic: str) -> bool:
    """Whether MQTT subscription ``sub`` covers ``topic``."""
    s, t = sub.split("/"), topic.split("/")
    for i, level in enumerate(s):
        if level == "#":
            return True
        if i >= len(t) or (level != "+" and level != t[i]):
            return False
    return len(s) == len(t)
