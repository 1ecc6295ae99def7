"""Off-the-shelf plugs as the hub hears them: which topics it listens to, which messages
become a tool's power readings or online state, and what is refused (a dead letter) with
a reason a builder can act on.  Pure: no broker, no database."""

from datetime import timedelta

import pytest

from hub.contract.messages import PowerRange
from hub.errors import ContractError
from hub.plugs import plug_name, plug_ref_problem, plug_topics, plugs_overlap
from hub.plugs.decode import parse_plug, plug_subscriptions
from hub.plugs.shelly import shelly_online, shelly_switch
from hub.plugs.tasmota import tasmota_online, tasmota_sensor
from hub.rules.records import ShopData, ToolConfig
from hub.rules.sessions import ToolRules

RULES = ToolRules("tap", off_w=5, busy_w=200, idle_timeout=timedelta(minutes=15))


def parse_one(*args):
    """The one message a plug message of a single channel becomes, or None."""
    out = parse_plug(*args)
    assert len(out) <= 1
    return out[0] if out else None


def shop(*tools: tuple[str, tuple[tuple[str, str], ...]]) -> ShopData:
    return ShopData(
        tools={tid: ToolConfig(tid, tid, RULES, plugs=plugs) for tid, plugs in tools},
    )


DATA = shop(
    ("laser-1", (("tasmota", "laser_plug"),)),
    ("saw", (("shelly", "shellies/saw-plug"),)),
    ("drill", (("shelly", "drill"), ("tasmota", "drill_plug"))),
)


# --- what the hub subscribes to ------------------------------------------------------


def test_the_hub_listens_to_tasmota_once_and_to_each_shelly_by_its_prefix():
    assert plug_subscriptions(DATA) == [
        "tele/+/SENSOR",
        "tele/+/LWT",
        "stat/+/+",  # POWER<n> relay changes and the STATUS10 answer
        "shellies/saw-plug/status/switch:0",
        "shellies/saw-plug/events/rpc",
        "shellies/saw-plug/online",
        "shellies/saw-plug/peershop-hub/rpc",  # answers to the hub's GetStatus
        "drill/status/switch:0",
        "drill/events/rpc",
        "drill/online",
        "drill/peershop-hub/rpc",
    ]


def test_a_shop_without_plugs_listens_to_no_plug_topic():
    assert plug_subscriptions(shop(("laser-1", ()))) == []
    assert plug_subscriptions(shop(("saw", (("shelly", "saw"),)))) == [
        "saw/status/switch:0",
        "saw/events/rpc",
        "saw/online",
        "saw/peershop-hub/rpc",
    ]


# --- Tasmota -------------------------------------------------------------------------


def test_a_tasmota_reading_is_a_power_event_of_its_plug_in_watts_and_wh():
    ev = parse_one("tele/laser_plug/SENSOR", b'{"ENERGY":{"Total":1.5,"Power":812}}', DATA)
    assert (ev.device_id, ev.boot, ev.type, ev.data) == (
        "tasmota/laser_plug",
        0,
        "power",
        {"w": 812.0, "wh_total": 1500.0},
    )
    assert (ev.device_ts, ev.replay) == (None, False)


def test_a_redelivered_reading_is_the_same_reading_and_another_one_is_not():
    payload = b'{"ENERGY":{"Total":1.5,"Power":812}}'
    first = parse_one("tele/laser_plug/SENSOR", payload, DATA)
    again = parse_one("tele/laser_plug/SENSOR", payload, DATA)
    later = parse_one("tele/laser_plug/SENSOR", b'{"ENERGY":{"Total":1.6,"Power":812}}', DATA)
    other = parse_one("tele/drill_plug/SENSOR", payload, DATA)
    assert first.identity == again.identity
    assert first.seq != later.seq
    assert first.seq != other.seq  # the same payload from another plug
    for ev in (first, later, other):
        assert 0 <= ev.seq < 2**62  # fits the database's signed 64-bit column


def test_tasmota_power_without_a_counter_is_a_reading_without_wh():
    ev = parse_one("tele/laser_plug/SENSOR", b'{"ENERGY":{"Power":3}}', DATA)
    assert ev.data == {"w": 3.0}


def test_a_tasmota_counter_without_power_says_nothing_about_power():
    assert parse_one("tele/laser_plug/SENSOR", b'{"ENERGY":{"Total":1.5}}', DATA) is None


