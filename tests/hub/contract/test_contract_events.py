# ruff: noqa: E501  (one case a line: the tables read better than wrapped)
"""Every event type a device may send, with its fields as the hub reads them, the limits
of each field, and the reason a builder gets when one is wrong."""

import json

import pytest

from hub.contract.messages import (
    PowerRange,
    event_to_payload,
    format_timestamp,
    parse_event,
    parse_status,
    parse_topic,
)
from hub.errors import ContractError
from hub.plugs import plug_ref_problem


def event(**fields) -> bytes:
    return json.dumps({"boot": 3, "seq": 7, **fields}).encode()


def refused(payload: bytes, power: PowerRange | None = None) -> str:
    with pytest.raises(ContractError) as caught:
        if power is None:
            parse_event("laser-node", payload)
        else:
            parse_event("laser-node", payload, power)
    return str(caught.value)


@pytest.mark.parametrize(
    ("fields", "data"),
    [
        ({"type": "badge", "uid": "04a1b2c3"}, {"uid": "04A1B2C3"}),
        ({"type": "badge_removed", "uid": " 04a1b2c3 "}, {"uid": "04A1B2C3"}),
        ({"type": "power", "w": 812}, {"w": 812.0}),
        ({"type": "power", "w": 0, "wh_total": 0}, {"w": 0.0, "wh_total": 0.0}),
        ({"type": "power", "w": 5.5, "wh_total": 0.5}, {"w": 5.5, "wh_total": 0.5}),
        ({"type": "running", "on": True}, {"on": True}),
        ({"type": "running", "on": False}, {"on": False}),
        ({"type": "button", "name": "done"}, {"name": "done"}),
        ({"type": "button", "name": "x" * 64}, {"name": "x" * 64}),
        (
            {"type": "consume", "item": "PLA", "qty": 12.5, "unit": "g"},
            {"item": "PLA", "qty": 12.5, "unit": "g"},
        ),
        (
            {"type": "consume", "item": "i" * 100, "qty": 0.001, "unit": "u" * 20},
            {"item": "i" * 100, "qty": 0.001, "unit": "u" * 20},
        ),
        ({"type": "fault", "code": "E12"}, {"code": "E12"}),
        ({"type": "fault", "code": 0, "msg": "lid open"}, {"code": 0, "msg": "lid open"}),
        ({"type": "fault", "code": 7, "msg": "m" * 500}, {"code": 7, "msg": "m" * 500}),
    ],
)
def test_each_event_type_carries_its_own_fields(fields, data):
    ev = parse_event("laser-node", event(**fields))
    assert (ev.device_id, ev.boot, ev.seq, ev.type, ev.data) == (
        "laser-node",
        3,
        7,
        fields["type"],
        data,
    )
    assert (ev.device_ts, ev.replay) == (None, False)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"type": "badge_removed"}, "field 'uid' must be a hex string, got null"),
        ({"type": "power", "w": 5, "wh_total": -1}, "field 'wh_total' must not be negative, got -1.0"),
        ({"type": "power", "w": 5, "wh_total": "1"}, "field 'wh_total' must be a number, got \"1\""),
        ({"type": "running"}, "field 'on' must be true or false, got null"),
        ({"type": "running", "on": 1}, "field 'on' must be true or false, got 1"),
        ({"type": "running", "on": "true"}, "field 'on' must be true or false, got \"true\""),
        ({"type": "button"}, "field 'name' is missing"),
        ({"type": "button", "name": " "}, "field 'name' must not be empty"),
        ({"type": "button", "name": 5}, "field 'name' must be a string, got 5"),
        ({"type": "button", "name": "x" * 65}, "field 'name' is longer than 64 characters"),
        ({"type": "consume", "item": "PLA", "unit": "g"}, "field 'qty' is missing"),
        ({"type": "consume", "item": "PLA", "qty": 0, "unit": "g"}, "field 'qty' must be positive, got 0.0"),
        ({"type": "consume", "item": "PLA", "qty": 1, "unit": "g" * 21}, "field 'unit' is longer than 20 characters"),
        ({"type": "consume", "item": "i" * 101, "qty": 1, "unit": "g"}, "field 'item' is longer than 100 characters"),
        ({"type": "consume", "qty": 1, "unit": "g"}, "field 'item' is missing"),
        ({"type": "consume", "item": "PLA", "qty": 1}, "field 'unit' is missing"),
        ({"type": "fault"}, "field 'code' must be a string or integer, got null"),
        ({"type": "fault", "code": ""}, "field 'code' must be a string or integer, got \"\""),
        ({"type": "fault", "code": True}, "field 'code' must be a string or integer, got true"),
        ({"type": "fault", "code": 1.5}, "field 'code' must be a string or integer, got 1.5"),
        ({"type": "fault", "code": 1, "msg": "m" * 501}, "field 'msg' is longer than 500 characters"),
        ({"type": "fault", "code": 1, "msg": 5}, "field 'msg' must be a string, got 5"),
        ({"type": "teleport"}, "unknown event type 'teleport'"),
        ({"type": 5}, "field 'type' must be a string, got 5"),
        ({"type": "button", "name": "done", "replay": "yes"}, "field 'replay' must be true or false, got \"yes\""),
        ({"type": "button", "name": "done", "ts": True}, "field 'ts' must be ISO 8601 or Unix seconds, got true"),
        ({"type": "button", "name": "done", "ts": -1}, "field 'ts' is out of range: -1"),
        ({"type": "button", "name": "done", "ts": 253402300800}, "field 'ts' is out of range: 253402300800"),
        ({"type": "button", "name": "done", "ts": "noon"}, "field 'ts' is not ISO 8601: \"noon\""),
        ({"type": "button", "name": "done", "ts": [1]}, "field 'ts' must be ISO 8601 or Unix seconds, got [1]"),
        ({"type": "button", "name": "x" * 70}, "field 'name' is longer than 64 characters"),
    ],
)  # fmt: skip
def test_each_wrong_field_is_refused_with_a_reason(fields, reason):
    assert refused(event(**fields)) == reason


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"type": "power", "w": 1, "boot": -1}, "field 'boot' must be between 0 and 2^63-1, got -1"),
        ({"type": "power", "w": 1, "seq": 2**63}, f"field 'seq' must be between 0 and 2^63-1, got {2**63}"),
        ({"type": "power", "w": 1, "seq": "7"}, "field 'seq' must be an integer, got \"7\""),
        ({"type": "power", "w": 1, "seq": True}, "field 'seq' must be an integer, got true"),
        ({"type": "power", "w": 1, "seq": None}, "field 'seq' is missing"),
    ],
)  # fmt: skip
def test_boot_and_seq_are_non_negative_64_bit_integers(fields, reason):
    assert refused(json.dumps({"boot": 3, "seq": 7, **fields}).encode()) == reason


