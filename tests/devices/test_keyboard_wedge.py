import os
import threading

import pytest
from evdev import ecodes
from evdev.events import InputEvent
from hypothesis import given
from hypothesis import strategies as st

from devices.keyboard_wedge import KeyboardWedgeReader, WedgeDecoder
from tests.devices_helpers import FakeClock

KEYS = {str(d): getattr(ecodes, f"KEY_{d}") for d in range(10)}
KEYS |= {c: getattr(ecodes, f"KEY_{c}") for c in "ABCDEF"}


def typed(text: str, *, shifted_letters: bool = True) -> list[int]:
    """Key-down codes a reader sends to type ``text`` and Enter."""
    codes = []
    for char in text:
        if char.isalpha() and shifted_letters:
            codes.append(ecodes.KEY_LEFTSHIFT)
        codes.append(KEYS[char])
    return [*codes, ecodes.KEY_ENTER]


def decode(decoder: WedgeDecoder, codes: list[int]) -> list[str]:
    return [uid for code in codes if (uid := decoder.feed_key(code)) is not None]


def test_decimal_em4100_number_becomes_four_byte_hex():
    assert decode(WedgeDecoder("decimal"), typed("0012702178")) == ["00C1D1E2"]


def test_hex_reader_uid_is_taken_as_typed():
    assert decode(WedgeDecoder("hex"), typed("04A1B2C3D4E5F6")) == ["04A1B2C3D4E5F6"]


def test_keypad_digits_and_keypad_enter_work():
    codes = [getattr(ecodes, f"KEY_KP{d}") for d in "0012702178"] + [ecodes.KEY_KPENTER]
    assert decode(WedgeDecoder(), codes) == ["00C1D1E2"]


@pytest.mark.parametrize(
    ("fmt", "text"),
    [
        ("decimal", "123456789"),  # a digit lost
        ("decimal", "4294967296"),  # does not fit 32 bits
        ("decimal", "00127021A8"),  # a letter in a decimal reader's line
        ("hex", "04A1B2C"),  # odd number of digits
        ("hex", "04A1B2"),  # 3 bytes: too short for a uid
    ],
)
def test_bad_lines_are_dropped_and_counted(fmt, text):
    decoder = WedgeDecoder(fmt)
    assert decode(
        decoder, typed(text) + typed("0012702178" if fmt == "decimal" else "DEADBEEF")
    ) == ["00C1D1E2" if fmt == "decimal" else "DEADBEEF"]
    assert decoder.bad_frames == 1


@given(st.integers(0, 2**32 - 1))
def test_every_32_bit_number_round_trips(number):
    assert decode(WedgeDecoder(), typed(f"{number:010d}")) == [f"{number:08X}"]


class FakeInputDevice:
    """An evdev.InputDevice stand-in: events written to it become readable on its fd."""

    def __init__(self):
        self._r, self._w = os.pipe()
        self._events: list[InputEvent] = []
        self._lock = threading.Lock()
        self.grabbed = False

    def type_text(self, text: str) -> None:
        with self._lock:
            for code in typed(text):
                self._events.append(InputEvent(0, 0, ecodes.EV_KEY, code, 1))  # down
                self._events.append(InputEvent(0, 0, ecodes.EV_KEY, code, 0))  # up
                self._events.append(InputEvent(0, 0, ecodes.EV_SYN, 0, 0))
        os.write(self._w, b"x")

    def fileno(self):
        return self._r

    def read(self):
        os.read(self._r, 1024)
        with self._lock:
            events, self._events = self._events, []
        return events

    def grab(self):
        self.grabbed = True

    def close(self):
        for fd in (self._r, self._w):
            try:
                os.close(fd)
            except OSError:
                pass


def test_reader_grabs_the_device_and_reports_each_tap_once():
    device = FakeInputDevice()
    clock = FakeClock()
    reader = KeyboardWedgeReader(device, background=False, clock=clock, hold_time=1.0)
    seen = []
    reader.when_badge = seen.append
    try:
        assert device.grabbed
        device.type_text("0012702178")
        reader.poll()
        device.type_text("0012702178")  # the same card tapped twice in a row
        reader.poll()
        clock.advance(5)
        device.type_text("0012702178")
        device.type_text("12345")
        reader.poll()
        assert seen == ["00C1D1E2", "00C1D1E2"]
        assert reader.bad_frames == 1
    finally:
        reader.close()


def test_background_thread_reads_the_device():
    device = FakeInputDevice()
    reader = KeyboardWedgeReader(device, fmt="hex")
    got = threading.Event()
    reader.when_badge = lambda uid: got.set()
    try:
        device.type_text("04A1B2C3")
        assert got.wait(5)
    finally:
        reader.close()
