"""Shared helpers for the device driver tests: mock pins, a hand-moved clock, pty pairs."""

from __future__ import annotations

import contextlib
import math
import os
import random
from collections.abc import Iterator

from gpiozero import Device
from gpiozero.pins.mock import MockFactory, MockPin, MockSPIDevice


class FakeClock:
    """A monotonic clock that only moves when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


@contextlib.contextmanager
def mock_pins(pin_class: type[MockPin] | None = None) -> Iterator[MockFactory]:
    """Make gpiozero use a fresh MockFactory for the block, then put things back."""
    previous = Device.pin_factory
    factory = MockFactory(pin_class=pin_class)
    Device.pin_factory = factory
    try:
        yield factory
    finally:
        factory.reset()
        factory.close()
        Device.pin_factory = previous


def pin_levels(pin: MockPin) -> list[bool]:
    """Every level a mock pin went through since it was created or cleared, in order."""
    return [bool(s.state) for s in pin.states]


@contextlib.contextmanager
def pty_pair() -> Iterator[tuple[int, str]]:
    """A pseudo-terminal: the master fd (the fake device's end) and the slave's path."""
    master, slave = os.openpty()
    try:
        yield master, os.ttyname(slave)
    finally:
        os.close(slave)
        with contextlib.suppress(OSError):
            os.close(master)


class MockMCP3008(MockSPIDevice):
    """The slave side of an MCP3008 on gpiozero's mock SPI bus.

    ``values[channel]`` is the fraction of Vref each channel reads (0..1).
    """

    def __init__(self, clock_pin=11, mosi_pin=10, miso_pin=9, select_pin=8, **kwargs) -> None:
        super().__init__(clock_pin, mosi_pin, miso_pin, select_pin, **kwargs)
        self.values = [0.0] * 8

    def on_bit(self) -> None:
        # gpiozero sends 00000001 MCCCxxxx xxxxxxxx and keeps the last 10 bits it reads:
        # once the channel bits are in, queue the 12 bits that end the transfer.
        if self.rx_bit == 12:
            bits = self.rx_buf
            channel = bits[9] << 2 | bits[10] << 1 | bits[11]
            value = round(self.values[channel] * 1023) if bits[8] else 0
            self.tx_word(value, 12)


class SineSource:
    """A current transformer's output as an ADC sees it, with a clock that moves per sample.

    ``sample()`` returns volts at the ADC pin at the current time, then the clock moves on by
    one sample interval (with optional jitter), as a real burst of SPI reads would.
    """

    def __init__(
        self,
        amplitude_v: float,
        *,
        hz: float = 50.0,
        bias_v: float = 1.65,
        rate: float = 2000.0,
        phase: float = 0.0,
        jitter: float = 0.0,
        seed: int = 0,
        start: float = 100.0,
    ) -> None:
        self.amplitude_v = amplitude_v
        self.hz = hz
        self.bias_v = bias_v
        self.interval = 1.0 / rate
        self.phase = phase
        self.jitter = jitter
        self.now = start
        self._random = random.Random(seed)

    def clock(self) -> float:
        return self.now

    def sample(self) -> float:
        value = self.bias_v + self.amplitude_v * math.sin(
            2 * math.pi * self.hz * self.now + self.phase
        )
        step = self.interval * (1 + self.jitter * (2 * self._random.random() - 1))
        self.now += step
        return value
