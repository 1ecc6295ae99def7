import os
import select
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.pn532 import (
    ACK_FRAME,
    NACK_FRAME,
    Pn532Error,
    Pn532Frame,
    Pn532FrameParser,
    Pn532Reader,
    parse_target_uid,
    pn532_frame,
)
from tests.devices_helpers import FakeClock, pty_pair

UID7 = bytes.fromhex("04A1B2C3D4E5F6")


class FakePn532:
    """A PN532 in HSU mode on the master side of a pty: ACKs and answers each command."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.card: bytes | None = None
        self.corrupt = 0  # damage the DCS of this many coming responses
        self.noise = b""  # sent before the next response
        self.silent = False  # do not answer at all (unpowered chip)
        self.commands: list[int] = []
        self._parser = Pn532FrameParser()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.fd], [], [], 0.02)
            if not ready:
                continue
            try:
                data = os.read(self.fd, 512)
            except OSError:
                return
            for frame in self._parser.feed(data):
                if frame.kind == "data" and frame.body[0] == 0xD4 and not self.silent:
                    self._answer(frame.body[1], frame.body[2:])

    def _answer(self, code: int, params: bytes) -> None:
        self.commands.append(code)
        if code == 0x02:
            data = bytes([0x32, 0x01, 0x06, 0x07])
        elif code == 0x4A:
            if self.card is None:
                data = b"\x00"
            else:
                data = bytes([1, 1, 0x00, 0x44, 0x00, len(self.card)]) + self.card
        else:
            data = b""
        response = bytearray(pn532_frame(0xD5, bytes([code + 1]) + data))
        if self.corrupt:
            self.corrupt -= 1
            response[-2] ^= 0x10
        os.write(self.fd, ACK_FRAME + self.noise + bytes(response))
        self.noise = b""


@pytest.fixture
def pn532():
    with pty_pair() as (master, path):
        fake = FakePn532(master)
        fake.path = path
        yield fake
        fake.close()


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def reader(pn532, clock):
    reader = Pn532Reader(pn532.path, background=False, clock=clock, response_timeout=2.0)
    reader.badges, reader.removed = [], []
    reader.when_badge = reader.badges.append
    reader.when_removed = reader.removed.append
    yield reader
    reader.close()


# -- frames --------------------------------------------------------------------------------


def test_frame_layout_matches_the_manual():
    # SAMConfiguration normal mode, as printed in the PN532 application note.
    assert pn532_frame(0xD4, bytes([0x14, 0x01, 0x14, 0x01])).hex(" ") == (
        "00 00 ff 05 fb d4 14 01 14 01 02 00"
    )


def test_parser_reads_ack_nack_and_data_split_anywhere():
    stream = ACK_FRAME + pn532_frame(0xD5, b"\x4b\x00") + NACK_FRAME
    for cut in range(len(stream)):
        parser = Pn532FrameParser()
        frames = parser.feed(stream[:cut]) + parser.feed(stream[cut:])
        assert frames == [
            Pn532Frame("ack"),
            Pn532Frame("data", b"\xd5\x4b\x00"),
            Pn532Frame("nack"),
        ]


def test_extended_frame_round_trips():
    body = bytes(range(256)) + b"\x01" * 5
    assert Pn532FrameParser().feed(pn532_frame(0xD5, body)) == [Pn532Frame("data", b"\xd5" + body)]


@pytest.mark.parametrize("where", ["lcs", "dcs"])
def test_bad_checksums_are_dropped_counted_and_the_next_frame_read(where):
    bad = bytearray(pn532_frame(0xD5, b"\x4b\x00"))
    bad[4 if where == "lcs" else -2] ^= 0x01
    parser = Pn532FrameParser()
    assert parser.feed(bytes(bad) + pn532_frame(0xD5, b"\x15")) == [Pn532Frame("data", b"\xd5\x15")]
    assert parser.bad_frames == 1


bodies = st.binary(min_size=1, max_size=40)
# Bytes that can never form a start code (00 FF), even next to a frame's postamble: noise
# of these cannot open a frame, so the frames must come out exactly. Noise that can is
# tested by example; its false frames are caught only with probability 255/256 each.
no_start = st.lists(st.integers(0x01, 0xFE), max_size=20).map(bytes)


@given(st.lists(st.tuples(no_start, bodies), max_size=6))
def test_noise_between_frames_neither_loses_nor_invents_frames(items):
    stream = b"".join(noise + pn532_frame(0xD5, body) for noise, body in items)
    parser = Pn532FrameParser()
    frames = []
    for i in range(0, len(stream), 5):
        frames += parser.feed(stream[i : i + 5])
    assert frames == [Pn532Frame("data", b"\xd5" + body) for _, body in items]


@given(no_start.filter(len), st.data(), bodies)
def test_a_flipped_bit_between_len_and_dcs_never_gives_a_frame(body, data, following):
    # LEN, LCS, TFI, data and DCS: a single flip always breaks LCS or DCS (mod-256 sums).
    # The body holds no 00 or FF, so the damaged frame cannot hide a start code either.
    frame = bytearray(pn532_frame(0xD5, body))
    bit = data.draw(st.integers(3 * 8, (len(frame) - 1) * 8 - 1))
    frame[bit // 8] ^= 1 << (bit % 8)
    parser = Pn532FrameParser()
    got = parser.feed(bytes(frame) + pn532_frame(0xD5, following))
    assert got == [Pn532Frame("data", b"\xd5" + following)]
    assert parser.bad_frames >= 1


def test_target_uid_lengths():
    assert parse_target_uid(b"\x00") is None
    assert parse_target_uid(bytes([1, 1, 0, 4, 8, 4]) + b"\xde\xad\xbe\xef") == "DEADBEEF"
    with pytest.raises(ValueError):
        parse_target_uid(bytes([1, 1, 0, 4, 8, 7]) + b"\xde\xad")


# -- the reader against a fake chip on a pty --------------------------------------------------


def test_reader_wakes_configures_and_reads_a_card(reader, pn532):
    pn532.card = UID7
    reader.poll()
    assert pn532.commands == [0x14, 0x32, 0x02, 0x4A]
    assert reader.firmware == (0x32, 0x01, 0x06)
    assert reader.badges == ["04A1B2C3D4E5F6"]


def test_card_on_the_reader_is_one_badge_and_removal_is_reported(reader, pn532, clock):
    reader.poll()  # no card
    pn532.card = UID7
    for _ in range(4):
        reader.poll()
        clock.advance(0.15)
    assert reader.badges == ["04A1B2C3D4E5F6"]
    pn532.card = None
    reader.poll()
    clock.advance(0.6)
    reader.poll()
    assert reader.removed == ["04A1B2C3D4E5F6"]


def test_corrupted_response_is_counted_never_a_wrong_uid(reader, pn532, clock):
    reader.poll()
    pn532.card = UID7
    pn532.corrupt = 1
    reader.poll()
    assert reader.badges == []
    assert reader.bad_frames == 1
    pn532.noise = b"\x00\xff\x13\x37garbage"  # a false start code before the real answer
    reader.poll()
    assert reader.badges == ["04A1B2C3D4E5F6"]


def test_silent_chip_raises_and_is_woken_again(pn532, clock):
    reader = Pn532Reader(pn532.path, background=False, clock=clock, response_timeout=0.2)
    try:
        reader.poll()
        pn532.silent = True
        with pytest.raises(Pn532Error):
            reader.poll()
        assert reader.firmware is None
        pn532.silent = False
        pn532.card = UID7
        seen = []
        reader.when_badge = seen.append
        reader.poll()
        assert seen == ["04A1B2C3D4E5F6"]
    finally:
        reader.close()


def test_background_polling_reports_a_card(pn532):
    pn532.card = UID7
    reader = Pn532Reader(pn532.path, poll_interval=0.01)
    got = threading.Event()
    reader.when_badge = lambda uid: got.set()
    try:
        assert got.wait(5)
    finally:
        reader.close()