def test_tasmota_online_and_offline():
    online = parse_one("tele/laser_plug/LWT", b"Online", DATA)
    offline = parse_one("tele/laser_plug/LWT", b"Offline", DATA)
    assert (online.device_id, online.state, online.boot) == ("tasmota/laser_plug", "online", None)
    assert offline.state == "offline"


@pytest.mark.parametrize(
    "topic",
    [
        "tele/someone_elses_plug/SENSOR",  # not in the shop file
        "tele/someone_elses_plug/LWT",
        "tele/laser_plug/STATE",  # a Tasmota topic the hub does not read
        "tele/laser_plug/SENSOR/extra",
        "stat/laser_plug/SENSOR",
        "laser_plug/SENSOR",
        "tele/saw/SENSOR",  # saw's plug is a Shelly
    ],
)
def test_topics_of_no_bound_tasmota_are_not_the_hubs(topic):
    assert parse_one(topic, b'{"ENERGY":{"Total":1.5,"Power":812}}', DATA) is None


# --- Shelly --------------------------------------------------------------------------


def test_a_shelly_status_is_a_power_event_with_its_wh_counter():
    ev = parse_one(
        "shellies/saw-plug/status/switch:0", b'{"apower":40.5,"aenergy":{"total":12.5}}', DATA
    )
    assert (ev.device_id, ev.type, ev.data) == (
        "shelly/shellies/saw-plug",
        "power",
        {
            "w": 40.5,
            "wh_total": 12.5,
        },
    )


def test_a_shelly_notify_status_with_power_is_a_reading_and_one_without_is_nothing():
    notify = b'{"method":"NotifyStatus","params":{"ts":1.5,"switch:0":{"id":0,"apower":7}}}'
    ev = parse_one("shellies/saw-plug/events/rpc", notify, DATA)
    assert (ev.device_id, ev.data) == ("shelly/shellies/saw-plug", {"w": 7.0})
    energy = b'{"method":"NotifyStatus","params":{"switch:0":{"aenergy":{"total":3}}}}'
    assert parse_one("shellies/saw-plug/events/rpc", energy, DATA) is None
    other = b'{"method":"NotifyEvent","params":{"events":[]}}'
    assert parse_one("shellies/saw-plug/events/rpc", other, DATA) is None


def test_shelly_online_and_offline():
    online = parse_one("drill/online", b"true", DATA)
    assert (online.device_id, online.state, online.boot) == ("shelly/drill", "online", None)
    assert parse_one("drill/online", b"false", DATA).state == "offline"


@pytest.mark.parametrize(
    "topic",
    [
        "shellies/other-plug/status/switch:0",
        "shellies/saw-plug/status/switch:1",  # the hub reads the first switch
        "shellies/saw-plug/status/sys",
        "shellies/saw-plug/events/other",
        "shellies/saw-plug/rpc",
        "shellies/saw-plug/command",
        "shellies/saw-plug",
        "saw-plug/status/switch:0",
        "shellies/status/switch:0",
        "drill_plug/status/switch:0",  # drill_plug is a Tasmota topic
    ],
)
def test_topics_of_no_bound_shelly_are_not_the_hubs(topic):
    assert parse_one(topic, b'{"apower":40.5,"aenergy":{"total":12.5}}', DATA) is None


# --- refused readings ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "payload", "says"),
    [
        (
            "tele/laser_plug/SENSOR",
            b'{"ENERGY":{"Power":250000}}',
            "ENERGY.Power is 250000 W, outside the plausible 0 to 100000 W "
            "(ingest.min_power_w, ingest.max_power_w)",
        ),
        (
            "tele/laser_plug/SENSOR",
            b'{"ENERGY":{"Power":5,"Total":2e7}}',
            "ENERGY.Total (in Wh) is 2e+10 Wh, outside the plausible 0 to 1e+10 Wh "
            "(ingest.max_wh_total)",
        ),
        (
            "shellies/saw-plug/status/switch:0",
            b'{"apower":-3}',
            "apower is -3 W, outside the plausible 0 to 100000 W "
            "(ingest.min_power_w, ingest.max_power_w)",
        ),
        (
            "shellies/saw-plug/status/switch:0",
            b'{"apower":3,"aenergy":{"total":2e10}}',
            "aenergy.total is 2e+10 Wh, outside the plausible 0 to 1e+10 Wh (ingest.max_wh_total)",
        ),
        ("tele/laser_plug/LWT", b"online", "Tasmota LWT must be Online or Offline, got 'online'"),
        ("drill/online", b"yes", "Shelly online must be true or false, got 'yes'"),
        ("tele/laser_plug/SENSOR", b"[1]", "plug payload is not a JSON object"),
    ],
)
def test_implausible_or_broken_plug_messages_are_refused_naming_the_field(topic, payload, says):
    with pytest.raises(ContractError) as caught:
        parse_one(topic, payload, DATA)
    assert str(caught.value) == says


