"""Is the tool running? A current transformer on an MCP3008, or a digital input.

:class:`CurrentSensor` samples a clamp-on current transformer (CT) through an MCP3008 ADC:
the CT's burden resistor gives a voltage proportional to the current, riding on a bias
midpoint (half of 3.3 V) so the ADC sees both half-waves. A burst of samples becomes watts
with :func:`rms_watts`; a running/idle state with hysteresis follows.

:class:`RunningInput` is for tools that already say whether they run (a current switch,
a spindle relay's spare contact, an opto-isolated 24 V signal).

>>> import math
>>> times = [i / 2000 for i in range(401)]                    # 0.2 s at 2 kHz
>>> volts = [1.65 + 0.1 * math.sin(2 * math.pi * 50 * t) for t in times]
>>> round(rms_watts(volts, times, amps_per_volt=30, mains_voltage=230))
488
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence

from gpiozero import MCP3008, DigitalInputDevice

log = logging.getLogger(__name__)

Clock = Callable[[], float]


def rms_watts(
    samples: Sequence[float],
    times: Sequence[float],
    *,
    amps_per_volt: float,
    mains_voltage: float = 230.0,
    power_factor: float = 1.0,
    mains_hz: float = 50.0,
) -> float:
    """Real power from a burst of CT voltage samples taken at ``times`` (seconds).

    Only the first whole number of mains cycles is used, so a burst that ends mid-cycle
    does not bias the result; each sample is weighted by the time until the next one, so
    uneven sampling (a Pi's SPI reads jitter) does not either. The bias midpoint is the
    window's mean, so a drifting divider needs no calibration.

    ``amps_per_volt`` is the CT's ratio over its burden (an SCT-013-030 gives 30 A per volt
    RMS), so watts = RMS volts * ``amps_per_volt`` * ``mains_voltage`` * ``power_factor``.
    Raises :class:`ValueError` when the burst spans less than one mains cycle.
    """
    if len(samples) != len(times):
        raise ValueError("samples and times differ in length")
    if mains_hz <= 0:
        raise ValueError("mains_hz must be positive")
    period = 1.0 / mains_hz
    if len(times) < 2 or times[-1] - times[0] < period:
        raise ValueError("a burst must span at least one mains cycle")
    cycles = math.floor((times[-1] - times[0]) / period + 1e-9)
    end = times[0] + cycles * period
    weights: list[float] = []
    values: list[float] = []
    for i in range(len(times) - 1):
        if times[i] >= end:
            break
        weight = min(times[i + 1], end) - times[i]
        if weight > 0:
            weights.append(weight)
            values.append(samples[i])
    total = sum(weights)
    bias = sum(w * v for w, v in zip(weights, values, strict=True)) / total
    mean_square = sum(w * (v - bias) ** 2 for w, v in zip(weights, values, strict=True)) / total
    return math.sqrt(mean_square) * amps_per_volt * mains_voltage * power_factor


class CurrentSensor:
    """A current transformer on an MCP3008 channel, read as watts with running/idle states.

    :param channel: MCP3008 input (0-7); the chip is on SPI0 CE0 unless ``spi_args`` say
        otherwise (``port``, ``device``, or ``clock_pin``/``mosi_pin``/... for software SPI).
    :param amps_per_volt: calibration: primary amps per volt RMS across the burden.
    :param mains_voltage: nominal mains voltage (230 in Europe, 120 in North America).
    :param power_factor: 1 for resistive loads; below 1 for motors if you measured it.
    :param mains_hz: 50 or 60; sets the whole-cycle window.
    :param running_w: the tool becomes running at or above this many watts...
    :param idle_w: ...and idle again below this (hysteresis: ``idle_w <= running_w``).
    :param burst: seconds of samples per reading (a few mains cycles).
    :param interval: seconds between readings in the background thread.
    :param vref: the MCP3008's reference voltage.
    :param background: read every ``interval`` in a daemon thread; with ``False`` call
        :meth:`read` yourself.
    :param sample: a callable returning the ADC pin's voltage now; replaces the MCP3008
        (tests feed synthetic waves). :param clock: seconds, monotonic.

    Example::

        ct = CurrentSensor(0, amps_per_volt=30, running_w=200, idle_w=50)
        ct.when_running = lambda: print("spindle on")
        ct.when_idle = lambda: print("spindle off")
        ct.when_reading = lambda w: print(f"{w:.0f} W")
    """

    def __init__(
        self,
        channel: int = 0,
        *,
        amps_per_volt: float,
        mains_voltage: float = 230.0,
        power_factor: float = 1.0,
        mains_hz: float = 50.0,
        running_w: float = 100.0,
        idle_w: float = 50.0,
        burst: float = 0.2,
        interval: float = 1.0,
        vref: float = 3.3,
        background: bool = True,
        sample: Callable[[], float] | None = None,
        clock: Clock = time.monotonic,
        **spi_args,
    ) -> None:
        if mains_hz not in (50, 60):
            raise ValueError(f"mains_hz must be 50 or 60, got {mains_hz}")
        if not 0 <= idle_w <= running_w:
            raise ValueError(f"need 0 <= idle_w <= running_w, got {idle_w} and {running_w}")
        if burst < 1.0 / mains_hz:
            raise ValueError(f"burst must cover at least one mains cycle, got {burst} s")
        if not 0 < power_factor <= 1:
            raise ValueError(f"power_factor must be in (0, 1], got {power_factor}")
        self.amps_per_volt = amps_per_volt
        self.mains_voltage = mains_voltage
        self.power_factor = power_factor
        self.mains_hz = mains_hz
        self.running_w = running_w
        self.idle_w = idle_w
        self.burst = burst
        self.interval = interval
        #: Called with no arguments when the tool starts running / goes idle.
        self.when_running: Callable[[], object] | None = None
        self.when_idle: Callable[[], object] | None = None
        #: Called with the watts of every reading.
        self.when_reading: Callable[[float], object] | None = None
        self._clock = clock
        self._adc: MCP3008 | None = None
        if sample is None:
            self._adc = MCP3008(channel, max_voltage=vref, **spi_args)
            adc = self._adc
            sample = lambda: adc.value * vref  # noqa: E731
        self._sample = sample
        self._watts: float | None = None
        self._running = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._run, name="CurrentSensor", daemon=True)
            self._thread.start()

    @property
    def watts(self) -> float | None:
        """The last reading, ``None`` before the first."""
        return self._watts

    @property
    def is_running(self) -> bool:
        """Whether the tool draws power, with hysteresis between ``idle_w`` and ``running_w``."""
        return self._running

    def read(self) -> float:
        """Sample one burst, update :attr:`is_running`, fire callbacks; return the watts."""
        times: list[float] = []
        samples: list[float] = []
        start = self._clock()
        now = start
        # One sample past the burst closes the last interval of the window.
        while now - start <= self.burst:
            samples.append(self._sample())
            times.append(now)
            now = self._clock()
        watts = rms_watts(
            samples,
            times,
            amps_per_volt=self.amps_per_volt,
            mains_voltage=self.mains_voltage,
            power_factor=self.power_factor,
            mains_hz=self.mains_hz,
        )
        self._update(watts)
        return watts

    def _update(self, watts: float) -> None:
        self._watts = watts
        self._call(self.when_reading, watts)
        if not self._running and watts >= self.running_w:
            self._running = True
            self._call(self.when_running)
        elif self._running and watts < self.idle_w:
            self._running = False
            self._call(self.when_idle)

    def _call(self, callback, *args) -> None:
        if callback is None:
            return
        try:
            callback(*args)
        except Exception:
            log.exception("CurrentSensor callback failed")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.read()
            except Exception:
                log.exception("current sensor reading failed")
            self._stop.wait(self.interval)

    def close(self) -> None:
        """Stop the background thread and release the ADC. Safe to call twice."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        if self._adc is not None:
            self._adc.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class RunningInput:
    """A digital 'tool running' input, reported only once it has settled.

    A change counts once the input has held its new level for ``settle_time`` seconds, so
    contact bounce and a motor's brief dips do not make a storm of ``running`` events.

    :param pin: GPIO (BCM number by default).
    :param pull_up: ``True`` for a contact to ground (input active when low), ``False``
        for an input driven high when running, ``None`` for a driven input; then
        ``active_state`` says which level means running.
    :param settle_time: seconds a new level must hold before it counts.
    :param background: confirm changes from a daemon thread; with ``False`` call
        :meth:`poll` yourself. :param clock: seconds, monotonic.

    Example::

        spindle = RunningInput(23)
        spindle.when_changed = lambda on: print("running" if on else "stopped")
    """

    def __init__(
        self,
        pin: int | str,
        *,
        pull_up: bool | None = True,
        active_state: bool | None = None,
        settle_time: float = 0.2,
        background: bool = True,
        clock: Clock = time.monotonic,
        pin_factory=None,
    ) -> None:
        self._input = DigitalInputDevice(
            pin, pull_up=pull_up, active_state=active_state, pin_factory=pin_factory
        )
        self.settle_time = settle_time
        #: Called with ``True`` when the tool starts running, ``False`` when it stops.
        self.when_changed: Callable[[bool], object] | None = None
        self._clock = clock
        self._lock = threading.Lock()
        self._reported = bool(self._input.is_active)
        self._level = self._reported
        self._since = clock()
        self._edge = threading.Event()
        self._stop = threading.Event()
        self._input.when_activated = lambda: self._changed(True)
        self._input.when_deactivated = lambda: self._changed(False)
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._run, name="RunningInput", daemon=True)
            self._thread.start()

    @property
    def is_running(self) -> bool:
        """The settled state: what was last reported."""
        return self._reported

    def _changed(self, level: bool) -> None:
        with self._lock:
            self._level = level
            self._since = self._clock()
        self._edge.set()

    def poll(self) -> bool | None:
        """Report the input's level if it has held for ``settle_time``; returns the change."""
        with self._lock:
            if self._level == self._reported or self._clock() - self._since < self.settle_time:
                return None
            self._reported = self._level
        if self.when_changed is not None:
            try:
                self.when_changed(self._reported)
            except Exception:
                log.exception("RunningInput callback failed")
        return self._reported

    def _run(self) -> None:
        while not self._stop.is_set():
            self._edge.wait()
            self._edge.clear()
            # Wait out the settle time; a newer edge restarts the wait.
            while not self._stop.is_set() and self._edge.wait(self.settle_time):
                self._edge.clear()
            if not self._stop.is_set():
                self.poll()

    def close(self) -> None:
        """Stop the background thread and release the pin."""
        self._stop.set()
        self._edge.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        self._input.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
