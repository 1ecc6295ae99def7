"""USB readers that type the card number like a keyboard ("keyboard wedge"), via evdev.

Such a reader types digits and then Enter. Most 125 kHz ones type the tag's 32-bit number
as 10 decimal digits (``0012702178``); many 13.56 MHz ones type the UID in hex
(``04A1B2C3``). Either becomes an uppercase hex uid: decimal ``0012702178`` is
``00C1D1E2`` (4 bytes, zero-padded), hex is taken as typed.

The reader's input device is grabbed, so the numbers do not also land on a console or in a
browser form. Find it under ``/dev/input/by-id/`` (``usb-…-event-kbd``); the service user
needs to be in the ``input`` group.

>>> decoder = WedgeDecoder("decimal")
>>> [decoder.feed_key(code) for code in (11, 11, 2, 3, 8, 11, 3, 2, 8, 9, 28)][-1]
'00C1D1E2'
"""

from __future__ import annotations

import select
import time
from typing import Any

from devices.readers import BadgeReader, Clock

# Linux input key codes (linux/input-event-codes.h), so decoding needs no evdev import.
KEY_ENTER, KEY_KPENTER = 28, 96
_DIGITS = {2: "1", 3: "2", 4: "3", 5: "4", 6: "5", 7: "6", 8: "7", 9: "8", 10: "9", 11: "0"}
_KEYPAD = {79: "1", 80: "2", 81: "3", 75: "4", 76: "5", 77: "6", 71: "7", 72: "8", 73: "9", 82: "0"}
_HEX_LETTERS = {30: "A", 48: "B", 46: "C", 32: "D", 18: "E", 33: "F"}
_SHIFTS = {42, 54}  # KEY_LEFTSHIFT, KEY_RIGHTSHIFT: hex letters come shifted
KEY_DOWN = 1
EV_KEY = 1


class WedgeDecoder:
    """Turns key-down codes into uids; pure, no I/O.

    :param fmt: ``"decimal"`` (the typed number, at most 4294967295, is the 4-byte tag
        number) or ``"hex"`` (8 to 20 hex digits, an even number, taken as the uid).
    :param digits: for ``decimal``, how many digits the reader types (10 for most).

    A line that holds another key, the wrong number of digits or an out-of-range number
    is dropped and counted in :attr:`bad_frames`.
    """

    def __init__(self, fmt: str = "decimal", *, digits: int = 10) -> None:
        if fmt not in ("decimal", "hex"):
            raise ValueError(f"fmt must be 'decimal' or 'hex', got {fmt!r}")
        self.fmt = fmt
        self.digits = digits
        self.bad_frames = 0
        self._typed: list[str] = []
        self._spoiled = False

    def feed_key(self, code: int) -> str | None:
        """One key pressed; returns a uid when Enter ends a good line."""
        if code in (KEY_ENTER, KEY_KPENTER):
            typed, spoiled = "".join(self._typed), self._spoiled
            self._typed, self._spoiled = [], False
            if not typed and not spoiled:
                return None  # a bare Enter is no frame
            uid = None if spoiled else self._uid(typed)
            if uid is None:
                self.bad_frames += 1
            return uid
        if code in _SHIFTS:
            return None
        char = _DIGITS.get(code) or _KEYPAD.get(code)
        if char is None and self.fmt == "hex":
            char = _HEX_LETTERS.get(code)
        if char is None or len(self._typed) >= 20:
            self._spoiled = True
        else:
            self._typed.append(char)
        return None

    def _uid(self, typed: str) -> str | None:
        if self.fmt == "decimal":
            if len(typed) != self.digits or int(typed) >= 1 << 32:
                return None
            return f"{int(typed):08X}"
        if len(typed) % 2 or not 8 <= len(typed) <= 20:
            return None
        return typed


class KeyboardWedgeReader(BadgeReader):
    """A USB keyboard-wedge badge reader, read through evdev.

    :param device: the event device path, or an ``evdev.InputDevice``-like object
        (``fileno()``, ``read()``, ``grab()``, ``close()``).
    :param fmt: ``"decimal"`` or ``"hex"``, as the reader is set to type (see
        :class:`WedgeDecoder`); ``digits`` likewise.
    :param grab: take the device for this reader alone.
    :param hold_time: the same card again within this time is one presentation.
    :param background: read in a daemon thread; with ``False`` call :meth:`poll`.

    Example::

        reader = KeyboardWedgeReader("/dev/input/by-id/usb-Reader-event-kbd")
        reader.when_badge = lambda uid: print("badge", uid)
    """

    def __init__(
        self,
        device: str | Any,
        *,
        fmt: str = "decimal",
        digits: int = 10,
        grab: bool = True,
        hold_time: float = 1.0,
        background: bool = True,
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__(hold_time=hold_time, clock=clock)
        self.decoder = WedgeDecoder(fmt, digits=digits)
        if isinstance(device, str):
            import evdev  # only a reader that needs it pulls evdev in

            device = evdev.InputDevice(device)
        self.device = device
        if grab:
            self.device.grab()
        self._start(background)

    def handle_event(self, event: Any) -> None:
        """One input event (``type``, ``code``, ``value``); key-downs are decoded."""
        if event.type != EV_KEY or event.value != KEY_DOWN:
            return
        before = self.decoder.bad_frames
        uid = self.decoder.feed_key(event.code)
        self.bad_frames += self.decoder.bad_frames - before
        now = self._clock()
        if uid is not None:
            self._seen(uid, now)
        self.check_removed(now)

    def poll(self, timeout: float = 0.1) -> None:
        """Wait up to ``timeout`` for input events and handle those that came."""
        ready, _, _ = select.select([self.device], [], [], timeout)
        if ready:
            for event in self.device.read():
                self.handle_event(event)

    def close(self) -> None:
        super().close()
        self.device.close()
