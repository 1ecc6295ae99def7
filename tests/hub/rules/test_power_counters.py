"""Energy from plugs that send their counter only now and then.

A Shelly plug sends full status reports (power and its Wh counter) and, in between,
``NotifyStatus`` updates with the power alone.  Between two counter readings the member's
energy is the counter's difference, however many power-only readings came between: the
step estimates of those readings are part of it, never added on top.
"""

from datetime import UTC, datetime, timedelta

import pytest

from hub.plugs.shelly import shelly_switch
from hub.rules.power import PowerMeter, PowerThresholds
from hub.rules.sessions import ToolRules, ToolSessionState

T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
LASER = PowerThresholds(off_w=5, busy_w=200)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def full(w: float, wh: float) -> bytes:
    return b'{"id":0,"output":true,"apower":%g,"aenergy":{"total":%g}}' % (w, wh)


def partial(w: float) -> dict:
    return {"method": "NotifyStatus", "params": {"ts": 1.0, "switch:0": {"id": 0, "apower": w}}}


def metered(readings) -> float:
    """The Wh a meter accounts for ``(minutes, payload)`` plug readings."""
    m = PowerMeter(LASER)
    total = 0.0
    for minutes, payload in readings:
        reading = shelly_switch(payload)
        out = m.sample(at(minutes), reading.w, reading.wh_total)
        total += out.segment.wh if out.segment else 0.0
    return total


def test_power_only_updates_between_two_counter_readings_add_nothing_on_top():
    readings = [
        (0, full(600, 1000)),
        (10, partial(600)),  # 100 Wh estimated since the counter
        (20, partial(600)),  # 100 Wh more
        (30, partial(600)),  # and 100 more
        (60, full(0, 1600)),  # the counter: 600 Wh in the hour
    ]
    assert metered(readings) == pytest.approx(600.0)


def test_the_counter_wins_over_estimates_that_were_too_low():
    readings = [(0, full(100, 0)), (30, partial(100)), (60, full(0, 900))]
    assert metered(readings) == pytest.approx(900.0)


def test_a_session_on_a_plug_mixing_readings_is_billed_the_counter():
    laser = ToolSessionState("laser-1", ToolRules(policy="tap", off_w=5, busy_w=200))
    laser.start("ada", at(0))
    laser.power(800.0, at(0), wh_total=5000.0)
    laser.power(800.0, at(15))  # NotifyStatus: power only
    laser.power(800.0, at(30))
    laser.power(800.0, at(45))
    laser.power(10.0, at(60), wh_total=5750.0)
    (ended,) = laser.tap_out("ada", at(60))[:1]
    assert (ended.busy_s, ended.wh) == (3600.0, 750.0)


def test_after_a_counter_the_estimates_start_again_from_zero():
    readings = [
        (0, full(600, 0)),
        (30, partial(600)),  # 300 Wh estimated
        (60, full(600, 600)),  # counter: 600 in total, so 300 more
        (90, partial(600)),  # 300 Wh estimated since the new counter reading
        (120, full(0, 1200)),  # 600 more by the counter: 300 of them already estimated
    ]
    assert metered(readings) == pytest.approx(1200.0)


def test_a_session_boundary_between_counter_readings_is_not_counted_twice():
    m = PowerMeter(LASER)
    m.sample(at(0), 600.0, wh_total=0.0)
    first = m.advance(at(20)).wh  # one member's session ends: 200 Wh estimated
    second = m.sample(at(40), 600.0).segment.wh  # power only: 200 Wh more
    third = m.sample(at(60), 0.0, wh_total=600.0).segment.wh
    assert (first, second, third) == pytest.approx((200.0, 200.0, 200.0))


def test_a_plug_without_any_counter_is_estimated_from_its_power():
    readings = [(0, partial(1200)), (30, partial(0)), (60, partial(0))]
    assert metered(readings) == pytest.approx(600.0)


# --- levels at their edges ------------------------------------------------------------

BANDED = PowerThresholds(off_w=5, busy_w=200, hysteresis_w=20)


def test_a_first_reading_inside_the_off_band_counts_as_off():
    m = PowerMeter(BANDED)
    assert m.sample(at(0), 6.0).level == "off"  # a tool starts off: 6 W does not leave it


def test_a_tool_that_went_away_starts_again_from_off_at_zero_watts():
    m = PowerMeter(BANDED)
    m.sample(at(0), 800.0)
    m.forget_reading()
    assert (m.level, m.w) == ("off", 0.0)
    assert m.advance(at(1)).wh == 0.0  # no reading while it was away: nothing drawn
    assert m.sample(at(2), 24.0).level == "off"  # inside the band above off: still off


def test_a_late_reading_reports_the_level_and_power_that_still_hold():
    m = PowerMeter(BANDED)
    m.sample(at(10), 300.0)
    out = m.sample(at(5), 0.0)
    assert (out.segment, out.level, out.w, out.note) == (None, "busy", 300.0, "late")


def test_zero_and_small_power_are_not_negative():
    m = PowerMeter(BANDED)
    assert m.sample(at(0), 0.0).note is None
    assert (m.sample(at(1), 0.5).note, m.w) == (None, 0.5)
    out = m.sample(at(2), -0.5)
    assert (out.note, out.w) == ("negative_power", 0.0)


def test_off_and_busy_thresholds_may_be_equal_but_not_crossed():
    assert PowerThresholds(off_w=50, busy_w=50).busy_w == 50
    with pytest.raises(ValueError) as caught:
        PowerThresholds(off_w=60, busy_w=50)
    assert str(caught.value) == "off_w (60) must not be above busy_w (50)"
    with pytest.raises(ValueError) as caught:
        PowerThresholds(hysteresis_w=-1)
    assert str(caught.value) == "hysteresis_w must be a finite number >= 0, got -1"


def test_two_session_boundaries_between_counter_readings_are_not_counted_twice():
    m = PowerMeter(LASER)
    m.sample(at(0), 600.0, wh_total=0.0)
    first = m.advance(at(20)).wh  # ada's session ends: 200 Wh estimated
    second = m.advance(at(40)).wh  # bob's ends too: 200 more
    third = m.sample(at(60), 0.0, wh_total=500.0).segment.wh  # the counter: 500 in all
    assert (first, second, third) == pytest.approx((200.0, 200.0, 100.0))
