import math
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.current_sensor import CurrentSensor, RunningInput, rms_watts
from tests.devices_helpers import FakeClock, MockMCP3008, SineSource, mock_pins

APV = 30.0  # an SCT-013-030: 30 A per volt RMS
VOLTS = 230.0


def amplitude_for(watts: float, power_factor: float = 1.0) -> float:
    """Peak volts at the ADC for a load of ``watts`` at 230 V."""
    return watts / (APV * VOLTS * power_factor) * math.sqrt(2)


def burst(source: SineSource, seconds: float):
    samples, times = [], []
    end = source.now + seconds
    while source.now <= end:
        times.append(source.now)
        samples.append(source.sample())
    return samples, times


def test_known_load_reads_its_watts():
    samples, times = burst(SineSource(amplitude_for(1000)), 0.2)
    assert rms_watts(samples, times, amps_per_volt=APV) == pytest.approx(1000, rel=0.005)


def test_calibration_scales_with_voltage_and_power_factor():
    samples, times = burst(SineSource(amplitude_for(1000)), 0.2)
    watts = rms_watts(samples, times, amps_per_volt=APV, mains_voltage=120, power_factor=0.8)
    assert watts == pytest.approx(1000 * 120 / 230 * 0.8, rel=0.005)


def test_bias_midpoint_is_removed_whatever_it_is():
    for bias in (1.2, 1.65, 2.0):
        samples, times = burst(SineSource(amplitude_for(500), bias_v=bias), 0.1)
        assert rms_watts(samples, times, amps_per_volt=APV) == pytest.approx(500, rel=0.005)


def test_no_current_reads_near_zero():
    samples, times = burst(SineSource(0.0), 0.1)
    assert rms_watts(samples, times, amps_per_volt=APV) == pytest.approx(0, abs=1e-6)


def test_a_burst_shorter_than_a_cycle_is_refused():
    samples, times = burst(SineSource(0.1), 0.015)
    with pytest.raises(ValueError, match="cycle"):
        rms_watts(samples, times, amps_per_volt=APV)


@settings(max_examples=60, deadline=None)
@given(
    watts=st.floats(50, 3000),
    hz=st.sampled_from([50.0, 60.0]),
    cycles=st.floats(1.05, 6.0),
    phase=st.floats(0, 2 * math.pi),
    rate=st.floats(2000, 5000),
    jitter=st.floats(0, 0.3),
    seed=st.integers(0, 1000),
)
def test_bursts_that_end_mid_cycle_still_read_right(watts, hz, cycles, phase, rate, jitter, seed):
    # Without cutting to whole cycles, 1.5 cycles of a sine read up to ~20 % off.
    source = SineSource(
        amplitude_for(watts), hz=hz, phase=phase, rate=rate, jitter=jitter, seed=seed
    )
    samples, times = burst(source, cycles / hz)
    got = rms_watts(samples, times, amps_per_volt=APV, mains_hz=hz)
    assert got == pytest.approx(watts, rel=0.03)


def test_window_is_cut_at_whole_cycles_of_the_configured_mains():
    # 1.25 cycles of 60 Hz starting at a zero crossing: the extra quarter cycle is all
    # positive, so a window that keeps it takes a wrong bias and reads ~3 % low; cut at
    # one whole cycle it reads right.
    source = SineSource(amplitude_for(1000), hz=60.0)
    source.now = 0.0
    samples, times = burst(source, 1.25 / 60)
    assert rms_watts(samples, times, amps_per_volt=APV, mains_hz=60) == pytest.approx(
        1000, rel=0.01
    )
    whole_window = rms_watts(samples, times, amps_per_volt=APV, mains_hz=1 / (times[-1] - times[0]))
    assert whole_window < 980


# -- the sensor ------------------------------------------------------------------------------


class Load:
    """A sine source whose load can be changed between readings."""

    def __init__(self):
        self.source = SineSource(0.0, rate=2000)

    def set(self, watts):
        self.source.amplitude_v = amplitude_for(watts)