def test_the_largest_boot_and_seq_are_accepted():
    ev = parse_event(
        "n", json.dumps({"boot": 0, "seq": 2**63 - 1, "type": "running", "on": True}).encode()
    )
    assert (ev.boot, ev.seq) == (0, 2**63 - 1)


def test_a_long_value_is_shown_cut_in_the_reason():
    reason = refused(event(type="running", on="x" * 100))
    assert reason == "field 'on' must be true or false, got " + json.dumps("x" * 100)[:37] + "..."


def test_a_counter_reading_is_checked_against_the_configured_range():
    tight = PowerRange(max_w=1000.0, max_wh_total=50.0)
    assert refused(event(type="power", w=5, wh_total=51), tight) == (
        "field 'wh_total' is 51 Wh, outside the plausible 0 to 50 Wh (ingest.max_wh_total)"
    )
    assert parse_event("n", event(type="power", w=1000, wh_total=50), tight).data == {
        "w": 1000.0,
        "wh_total": 50.0,
    }


def test_times_with_an_offset_or_lowercase_z_are_utc():
    ev = parse_event("n", event(type="running", on=True, ts="2026-11-26T11:00:00+01:00"))
    assert ev.device_ts.isoformat() == "2026-11-26T10:00:00+00:00"
    ev = parse_event("n", event(type="running", on=True, ts="2026-11-26T10:00:00z"))
    assert ev.device_ts.isoformat() == "2026-11-26T10:00:00+00:00"
    ev = parse_event("n", event(type="running", on=True, ts="2026-11-26T10:00:00"))
    assert ev.device_ts.isoformat() == "2026-11-26T10:00:00+00:00"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"state":"online","boot":1,"kind":[""]}', "field 'kind' must be a list of strings, got [\"\"]"),
        (b'{"state":"online","boot":1,"kind":5}', "field 'kind' must be a list of strings, got 5"),
        (b'{"state":"sleeping"}', "field 'state' must be 'online' or 'offline', got \"sleeping\""),
        (b'{"state":"online"}', "field 'boot' is missing"),
        (b'{"state":"online","boot":1,"fw":"' + b"v" * 65 + b'"}', "field 'fw' is longer than 64 characters"),
    ],
)  # fmt: skip
def test_a_wrong_birth_is_refused_with_a_reason(payload, reason):
    with pytest.raises(ContractError) as caught:
        parse_status("n", payload)
    assert str(caught.value) == reason