def test_a_shop_that_allows_negative_power_passes_it_on_to_the_rules():
    lenient = PowerRange(min_w=-50.0)
    ev = parse_one("shellies/saw-plug/status/switch:0", b'{"apower":-3}', DATA, lenient)
    assert ev.data == {"w": -3.0}


# --- decoding --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        (b"\xff\xfe", "plug payload is not UTF-8"),
        (b"{", "plug payload is not JSON (Expecting property name enclosed in double quotes)"),
        (b"[]", "plug payload is not a JSON object"),
        (b'{"ENERGY":{"Power":NaN}}', "plug payload contains NaN, which is not JSON"),
        (b'{"ENERGY":{"Power":"800"}}', "ENERGY.Power must be a number, got '800'"),
        (b'{"ENERGY":{"Power":true}}', "ENERGY.Power must be a number, got True"),
        (b'{"ENERGY":{"Power":1e999}}', "ENERGY.Power must be finite, got inf"),
        (b'{"ENERGY":{"Total":"1"}}', "ENERGY.Total must be a number, got '1'"),
        (b'{"ENERGY":5}', "Tasmota SENSOR payload has no ENERGY object"),
        (b'{"ENERGY":{}}', "Tasmota SENSOR payload has neither ENERGY.Power nor ENERGY.Total"),
        (b'{"ENERGY":{"Total":-1}}', "ENERGY.Total must not be negative, got -1.0"),
    ],
)
def test_tasmota_payloads_a_plug_gets_wrong(payload, says):
    with pytest.raises(ContractError) as caught:
        tasmota_sensor(payload)
    assert str(caught.value) == says


def test_a_tasmota_payload_may_come_as_text_or_decoded():
    assert tasmota_sensor('{"ENERGY":{"Power":5}}').w == 5.0
    assert tasmota_sensor({"ENERGY": {"Power": 5, "Total": 0}}).wh_total == 0.0


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        (b'{"apower":"40"}', "apower must be a number, got '40'"),
        (b'{"apower":Infinity}', "plug payload contains Infinity, which is not JSON"),
        (b'{"aenergy":5}', "aenergy must be an object"),
        (b'{"aenergy":{"total":-5}}', "aenergy.total must not be negative, got -5.0"),
        (b'{"aenergy":{"total":"5"}}', "aenergy.total must be a number, got '5'"),
        (b'{"output":"on"}', "output must be true or false, got 'on'"),
        (b'{"method":"NotifyStatus"}', "Shelly NotifyStatus has no params object"),
        (
            b'{"method":"NotifyStatus","params":{"switch:0":5}}',
            "Shelly NotifyStatus switch:0 is not an object",
        ),
    ],
)
def test_shelly_payloads_a_plug_gets_wrong(payload, says):
    with pytest.raises(ContractError) as caught:
        shelly_switch(payload)
    assert str(caught.value) == says


def test_a_shelly_status_reads_power_counter_and_relay():
    reading = shelly_switch(b'{"id":0,"output":false,"apower":0,"aenergy":{"total":0}}')
    assert (reading.w, reading.wh_total, reading.output) == (0.0, 0.0, False)
    assert shelly_switch(b'{"apower":5}').output is None
    assert shelly_switch(b'{"apower":5,"aenergy":{}}').wh_total is None
    notify = {"method": "NotifyStatus", "params": {"switch:1": {"apower": 9}}}
    assert shelly_switch(notify, switch="switch:1").w == 9.0
    assert shelly_switch(notify).w is None


@pytest.mark.parametrize(
    ("fn", "payload", "online"),
    [
        (tasmota_online, b"Online", True),
        (tasmota_online, " Offline\n", False),
        (shelly_online, b"true\n", True),
        (shelly_online, "false", False),
    ],
)
def test_online_payloads(fn, payload, online):
    assert fn(payload) is online


