from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.errors import ContractError
from hub.plugs.base import PlugReading
from hub.plugs.shelly import shelly_online, shelly_switch
from hub.plugs.tasmota import tasmota_online, tasmota_sensor
from hub.rules.power import (
    PowerMeter,
    PowerThresholds,
    Segment,
    classify,
)

T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
LASER = PowerThresholds(off_w=5, busy_w=200, hysteresis_w=20)
_none = Segment(T0, T0, "off", 0.0, 0.0)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("previous", "w", "level"),
    [
        ("off", 4.99, "off"),
        ("off", 5.0, "off"),  # inside the band above off_w: stays off
        ("off", 24.99, "off"),
        ("off", 25.0, "idle"),  # off_w + band: leaves off
        ("off", 200.0, "busy"),  # straight to busy
        ("idle", 5.0, "idle"),
        ("idle", 4.99, "off"),  # off is entered exactly below off_w
        ("idle", 199.99, "idle"),
        ("idle", 200.0, "busy"),  # busy is entered exactly at busy_w
        ("busy", 180.0, "busy"),  # busy_w - band: still busy
        ("busy", 179.99, "idle"),  # below busy_w - band: leaves busy
        ("busy", 1.0, "off"),
    ],
)
def test_hysteresis_edges(previous, w, level):
    assert classify(w, previous, LASER) == level


def test_without_hysteresis_the_contract_thresholds_hold_both_ways():
    t = PowerThresholds(off_w=5, busy_w=200)
    assert classify(199.9, "busy", t) == "idle"
    assert classify(5.0, "off", t) == "idle"


@pytest.mark.parametrize(
    "kwargs",
    [{"off_w": 300, "busy_w": 200}, {"off_w": -1}, {"hysteresis_w": -2}, {"busy_w": float("nan")}],
)
def test_bad_thresholds_are_refused(kwargs):
    with pytest.raises(ValueError):
        PowerThresholds(**kwargs)


def test_step_integration_holds_each_sample_until_the_next():
    m = PowerMeter(LASER)
    assert m.sample(at(0), 100.0).segment is None  # the first sample only sets the level
    seg = m.sample(at(1800), 1000.0).segment
    assert (seg.level, seg.seconds, seg.wh) == ("idle", 1800.0, 50.0)
    seg = m.sample(at(3600), 0.0).segment
    assert (seg.level, seg.w, seg.wh) == ("busy", 1000.0, 500.0)


def test_energy_comes_from_the_counter_when_there_is_one():
    m = PowerMeter(LASER)
    m.sample(at(0), 800.0, wh_total=1000.0)
    # the step estimate would say 800 Wh; the counter says what was really used
    assert m.sample(at(3600), 10.0, wh_total=1650.0).segment.wh == 650.0


def test_a_lost_sample_loses_no_energy():
    readings = [(0, 50.0, 100.0), (600, 900.0, 108.0), (1200, 900.0, 258.0), (1800, 0, 408.0)]

    def total(stream):
        m = PowerMeter(LASER)
        return sum((m.sample(at(t), w, wh).segment or _none).wh for t, w, wh in stream)

    assert total(readings) == 308.0
    assert total([readings[0], readings[3]]) == 308.0  # the middle two never arrived


def test_a_counter_that_goes_down_is_a_reset_and_a_new_baseline():
    m = PowerMeter(LASER)
    m.sample(at(0), 360.0, wh_total=5000.0)
    seg = m.sample(at(600), 360.0, wh_total=2.0).segment  # the plug was reset
    assert seg.wh == pytest.approx(60.0)  # step estimate, never 2 - 5000
    assert m.sample(at(1200), 0.0, wh_total=62.0).segment.wh == 60.0  # counted from 2.0


def test_a_late_sample_is_ignored_and_loses_nothing():
    m = PowerMeter(LASER)
    m.sample(at(0), 500.0, wh_total=10.0)
    m.sample(at(100), 500.0, wh_total=30.0)
    out = m.sample(at(50), 3000.0, wh_total=20.0)
    assert (out.note, out.segment, out.level, m.w) == ("late", None, "busy", 500.0)
    assert m.sample(at(200), 0.0, wh_total=45.0).segment.wh == 15.0


