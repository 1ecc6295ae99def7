import gc
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from devices.interlock import Interlock
from tests.devices_helpers import mock_pins, pin_levels

PIN = 5
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def pins():
    with mock_pins() as factory:
        yield factory


@pytest.fixture
def relay_pin(pins):
    return pins.pin(PIN)


def test_off_at_start_on_when_enabled_off_when_disabled(relay_pin):
    with Interlock(PIN) as lock:
        assert relay_pin.function == "output"
        assert not lock.is_enabled
        lock.enable()
        assert lock.is_enabled
        lock.disable()
        assert not lock.is_enabled
    assert pin_levels(relay_pin) == [False, True, False]


def test_active_low_board_is_held_high_while_off(relay_pin):
    with Interlock(PIN, active_high=False) as lock:
        assert relay_pin.state == 1  # relay released from the first moment
        lock.enable()
        assert relay_pin.state == 0
    assert relay_pin.state == 1  # close() released the relay before letting the pin go


def test_close_cuts_power_and_releases_the_pin(relay_pin):
    lock = Interlock(PIN)
    lock.enable()
    lock.close()
    lock.close()
    assert relay_pin.state == 0
    assert relay_pin.function == "input"
    assert lock.closed and not lock.is_enabled


def test_dropping_the_object_cuts_power(relay_pin):
    lock = Interlock(PIN)
    lock.enable()
    del lock
    gc.collect()
    assert relay_pin.state == 0


def test_busy_tool_is_cut_only_once_idle(relay_pin, caplog):
    busy = [True]
    lock = Interlock(PIN, no_cut_while_busy=lambda: busy[0])
    lock.enable()
    with caplog.at_level(logging.WARNING, logger="devices.interlock"):
        assert lock.disable() is False
    assert "busy" in caplog.text
    assert lock.is_enabled and lock.is_cut_pending
    lock.busy_changed()  # still busy
    assert lock.is_enabled
    busy[0] = False
    lock.busy_changed()
    assert not lock.is_enabled and not lock.is_cut_pending
    lock.close()


def test_busy_state_can_be_pushed_by_the_caller(relay_pin):
    lock = Interlock(PIN, no_cut_while_busy=lambda: True)
    lock.enable()
    lock.disable()
    lock.busy_changed(busy=True)
    assert lock.is_enabled
    lock.busy_changed(busy=False)
    assert not lock.is_enabled
    lock.close()


def test_force_and_enable_override_a_pending_cut(relay_pin):
    lock = Interlock(PIN, no_cut_while_busy=lambda: True)
    lock.enable()
    lock.disable()
    lock.enable()  # granted again while the cut waited: no cut later
    assert not lock.is_cut_pending
    lock.busy_changed(busy=False)
    assert lock.is_enabled
    assert lock.disable(force=True) is True
    assert not lock.is_enabled
    lock.close()


def test_a_failing_busy_check_does_not_keep_the_tool_powered(relay_pin):
    def broken():
        raise OSError("sensor gone")

    lock = Interlock(PIN, no_cut_while_busy=broken)
    lock.enable()
    assert lock.disable() is True
    assert not lock.is_enabled
    lock.close()


@pytest.mark.parametrize("active_high", [True, False])
def test_relay_is_off_after_the_program_crashes(active_high):
    # The program crashes with the tool enabled; a probe registered before the Interlock
    # runs after the Interlock's exit handler and reports the relay pin's last level.
    script = textwrap.dedent(
        f"""
        import atexit
        from gpiozero import Device
        from gpiozero.pins.mock import MockFactory
        from devices.interlock import Interlock

        Device.pin_factory = MockFactory()
        pin = Device.pin_factory.pin({PIN})
        atexit.register(lambda: print("relay pin", int(pin.state), flush=True))
        lock = Interlock({PIN}, active_high={active_high})
        lock.enable()
        print("enabled", int(pin.state), flush=True)
        raise RuntimeError("agent crashed")
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
    )
    assert "agent crashed" in done.stderr
    on, off = (1, 0) if active_high else (0, 1)
    assert done.stdout.splitlines() == [f"enabled {on}", f"relay pin {off}"]