@pytest.mark.parametrize(
    ("fn", "payload", "says"),
    [
        (
            tasmota_online,
            b"\xffOnline",
            "Tasmota LWT must be Online or Offline, got '\ufffdOnline'",
        ),
        (tasmota_online, "x" * 50, f"Tasmota LWT must be Online or Offline, got {'x' * 40!r}"),
        (shelly_online, b"\xfftrue", "Shelly online must be true or false, got '\ufffdtrue'"),
        (shelly_online, "1" * 50, f"Shelly online must be true or false, got {'1' * 40!r}"),
    ],
)
def test_online_payloads_a_plug_gets_wrong(fn, payload, says):
    with pytest.raises(ContractError) as caught:
        fn(payload)
    assert str(caught.value) == says


# --- plug topics in the shop file ----------------------------------------------------

RESERVED = "(peershop/, tele/, stat/, cmnd/, homeassistant/ and $ topics are not a plug's)"


def test_plug_names_and_topic_trees():
    assert plug_name("tasmota") == "Tasmota topic"
    assert plug_name("shelly") == "Shelly prefix"
    assert plug_topics("tasmota", "laser_plug") == (
        "tele/laser_plug",
        "stat/laser_plug",
        "cmnd/laser_plug",
    )
    assert plug_topics("shelly", "shellies/saw") == ("shellies/saw",)


@pytest.mark.parametrize(
    ("kind", "ref", "why"),
    [
        ("shelly", "peershop", "overlaps peershop/"),
        ("shelly", "peershop/dev/x", "overlaps peershop/"),
        ("tasmota", "tele/x", "overlaps tele/"),
        ("shelly", "cmnd", "overlaps cmnd/"),
        ("shelly", "homeassistant/switch", "overlaps homeassistant/"),
        ("shelly", "$SYS", "is a broker topic ($)"),
    ],
)
def test_plug_topics_in_reserved_trees_are_refused(kind, ref, why):
    says = f"{plug_name(kind)} {ref!r} {why}, which is reserved {RESERVED}"
    assert plug_ref_problem(kind, ref) == says


def test_a_shops_own_discovery_prefix_is_reserved_too():
    listing = "(peershop/, tele/, stat/, cmnd/, homeassistant/, ha/ and $ topics are not a plug's)"
    assert plug_ref_problem("shelly", "ha/saw", "ha") == (
        f"Shelly prefix 'ha/saw' overlaps ha/, which is reserved {listing}"
    )
    assert plug_ref_problem("shelly", "homeassistant", "ha") is not None
    assert plug_ref_problem("shelly", "homeassistant/x", "homeassistant") == (
        f"Shelly prefix 'homeassistant/x' overlaps homeassistant/, which is reserved {RESERVED}"
    )


@pytest.mark.parametrize("ref", ["shellies/saw", "telex", "peershopping", "my/tele", "stats"])
def test_plug_topics_that_only_look_alike_are_fine(ref):
    assert plug_ref_problem("shelly", ref) is None
    assert plug_ref_problem("tasmota", ref) is None


@pytest.mark.parametrize(
    ("a", "b", "overlap"),
    [
        (("shelly", "saw"), ("shelly", "saw"), True),
        (("shelly", "saw"), ("shelly", "saw/one"), True),
        (("shelly", "saw/one"), ("shelly", "saw"), True),
        (("shelly", "saw"), ("shelly", "saws"), False),
        (("tasmota", "saw"), ("tasmota", "saw"), True),
        (("tasmota", "saw"), ("tasmota", "saw2"), False),
        (("tasmota", "saw"), ("shelly", "tele/saw"), True),
        (("shelly", "stat/saw/x"), ("tasmota", "saw"), True),
        (("tasmota", "saw"), ("shelly", "saw"), False),
    ],
)
def test_two_plugs_overlap_when_one_could_speak_as_the_other(a, b, overlap):
    assert plugs_overlap(a, b) is overlap


def test_a_readings_identity_stays_the_same_across_hub_versions():
    # stored with the reading: a redelivery after an upgrade must still be recognised
    ev = parse_one("tele/laser_plug/SENSOR", b'{"ENERGY":{"Total":1.5,"Power":812}}', DATA)
    assert ev.seq == 3673274264508049473