def test_negative_power_counts_as_zero_with_a_note():
    m = PowerMeter(LASER)
    out = m.sample(at(0), -12.5)
    assert (out.note, out.w, out.level) == ("negative_power", 0.0, "off")
    assert m.sample(at(3600), 0.0).segment.wh == 0.0


def test_an_estimate_at_a_boundary_is_not_counted_twice_by_the_next_counter():
    m = PowerMeter(LASER)
    m.sample(at(0), 600.0, wh_total=0.0)
    first = m.advance(at(1800))  # a session ends half way: estimated 300 Wh
    second = m.sample(at(3600), 600.0, wh_total=600.0).segment
    assert first.wh + second.wh == 600.0
    assert m.advance(at(3600)) is None  # nothing new to account


samples = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=600, allow_nan=False),  # seconds since previous
        st.floats(min_value=-50, max_value=3000, allow_nan=False),  # w
        st.one_of(st.none(), st.floats(min_value=0, max_value=1e6, allow_nan=False)),
    ),
    max_size=40,
)


@given(samples)
def test_random_streams_never_give_negative_energy_or_time(stream):
    m = PowerMeter(LASER)
    t = T0
    m.sample(t, 0.0)
    total_s = 0.0
    for dt, w, wh in stream:
        t += timedelta(seconds=dt)
        seg = m.sample(t, w, wh).segment
        assert seg.wh >= 0 and seg.seconds >= 0
        total_s += seg.seconds
    assert total_s == pytest.approx((t - T0).total_seconds())


@given(st.lists(st.floats(min_value=0, max_value=5000, allow_nan=False), min_size=2, max_size=30))
def test_with_a_rising_counter_energy_is_exactly_the_counter_difference(increments):
    m = PowerMeter(LASER)
    counter = 0.0
    total = 0.0
    m.sample(at(0), 100.0, counter)
    for i, inc in enumerate(increments, start=1):
        counter += inc
        total += m.sample(at(60 * i), 100.0, counter).segment.wh
    assert total == pytest.approx(counter)


def test_tasmota_total_is_kwh_and_becomes_wh():
    reading = tasmota_sensor(
        b'{"Time":"2026-11-26T11:15:03","ENERGY":{"TotalStartTime":"2026-01-01T00:00:00",'
        b'"Total":12.5,"Yesterday":0.1,"Today":0.2,"Power":812,"Voltage":230}}'
    )
    assert reading == PlugReading(w=812.0, wh_total=12500.0)


def test_shelly_total_is_already_wh():
    status = b'{"id":0,"source":"init","output":true,"apower":812.4,"aenergy":{"total":12500.0}}'
    assert shelly_switch(status) == PlugReading(812.4, 12500.0, True)


def test_shelly_notify_status_is_a_partial_update():
    notify = {
        "src": "shellyplus1pm-abc",
        "method": "NotifyStatus",
        "params": {"ts": 1764151200.5, "switch:0": {"id": 0, "apower": 3.5}},
    }
    assert shelly_switch(notify) == PlugReading(3.5, None, None)
    other = {"method": "NotifyStatus", "params": {"ts": 1.0, "sys": {"uptime": 5}}}
    assert shelly_switch(other) == PlugReading(None, None, None)


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b'{"ENERGY":{"Power":NaN}}',
        b'{"ENERGY":{"Power":"800"}}',
        b'{"ENERGY":{}}',
        b'{"StatusSNS":{}}',
        b'{"ENERGY":{"Total":-1}}',
    ],
)
def test_bad_tasmota_payloads_are_contract_errors(payload):
    with pytest.raises(ContractError):
        tasmota_sensor(payload)


def test_bad_shelly_payloads_are_contract_errors():
    with pytest.raises(ContractError):
        shelly_switch(b'{"apower":Infinity}')
    with pytest.raises(ContractError):
        shelly_switch(b'{"aenergy":{"total":-5}}')


def test_plug_online_payloads():
    assert tasmota_online(b"Online") and not tasmota_online("Offline")
    assert shelly_online(b"true") and not shelly_online("false")
    with pytest.raises(ContractError):
        tasmota_online(b"online?")
    with pytest.raises(ContractError):
        shelly_online(b"1")
