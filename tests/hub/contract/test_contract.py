"""docs/device-protocol.md parsing: what a device may send, and the reason when it may not."""

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.contract.messages import (
    EVENT_TYPES,
    PowerRange,
    event_to_payload,
    parse_event,
    parse_status,
    parse_topic,
)
from hub.errors import ContractError


def test_contract_example_event_parses_with_device_time_and_identity():
    ev = parse_event(
        "laser-node",
        b'{"boot":7,"seq":42,"ts":"2026-11-26T10:15:03.120Z","type":"badge",'
        b'"uid":"04A1B2C3D4E5F6","replay":false}',
    )
    assert ev.identity == ("laser-node", 7, 42)
    assert ev.device_ts == datetime(2026, 11, 26, 10, 15, 3, 120000, tzinfo=UTC)
    assert ev.data == {"uid": "04A1B2C3D4E5F6"}
    assert ev.replay is False


def test_uid_is_stored_as_uppercase_hex_whatever_the_device_sent():
    ev = parse_event("door", b'{"boot":1,"seq":0,"type":"badge","uid":"04a1b2c3d4e5f6"}')
    assert ev.data["uid"] == "04A1B2C3D4E5F6"


def test_unix_seconds_and_missing_ts_are_both_accepted():
    ev = parse_event("p", b'{"boot":1,"seq":0,"type":"power","w":5,"ts":1764152103.5}')
    assert ev.device_ts == datetime.fromtimestamp(1764152103.5, UTC)
    assert parse_event("p", b'{"boot":1,"seq":1,"type":"power","w":5}').device_ts is None


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "not JSON"),
        (b"[1,2]", "JSON list, not an object"),
        (b"\xff\xfe", "not UTF-8"),
        (b'{"seq":1,"type":"power","w":1}', "'boot' is missing"),
        (b'{"boot":"7","seq":1,"type":"power","w":1}', "'boot' must be an integer"),
        (b'{"boot":true,"seq":1,"type":"power","w":1}', "'boot' must be an integer"),
        (b'{"boot":1,"seq":-1,"type":"power","w":1}', "'seq' must be between"),
        (b'{"boot":1,"seq":1,"type":"teleport"}', "unknown event type 'teleport'"),
        (b'{"boot":1,"seq":1,"type":"power","w":NaN}', "NaN, which is not JSON"),
        (b'{"boot":1,"seq":1,"type":"power","w":"high"}', "'w' must be a number"),
        (b'{"boot":1,"seq":1,"type":"badge","uid":"04A1B2"}', "4 to 10 bytes of hex"),
        (b'{"boot":1,"seq":1,"type":"badge","uid":"XYZXYZXY"}', "4 to 10 bytes of hex"),
        (b'{"boot":1,"seq":1,"type":"running","on":1}', "'on' must be true or false"),
        (b'{"boot":1,"seq":1,"type":"consume","item":"pla","qty":0,"unit":"g"}', "positive"),
        (b'{"boot":1,"seq":1,"type":"button"}', "'name' is missing"),
        (b'{"boot":1,"seq":1,"type":"power","w":1,"ts":"yesterday"}', "not ISO 8601"),
        (b'{"boot":1,"seq":1,"type":"power","w":1,"replay":"yes"}', "'replay' must be"),
        (b'{"boot":1,"seq":1,"type":"power","w":1,"wh_total":-3}', "must not be negative"),
        (b'{"boot":1,"seq":1,"type":"fault"}', "'code' must be a string or integer"),
        (b'{"boot":1,"seq":1,"type":"button","name":"go\\u0000"}', "NUL character"),
        (b'{"boot":1,"seq":1,"type":"power","w":1,"x":["\\u0000"]}', "NUL character"),
    ],
)
def test_malformed_events_are_rejected_with_a_reason_a_builder_can_act_on(payload, reason):
    with pytest.raises(ContractError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        parse_event("node", payload)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ('"w":1e300', "field 'w' is 1e+300 W, outside the plausible 0 to 100000 W"),
        ('"w":-1e300', "field 'w' is -1e+300 W, outside the plausible 0 to 100000 W"),
        ('"w":-0.5', "field 'w' is -0.5 W, outside"),
        ('"w":100001', "field 'w' is 100001 W, outside"),
        ('"w":5,"wh_total":1e300', "field 'wh_total' is 1e+300 Wh, outside the plausible 0 to"),
    ],
)
def test_implausible_power_is_rejected_naming_the_field_and_the_config_keys(fields, reason):
    payload = b'{"boot":1,"seq":1,"type":"power",' + fields.encode() + b"}"
    with pytest.raises(ContractError) as err:
        parse_event("node", payload)
    assert str(err.value).startswith(reason)
    assert "(ingest." in str(err.value)