def test_a_birth_may_name_one_kind_and_a_will_needs_no_boot():
    birth = parse_status("n", b'{"state":"online","boot":2,"kind":"reader","fw":"1.2"}')
    assert (birth.kind, birth.fw, birth.boot) == (("reader",), "1.2", 2)
    will = parse_status("n", b'{"state":"offline","ts":"2026-11-26T10:00:00Z"}')
    assert (will.boot, will.device_ts, will.kind) == (None, None, ())


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("peershop/devx/event", "topic 'peershop/devx/event' is not under peershop/dev/"),
        ("peershop/dev/node", "topic 'peershop/dev/node' is not peershop/dev/{id}/{leaf}"),
        ("peershop/dev/node/a/b", "topic 'peershop/dev/node/a/b' is not peershop/dev/{id}/{leaf}"),
        ("peershop/dev/Node/event", "device id 'Node' does not match [a-z0-9][a-z0-9-]{0,62}"),
    ],
)
def test_a_wrong_topic_is_refused_with_a_reason(topic, reason):
    with pytest.raises(ContractError) as caught:
        parse_topic(topic)
    assert str(caught.value) == reason


def test_a_nul_character_is_refused_in_a_key_as_in_a_value():
    payload = b'{"boot":3,"seq":7,"type":"button","name":"done","x\\u0000":1}'
    assert refused(payload) == "payload holds a NUL character (\\u0000), which no field may"


def test_a_value_of_exactly_forty_characters_is_shown_whole():
    forty = "x" * 38  # 40 with its quotes
    assert refused(event(type="running", on=forty)) == (
        f"field 'on' must be true or false, got {json.dumps(forty)}"
    )
    longer = "x" * 39
    assert refused(event(type="running", on=longer)) == (
        f"field 'on' must be true or false, got {json.dumps(longer)[:37]}..."
    )


def test_a_status_names_its_device():
    birth = parse_status("laser-node", b'{"state":"online","boot":2}')
    assert (birth.device_id, birth.fw) == ("laser-node", None)


def test_a_tasmota_topic_starting_with_a_dollar_is_refused_by_its_name():
    assert plug_ref_problem("tasmota", "$x").startswith("Tasmota topic '$x' is a broker topic ($)")


def test_the_edges_of_a_device_clock_and_of_a_payload():
    epoch = parse_event("n", event(type="running", on=True, ts=0))
    assert epoch.device_ts.isoformat() == "1970-01-01T00:00:00+00:00"
    last = parse_event("n", event(type="running", on=True, ts=253402300799))
    assert last.device_ts.year == 9999
    padded = event(type="running", on=True, pad="")
    exact = padded[:-2] + b" " * (4096 - len(padded)) + padded[-2:]
    assert len(exact) == 4096
    assert parse_event("n", exact).data == {"on": True}
    assert refused(b" " + exact) == "payload is 4097 bytes, over the 4096 limit"
    assert refused(b"[" * 5000 + b"]" * 5000) == "payload is 10000 bytes, over the 4096 limit"


def test_a_wrong_uid_is_shown_in_the_reason():
    assert refused(event(type="badge", uid=5)) == "field 'uid' must be a hex string, got 5"
    assert refused(event(type="badge", uid="04A1")) == (
        "field 'uid' must be 4 to 10 bytes of hex, got \"04A1\""
    )


def test_a_device_clock_is_written_in_utc_to_the_millisecond():
    ev = parse_event("n", event(type="running", on=True, ts="2026-11-26T11:00:00.5+01:00"))
    assert format_timestamp(ev.device_ts) == "2026-11-26T10:00:00.500Z"
    assert event_to_payload(ev) == (
        b'{"boot":3,"seq":7,"type":"running","ts":"2026-11-26T10:00:00.500Z","on":true}'
    )
