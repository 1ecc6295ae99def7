import os
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.rdm6300 import Rdm6300Parser, Rdm6300Reader, rdm6300_frame
from tests.devices_helpers import FakeClock, pty_pair

TAG = bytes.fromhex("0F00C1D1E2")
UID = "0F00C1D1E2"


def test_frame_matches_a_captured_rdm6300_frame():
    # Captured from a real module: tag 0x00C1D1E2 (12702178), version 0x0F.
    assert rdm6300_frame(TAG) == b"\x020F00C1D1E2FD\x03"


def test_parser_reports_uid_split_across_reads():
    parser = Rdm6300Parser()
    frame = rdm6300_frame(TAG)
    assert parser.feed(frame[:5]) == []
    assert parser.feed(frame[5:]) == [UID]
    assert parser.bad_frames == 0


def test_parser_can_report_only_the_four_tag_bytes():
    assert Rdm6300Parser(include_version=False).feed(rdm6300_frame(TAG)) == ["00C1D1E2"]


@pytest.mark.parametrize(
    ("garbage", "bad"),
    [
        (b"\x020F00C1", 1),  # truncated: the next frame's STX cuts it short
        (b"\x020F00C1D1E2FE\x03", 1),  # wrong checksum
        (b"\x020F00C1D1E2FD\x04", 1),  # no ETX
        (b"\x020f00c1d1e2fd\x03", 1),  # lowercase is not what the module sends
        (b"\x020F00C1D1E2FD\x02", 1),  # ETX missing, STX in its place starts the next one
        (b"hello\x03\x00\xff", 0),  # noise outside any frame is not a frame
    ],
)
def test_parser_drops_bad_frames_and_resyncs(garbage, bad):
    parser = Rdm6300Parser()
    other = bytes.fromhex("0112345678")
    uids = parser.feed(garbage + rdm6300_frame(other) + rdm6300_frame(TAG))
    assert uids == ["0112345678", UID]
    assert parser.bad_frames == bad


tags = st.binary(min_size=5, max_size=5)
noise = st.binary(max_size=30)


def _holds_a_frame(data: bytes) -> bool:
    return bool(Rdm6300Parser().feed(data))


@given(st.lists(st.tuples(noise, tags), max_size=8), noise)
def test_noise_between_frames_never_loses_or_invents_a_uid(items, tail):
    # Noise that by chance is itself a valid frame would rightly be reported: rule it out.
    stream = b""
    expected = []
    for junk, tag in items:
        if _holds_a_frame(junk):
            junk = junk.replace(b"\x02", b"")
        stream += junk + rdm6300_frame(tag)
        expected.append(tag.hex().upper())
    if not _holds_a_frame(tail):
        stream += tail
    parser = Rdm6300Parser()
    got = []
    for i in range(0, len(stream), 7):  # arrives in small reads
        got += parser.feed(stream[i : i + 7])
    assert got == expected


@given(tags, st.integers(min_value=0, max_value=14 * 8 - 1), tags)
def test_a_flipped_bit_never_gives_a_uid_and_the_next_frame_still_reads(tag, bit, following):
    frame = bytearray(rdm6300_frame(tag))
    frame[bit // 8] ^= 1 << (bit % 8)
    parser = Rdm6300Parser()
    assert parser.feed(bytes(frame)) == []
    assert parser.feed(rdm6300_frame(following)) == [following.hex().upper()]


# -- the reader on a serial port ----------------------------------------------------------


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def reader(clock):
    reader = Rdm6300Reader("loop://", background=False, clock=clock, hold_time=0.5)
    badges, removed = [], []
    reader.when_badge = badges.append
    reader.when_removed = removed.append
    reader.badges, reader.removed = badges, removed
    yield reader
    reader.close()


def test_held_tag_is_one_badge_then_removed_after_it_stops_repeating(reader, clock):
    for _ in range(5):  # the module repeats the frame while the tag is held
        reader.serial.write(rdm6300_frame(TAG))
        reader.poll()
        clock.advance(0.1)
    assert reader.badges == [UID]
    assert reader.present == (UID,)
    clock.advance(0.3)
    reader.poll()
    assert reader.removed == []  # 0.4 s since the last frame: still held
    clock.advance(0.2)
    reader.poll()
    assert reader.removed == [UID]
    assert reader.present == ()


def test_tag_presented_again_after_hold_is_a_new_badge(reader, clock):
    reader.serial.write(rdm6300_frame(TAG))
    reader.poll()
    clock.advance(2)
    reader.serial.write(rdm6300_frame(TAG))
    reader.poll()
    assert reader.badges == [UID, UID]
    assert reader.removed == [UID]


def test_swapping_tags_reports_each(reader, clock):
    other = bytes.fromhex("0112345678")
    reader.serial.write(rdm6300_frame(TAG) + rdm6300_frame(other))
    reader.poll()
    reader.poll()
    assert reader.badges == [UID, "0112345678"]


def test_bad_frames_are_counted_on_the_reader(reader):
    reader.serial.write(b"\x020F00C1D1E2FF\x03" + rdm6300_frame(TAG))
    reader.poll()
    assert reader.badges == [UID]
    assert reader.bad_frames == 1


def test_a_failing_callback_does_not_stop_the_reader(reader, clock):
    def explode(uid):
        raise RuntimeError("boom")

    reader.when_badge = explode
    reader.serial.write(rdm6300_frame(TAG))
    reader.poll()
    seen = []
    reader.when_badge = seen.append
    clock.advance(1)
    reader.serial.write(rdm6300_frame(bytes.fromhex("0112345678")))
    reader.poll()
    assert seen == ["0112345678"]


def test_background_thread_reads_from_a_pty():
    with pty_pair() as (master, path):
        reader = Rdm6300Reader(path)
        got = threading.Event()
        seen = []
        reader.when_badge = lambda uid: (seen.append(uid), got.set())
        try:
            os.write(master, b"\xff\x00" + rdm6300_frame(TAG))
            assert got.wait(5)
            assert seen == [UID]
        finally:
            reader.close()
