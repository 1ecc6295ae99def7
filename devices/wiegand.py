"""Wiegand 26 and 34 readers on two GPIO inputs.

The reader holds both lines high and pulls D0 low for a 0 bit, D1 low for a 1 bit (pulses
of about 50 µs, a bit every 1-2 ms). A frame ends when no bit arrives for ``gap`` seconds.

Frame layouts (bit 0 is sent first):

* Wiegand 26: ``E dddddddddddddddddddddddd O`` — 24 data bits (8-bit facility code,
  16-bit card number); ``E`` makes bits 0-12 even, ``O`` makes bits 13-25 odd.
* Wiegand 34: ``E`` + 32 data bits + ``O``; ``E`` covers the first 16 data bits, ``O`` the
  last 16.

The uid is the data bits as one big-endian number, first bit sent = most significant,
in uppercase hex, zero-padded to 4 bytes (docs/device-protocol.md wants at least 4): facility 0x12
card 0x3456 in Wiegand 26 is ``00123456``; Wiegand 34 gives its 32 bits as they were sent
(many 13.56 MHz readers send the card's 4-byte UID this way, some byte-reversed: check one
card against a phone's NFC app). A frame of another length or with a parity error is
dropped and counted in ``bad_frames``.

>>> decode_wiegand(encode_wiegand(0x123456, 26))
'00123456'
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from gpiozero import DigitalInputDevice

from devices.readers import BadgeReader, Clock

#: data bits per supported frame length
FORMATS = {26: 24, 34: 32}


class WiegandFrameError(ValueError):
    """A Wiegand frame has an unsupported length or a parity error."""


def encode_wiegand(value: int, length: int = 26) -> list[int]:
    """The bits a reader sends for ``value`` (what a card holds), parity bits included."""
    if length not in FORMATS:
        raise ValueError(f"Wiegand {length} is not supported, only {sorted(FORMATS)}")
    width = FORMATS[length]
    if not 0 <= value < 1 << width:
        raise ValueError(f"{value:#x} does not fit in {width} data bits")
    data = [(value >> (width - 1 - i)) & 1 for i in range(width)]
    half = width // 2
    even = sum(data[:half]) % 2
    odd = 1 - sum(data[half:]) % 2
    return [even, *data, odd]


def decode_wiegand(bits: Sequence[int]) -> str:
    """The uid of a Wiegand 26 or 34 frame; raises :class:`WiegandFrameError` if it is bad."""
    if len(bits) not in FORMATS:
        raise WiegandFrameError(f"{len(bits)} bits is not Wiegand 26 or 34")
    width = FORMATS[len(bits)]
    half = width // 2
    if sum(bits[: 1 + half]) % 2 != 0:
        raise WiegandFrameError("even parity fails on the first half")
    if sum(bits[1 + half :]) % 2 != 1:
        raise WiegandFrameError("odd parity fails on the second half")
    value = 0
    for bit in bits[1:-1]:
        value = value << 1 | bit
    return f"{value:08X}" if width <= 32 else f"{value:0{width // 4}X}"


class WiegandReader(BadgeReader):
    """A Wiegand 26/34 reader on two GPIO inputs (BCM numbers by default).

    :param d0: the pin wired (through a level shifter) to the reader's D0 (green) line.
    :param d1: the pin wired to D1 (white).
    :param gap: seconds without a bit that end a frame; readers send a bit every 1-2 ms.
    :param hold_time: the same card again within this time is one presentation.
    :param background: end frames from a daemon thread; with ``False`` call :meth:`poll`
        or :meth:`flush` yourself.
    :param clock: seconds, monotonic; injectable for tests.

    Example::

        reader = WiegandReader(d0=17, d1=27)
        reader.when_badge = lambda uid: print("badge", uid)
    """

    def __init__(
        self,
        d0: int | str = 17,
        d1: int | str = 27,
        *,
        gap: float = 0.025,
        hold_time: float = 1.0,
        background: bool = True,
        clock: Clock = time.monotonic,
        pin_factory=None,
    ) -> None:
        super().__init__(hold_time=hold_time, clock=clock)
        self.gap = gap
        self._poll_interval = gap / 2
        self._bits: list[int] = []
        self._last_bit = 0.0
        self._bits_lock = threading.Lock()
        # Lines idle high: pull-ups, active (a bit) when low. No software debounce: a
        # debounce longer than the 50 µs pulse would eat the bits.
        self._d0 = DigitalInputDevice(d0, pull_up=True, pin_factory=pin_factory)
        try:
            self._d1 = DigitalInputDevice(d1, pull_up=True, pin_factory=pin_factory)
        except Exception:
            self._d0.close()
            raise
        self._d0.when_activated = lambda: self._bit(0)
        self._d1.when_activated = lambda: self._bit(1)
        self._start(background)

    def _bit(self, bit: int) -> None:
        now = self._clock()
        with self._bits_lock:
            stale = self._bits and now - self._last_bit >= self.gap
            old = self._take() if stale else None
            self._bits.append(bit)
            self._last_bit = now
        if old:
            self._decode(old, now)

    def _take(self) -> list[int]:
        bits, self._bits = self._bits, []
        return bits

    def _decode(self, bits: list[int], now: float) -> None:
        try:
            uid = decode_wiegand(bits)
        except WiegandFrameError as exc:
            self._bad_frame(str(exc))
            return
        self._seen(uid, now)

    def flush(self) -> None:
        """End the frame in progress now, whatever the gap (decode it or count it bad)."""
        with self._bits_lock:
            bits = self._take()
        if bits:
            self._decode(bits, self._clock())

    def poll(self) -> None:
        """End the frame in progress if no bit came for ``gap``; forget cards left."""
        now = self._clock()
        with self._bits_lock:
            done = self._bits and now - self._last_bit >= self.gap
            bits = self._take() if done else None
        if bits:
            self._decode(bits, now)
        self.check_removed(now)

    def close(self) -> None:
        super().close()
        self._d0.close()
        self._d1.close()
