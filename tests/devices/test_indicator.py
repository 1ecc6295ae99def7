import pytest

from devices.indicator import Indicator
from tests.devices_helpers import mock_pins, pin_levels
from tests.helpers import wait_for

LED_PIN, BUZZER_PIN = 22, 24
RGB_PINS = (5, 6, 13)
SCALE = 0.002  # every pattern 500 times faster


@pytest.fixture
def pins():
    with mock_pins() as factory:
        yield factory


@pytest.fixture
def ind(pins):
    indicator = Indicator(LED_PIN, buzzer=BUZZER_PIN, time_scale=SCALE)
    yield indicator
    indicator.close()


def levels(pins, pin):
    return pin_levels(pins.pin(pin))


def test_grant_is_steady_light_and_one_beep(ind, pins):
    ind.grant()
    assert ind.wait(5)
    assert levels(pins, LED_PIN) == [False, True]
    assert levels(pins, BUZZER_PIN) == [False, True, False]
    assert ind.state == "grant"


def test_deny_blinks_and_beeps_three_times_then_shows_the_state_before(ind, pins):
    ind.grant()
    assert ind.wait(5)
    pins.pin(LED_PIN).clear_states()
    pins.pin(BUZZER_PIN).clear_states()
    ind.deny()
    assert ind.wait(5)
    assert levels(pins, LED_PIN) == [True, False, True, False, True, False, True, False, True]
    assert levels(pins, BUZZER_PIN) == [False, True, False, True, False, True, False]
    assert ind.state == "grant"


def test_offline_blinks_slowly_and_silently(ind, pins):
    ind.offline()
    assert wait_for(lambda: len(pins.pin(LED_PIN).states) >= 5)
    led = pins.pin(LED_PIN).states
    assert [s.state for s in led[:5]] == [False, True, False, True, False]
    assert levels(pins, BUZZER_PIN) == [False]


def test_locked_flashes_briefly_and_beeps_long(pins):
    with Indicator(LED_PIN, buzzer=BUZZER_PIN, time_scale=0.02) as ind:  # 2 ms / 18 ms
        ind.locked()
        assert ind.wait(5)
        assert wait_for(lambda: len(pins.pin(LED_PIN).states) >= 5)
        states = pins.pin(LED_PIN).states
        # Each timestamp is the time spent in the level before: short lit, long dark.
        lit = [s.timestamp for s in states[2:5:2]]
        dark = [s.timestamp for s in states[3:5:2]]
        assert min(dark) > max(lit)
        assert levels(pins, BUZZER_PIN) == [False, True, False]


def test_a_new_state_cuts_a_pattern_short(ind, pins):
    slow = Indicator(LED_PIN + 1, buzzer=BUZZER_PIN + 1, time_scale=10)  # 1 s beeps
    try:
        slow.deny()
        slow.ready()  # returns at once, cancelling the 6 s deny
        assert slow.wait(0)
        assert not pins.pin(LED_PIN + 1).state
        assert not pins.pin(BUZZER_PIN + 1).state
        assert slow.state == "ready"
    finally:
        slow.close()


def test_rgb_led_shows_colours(pins):
    with Indicator(rgb=RGB_PINS, time_scale=SCALE) as ind:
        red, green, blue = (pins.pin(p) for p in RGB_PINS)
        ind.grant()
        assert (red.state, green.state, blue.state) == (0, 1, 0)
        ind.deny()
        assert ind.wait(5)
        assert pin_levels(red) == [False, True, False, True, False, True, False]
        assert (red.state, green.state, blue.state) == (0, 1, 0)  # back to granted
        ind.offline()
        assert wait_for(lambda: red.state and green.state)  # yellow
        assert not blue.state
    assert not any(p.state for p in (red, green, blue))


def test_close_leaves_everything_dark_and_silent(pins):
    ind = Indicator(LED_PIN, buzzer=BUZZER_PIN, time_scale=10)
    ind.locked()  # LED on, 10 s beep under way
    ind.close()
    assert not pins.pin(LED_PIN).state
    assert not pins.pin(BUZZER_PIN).state