@pytest.fixture
def load():
    return Load()


@pytest.fixture
def sensor(load):
    sensor = CurrentSensor(
        amps_per_volt=APV,
        running_w=200,
        idle_w=50,
        burst=0.1,
        background=False,
        sample=load.source.sample,
        clock=load.source.clock,
    )
    sensor.events = []
    sensor.when_running = lambda: sensor.events.append("running")
    sensor.when_idle = lambda: sensor.events.append("idle")
    yield sensor
    sensor.close()


def test_running_and_idle_with_hysteresis(sensor, load):
    readings = []
    sensor.when_reading = readings.append
    for watts in (10, 150, 400, 120, 60, 30, 120):
        load.set(watts)
        sensor.read()
    assert readings == pytest.approx([10, 150, 400, 120, 60, 30, 120], rel=0.01)
    # 150 W is not enough to start; once running, 120 and 60 W stay running; below 50 idle.
    assert sensor.events == ["running", "idle"]
    assert not sensor.is_running
    assert sensor.watts == pytest.approx(120, rel=0.01)


def test_thresholds_are_checked_at_the_door():
    with pytest.raises(ValueError, match="idle_w"):
        CurrentSensor(amps_per_volt=APV, running_w=50, idle_w=100, sample=float, background=False)
    with pytest.raises(ValueError, match="mains_hz"):
        CurrentSensor(amps_per_volt=APV, mains_hz=55, sample=float, background=False)


def test_reads_through_an_mcp3008_on_spi():
    with mock_pins():
        adc = MockMCP3008()
        clock = FakeClock(0.0)
        channel = 2

        def tick():
            # The sensor reads the clock once per sample: move on by one 2 kHz step.
            now = clock.now
            clock.advance(1 / 2000)
            amplitude = amplitude_for(2000) / 3.3
            adc.values[channel] = 0.5 + amplitude * math.sin(2 * math.pi * 50 * now)
            return now

        sensor = CurrentSensor(channel, amps_per_volt=APV, burst=0.06, background=False, clock=tick)
        try:
            assert sensor.read() == pytest.approx(2000, rel=0.02)
            assert sensor.is_running
        finally:
            sensor.close()
            adc.close()


def test_background_thread_reports_running(load):
    sensor = CurrentSensor(
        amps_per_volt=APV, sample=load.source.sample, clock=load.source.clock, interval=0.01
    )
    started = threading.Event()
    sensor.when_running = started.set
    load.set(1000)
    try:
        assert started.wait(5)
    finally:
        sensor.close()


# -- the digital running input --------------------------------------------------------------


@pytest.fixture
def pins():
    with mock_pins() as factory:
        yield factory


def test_running_input_reports_settled_changes_only(pins):
    clock = FakeClock()
    spindle = RunningInput(23, settle_time=0.2, background=False, clock=clock)
    changes = []
    spindle.when_changed = changes.append
    pin = pins.pin(23)
    try:
        pin.drive_low()  # contact closes: running
        assert spindle.poll() is None  # not settled yet
        clock.advance(0.1)
        pin.drive_high()  # bounce
        pin.drive_low()
        clock.advance(0.15)
        assert spindle.poll() is None  # the bounce restarted the settle time
        clock.advance(0.1)
        assert spindle.poll() is True
        assert spindle.is_running
        pin.drive_high()
        clock.advance(0.05)
        pin.drive_low()  # a brief dip is not a stop
        clock.advance(1)
        assert spindle.poll() is None
        pin.drive_high()
        clock.advance(0.3)
        assert spindle.poll() is False
        assert changes == [True, False]
    finally:
        spindle.close()


def test_running_input_background_thread_reports(pins):
    spindle = RunningInput(23, settle_time=0.01)
    started = threading.Event()
    spindle.when_changed = lambda on: on and started.set()
    try:
        pins.pin(23).drive_low()
        assert started.wait(5)
        assert spindle.is_running
    finally:
        spindle.close()
