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