def test_the_plausible_power_range_is_the_configured_one():
    wide = PowerRange(min_w=-5, max_w=200_000, max_wh_total=1e12)
    event = parse_event("n", b'{"boot":1,"seq":1,"type":"power","w":150000,"wh_total":5e11}', wide)
    assert event.data == {"w": 150000.0, "wh_total": 5e11}
    assert parse_event("n", b'{"boot":1,"seq":2,"type":"power","w":-0.4}', wide).data["w"] == -0.4


def test_oversize_payload_is_rejected_before_parsing():
    payload = b'{"boot":1,"seq":1,"type":"fault","code":"x","msg":"' + b"a" * 5000 + b'"}'
    with pytest.raises(ContractError, match="over the 4096 limit"):
        parse_event("node", payload)


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("peershop/dev/laser-node/event", ("laser-node", "event")),
        ("peershop/dev/0/status", ("0", "status")),
    ],
)
def test_topics_name_the_device(topic, expected):
    assert parse_topic(topic) == expected


@pytest.mark.parametrize(
    "topic",
    [
        "peershop/dev/Laser/event",
        "peershop/dev/-lead/event",
        "peershop/dev/" + "a" * 64 + "/event",
        "peershop/dev/x/event/extra",
        "other/dev/x/event",
    ],
)
def test_bad_device_ids_and_topics_are_refused(topic):
    with pytest.raises(ContractError):
        parse_topic(topic)


def test_status_birth_and_will():
    birth = parse_status(
        "n", b'{"state":"online","boot":7,"fw":"1.4.2","kind":["reader","interlock","power"]}'
    )
    assert (birth.state, birth.boot, birth.fw, birth.kind) == (
        "online",
        7,
        "1.4.2",
        ("reader", "interlock", "power"),
    )
    will = parse_status("n", b'{"state":"offline","boot":7}')
    assert (will.state, will.boot) == ("offline", 7)
    with pytest.raises(ContractError, match="'boot' is missing"):
        parse_status("n", b'{"state":"online"}')
    with pytest.raises(ContractError, match="'state' must be"):
        parse_status("n", b'{"state":"sleepy","boot":1}')
    with pytest.raises(ContractError, match="NUL character"):
        parse_status("n", b'{"state":"online","boot":1,"fw":"1.0\\u0000"}')
    # an escaped backslash before "u0000" is no NUL
    assert parse_status("n", b'{"state":"online","boot":1,"fw":"\\\\u0000"}').fw == "\\u0000"


def test_a_birth_may_say_the_device_clock_v2():
    birth = parse_status("n", b'{"state":"online","boot":7,"ts":"2026-11-26T16:15:03.120Z"}')
    assert birth.device_ts == datetime(2026, 11, 26, 16, 15, 3, 120000, tzinfo=UTC)
    assert parse_status("n", b'{"state":"online","boot":7,"ts":1795709703}').device_ts == (
        datetime(2026, 11, 26, 16, 15, 3, tzinfo=UTC)
    )
    assert parse_status("n", b'{"state":"online","boot":7}').device_ts is None  # v1: no clock
    with pytest.raises(ContractError, match="'ts' is not ISO 8601"):
        parse_status("n", b'{"state":"online","boot":7,"ts":"yesterday"}')
    # a will is the broker's, set up at connect: a clock in it is not read
    assert parse_status("n", b'{"state":"offline","boot":7,"ts":"x"}').device_ts is None


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise_anything_but_a_contract_error(payload):
    try:
        event = parse_event("fuzz", payload)
    except ContractError as exc:
        assert str(exc)  # a reason a device builder can read in the dead letter
    else:
        assert event.device_id == "fuzz" and event.type in EVENT_TYPES


@given(
    st.integers(0, 2**40),
    st.integers(0, 2**40),
    st.sampled_from(["04A1B2C3", "04a1b2c3d4e5f6", "0102030405060708090A"]),
    st.booleans(),
)
def test_a_parsed_event_round_trips_through_its_wire_form(boot, seq, uid, replay):
    body = {"boot": boot, "seq": seq, "type": "badge", "uid": uid, "replay": replay}
    payload = json.dumps({**body, "ts": "2026-01-02T03:04:05.678Z"})
    ev = parse_event("d", payload.encode())
    assert parse_event("d", event_to_payload(ev)) == ev
