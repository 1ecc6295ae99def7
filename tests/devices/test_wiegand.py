import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.wiegand import WiegandFrameError, WiegandReader, decode_wiegand, encode_wiegand
from tests.devices_helpers import FakeClock, mock_pins

D0, D1 = 17, 27


@pytest.fixture
def pins():
    with mock_pins() as factory:
        yield factory


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def reader(pins, clock):
    reader = WiegandReader(D0, D1, background=False, clock=clock, hold_time=1.0)
    reader.badges = []
    reader.when_badge = reader.badges.append
    yield reader
    reader.close()


def send(pins, clock, bits):
    """Pulse D0 or D1 low once per bit, 2 ms apart, like a reader does."""
    for bit in bits:
        pin = pins.pin(D1 if bit else D0)
        pin.drive_low()
        pin.drive_high()
        clock.advance(0.002)


def test_known_wiegand26_frame():
    # Facility 0x12 card 0x3457: the first 12 data bits 0001 0010 0011 hold 4 ones, so E=0;
    # the last 12, 0100 0101 0111, hold 6, so O=1 to make them odd.
    bits = encode_wiegand(0x123457, 26)
    assert "".join(map(str, bits)) == "0" + "000100100011" + "010001010111" + "1"
    assert decode_wiegand(bits) == "00123457"


def test_wiegand34_uid_is_the_32_data_bits():
    assert decode_wiegand(encode_wiegand(0x04A1B2C3, 34)) == "04A1B2C3"


@given(st.sampled_from([26, 34]), st.data())
def test_single_bit_errors_and_wrong_lengths_never_give_a_uid(length, data):
    value = data.draw(st.integers(0, (1 << (length - 2)) - 1))
    bits = encode_wiegand(value, length)
    assert int(decode_wiegand(bits), 16) == value
    flipped = list(bits)
    flipped[data.draw(st.integers(0, length - 1))] ^= 1
    with pytest.raises(WiegandFrameError):
        decode_wiegand(flipped)
    with pytest.raises(WiegandFrameError):
        decode_wiegand(bits[:-1])  # a lost bit
    with pytest.raises(WiegandFrameError):
        decode_wiegand([*bits, 0])  # a spurious bit


def test_reader_decodes_pulses_after_the_gap(reader, pins, clock):
    send(pins, clock, encode_wiegand(0x123456, 26))
    reader.poll()
    assert reader.badges == []  # 2 ms since the last bit: the frame may go on
    clock.advance(0.030)
    reader.poll()
    assert reader.badges == ["00123456"]
    assert reader.bad_frames == 0


def test_next_frame_after_a_gap_ends_the_previous_one(reader, pins, clock):
    send(pins, clock, encode_wiegand(0x04A1B2C3, 34))
    clock.advance(0.5)
    send(pins, clock, encode_wiegand(0x123456, 26))
    reader.flush()
    assert reader.badges == ["04A1B2C3", "00123456"]


def test_noise_and_bad_parity_are_counted_not_reported(reader, pins, clock):
    send(pins, clock, [1, 0, 1])  # a glitch on the lines
    clock.advance(0.1)
    bad = encode_wiegand(0x123456, 26)
    bad[5] ^= 1
    send(pins, clock, bad)
    clock.advance(0.1)
    send(pins, clock, encode_wiegand(0x123456, 26))
    reader.flush()
    assert reader.badges == ["00123456"]
    assert reader.bad_frames == 2


def test_same_card_twice_within_hold_is_one_badge(reader, pins, clock):
    for _ in range(2):
        send(pins, clock, encode_wiegand(0x123456, 26))
        clock.advance(0.3)
        reader.poll()
    assert reader.badges == ["00123456"]
    clock.advance(2)
    send(pins, clock, encode_wiegand(0x123456, 26))
    reader.flush()
    assert reader.badges == ["00123456", "00123456"]


def test_background_thread_ends_the_frame_on_its_own(pins):
    reader = WiegandReader(D0, D1, gap=0.05)
    got = threading.Event()
    reader.when_badge = lambda uid: got.set()
    try:
        for bit in encode_wiegand(0x123456, 26):
            pin = pins.pin(D1 if bit else D0)
            pin.drive_low()
            pin.drive_high()
        assert got.wait(5)
    finally:
        reader.close()
