"""PN532 13.56 MHz (ISO 14443A: MIFARE, NTAG, DESFire) readers over HSU, the PN532's UART.

Every exchange is framed, both ways (PN532 user manual §6.2)::

    00 00 FF | LEN | LCS | TFI | data ... | DCS | 00
    preamble+start code; LEN counts TFI and data; LEN + LCS = 0 and TFI + data + DCS = 0
    (mod 256); TFI is D4 from the host, D5 from the PN532.

The PN532 answers each command with an ACK frame (``00 00 FF 00 FF 00``) and then the
response, whose command code is the command's plus one. A frame whose LCS or DCS does not
check is dropped and counted in ``bad_frames``; the parser then looks for the next start
code, so noise and damaged frames never shift it off the stream.

The reader wakes the chip (HSU wake-up: ``55 55`` and a run of zeros), sets
SAMConfiguration to normal mode, limits InListPassiveTarget's retries so a poll with no
card returns at once, and then polls. The uid is the card's NFCID1 as the PN532 reports
it: 4, 7 or 10 bytes, in uppercase hex.

>>> pn532_frame(0xD4, bytes([0x4A, 0x01, 0x00]))
b'\\x00\\x00\\xff\\x04\\xfc\\xd4J\\x01\\x00\\xe1\\x00'
"""

from __future__ import annotations

import logging
import time
from typing import NamedTuple

import serial

from devices.readers import BadgeReader, Clock
from hub.errors import PeershopError

log = logging.getLogger(__name__)

HOST_TO_PN532 = 0xD4
PN532_TO_HOST = 0xD5
START_CODE = b"\x00\xff"
ACK_FRAME = b"\x00\x00\xff\x00\xff\x00"
NACK_FRAME = b"\x00\x00\xff\xff\x00\x00"
WAKEUP = b"\x55\x55" + bytes(14)

GET_FIRMWARE_VERSION = 0x02
SAM_CONFIGURATION = 0x14
RF_CONFIGURATION = 0x32
IN_LIST_PASSIVE_TARGET = 0x4A

LOST_GRACE = 0.05  # seconds: a 40-byte frame takes 3.5 ms at 115200 baud
MAX_FRAME_BODY = 264  # TFI + the longest data field the PN532 sends


class Pn532Error(PeershopError, OSError):
    """The PN532 did not answer as its manual says (timeout, NACK, error frame)."""


class Pn532Frame(NamedTuple):
    """One frame off the wire: ``kind`` is ``ack``, ``nack`` or ``data`` (with ``body``)."""

    kind: str
    body: bytes = b""


def pn532_frame(tfi: int, data: bytes) -> bytes:
    """A normal (or, past 254 bytes, extended) information frame for ``tfi`` and ``data``."""
    body = bytes([tfi]) + data
    dcs = -sum(body) & 0xFF
    if len(body) < 0xFF:
        header = bytes([len(body), -len(body) & 0xFF])
    else:
        hi, lo = divmod(len(body), 256)
        header = bytes([0xFF, 0xFF, hi, lo, -(hi + lo) & 0xFF])
    return b"\x00\x00\xff" + header + body + bytes([dcs, 0x00])


class Pn532FrameParser:
    """Turns a byte stream from (or to) a PN532 into frames; pure, no I/O.

    >>> p = Pn532FrameParser()
    >>> p.feed(ACK_FRAME + pn532_frame(0xD5, b"\\x15"))
    [Pn532Frame(kind='ack', body=b''), Pn532Frame(kind='data', body=b'\\xd5\\x15')]
    """

    def __init__(self) -> None:
        self.bad_frames = 0
        self._buf = bytearray()

    def reset(self) -> None:
        """Forget a partial frame (after a timeout: the rest is not coming)."""
        self._buf.clear()

    def feed(self, data: bytes) -> list[Pn532Frame]:
        self._buf += data
        frames: list[Pn532Frame] = []
        buf = self._buf
        while True:
            start = buf.find(START_CODE)
            if start < 0:
                # Keep a trailing 00: it may be the first half of a start code.
                del buf[: len(buf) - 1 if buf.endswith(b"\x00") else len(buf)]
                return frames
            del buf[:start]
            if len(buf) < 4:
                return frames
            length, lcs = buf[2], buf[3]
            if length == 0x00 and lcs == 0xFF:
                frames.append(Pn532Frame("ack"))
                del buf[:4]
                continue
            if length == 0xFF and lcs == 0x00:
                frames.append(Pn532Frame("nack"))
                del buf[:4]
                continue
            if length == 0xFF and lcs == 0xFF:  # extended frame: 00 FF FF FF LENM LENL LCS
                if len(buf) < 7:
                    return frames
                hi, lo, lcs = buf[4], buf[5], buf[6]
                length, head = hi << 8 | lo, 7
                header_ok = (hi + lo + lcs) & 0xFF == 0
            else:
                head = 4
                header_ok = (length + lcs) & 0xFF == 0
            if not header_ok or not 1 <= length <= MAX_FRAME_BODY:
                self.bad_frames += 1
                del buf[:2]  # resync: look for the next start code
                continue
            if len(buf) < head + length + 1:
                return frames
            body = bytes(buf[head : head + length])
            if (sum(body) + buf[head + length]) & 0xFF != 0:
                self.bad_frames += 1
                del buf[:2]
                continue
            frames.append(Pn532Frame("data", body))
            del buf[: head + length + 1]


def parse_target_uid(data: bytes) -> str | None:
    """The uid in an InListPassiveTarget (106 kbps type A) response's data, ``None`` if no card.

    ``data`` follows ``D5 4B``: NbTg, then Tg, SENS_RES (2), SEL_RES, NFCIDLength, NFCID1.
    Raises :class:`ValueError` if the response is cut short.
    """
    if not data:
        raise ValueError("empty InListPassiveTarget response")
    if data[0] == 0:
        return None
    if len(data) < 6 or len(data) < 6 + data[5]:
        raise ValueError(f"InListPassiveTarget response too short: {data.hex()}")
    return data[6 : 6 + data[5]].hex().upper()


class _FrameLost(Pn532Error):
    """The response arrived damaged and was dropped."""


class Pn532Reader(BadgeReader):
    """A PN532 board on a serial port in HSU mode (115200 8N1), polled for ISO 14443A cards.

    :param port: a device path (``/dev/serial0``) or a pyserial URL.
    :param hold_time: the same card seen again within this time is one presentation;
        :attr:`when_removed` fires once it has not been seen for this long. Keep it above
        ``poll_interval``.
    :param poll_interval: seconds between polls in the background thread.
    :param response_timeout: seconds to wait for an ACK or a response.
    :param background: poll in a daemon thread; with ``False`` call :meth:`poll` yourself.
    :param clock: seconds, monotonic; injectable for tests.

    Example::

        reader = Pn532Reader("/dev/serial0")
        reader.when_badge = lambda uid: print("badge", uid)
        reader.firmware              # (50, 1, 6) for a PN532 v1.6, after the first poll
    """

    def __init__(
        self,
        port: str = "/dev/serial0",
        *,
        baudrate: int = 115200,
        hold_time: float = 0.6,
        poll_interval: float = 0.15,
        response_timeout: float = 1.0,
        background: bool = True,
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__(hold_time=hold_time, clock=clock)
        self.response_timeout = response_timeout
        self._poll_interval = poll_interval
        self.parser = Pn532FrameParser()
        self.serial = serial.serial_for_url(port, baudrate, timeout=0.02)
        #: (IC, version, revision) from GetFirmwareVersion, once the chip has answered.
        self.firmware: tuple[int, int, int] | None = None
        self._pending: list[Pn532Frame] = []
        self._lost = False
        self._start(background)

    # -- the protocol ----------------------------------------------------------------------

    def begin(self) -> None:
        """Wake the PN532 and set it up for polling; :meth:`poll` does this when needed."""
        self.serial.write(WAKEUP)
        self.command(SAM_CONFIGURATION, bytes([0x01, 0x14, 0x01]))  # normal mode, no IRQ
        # MxRtyATR, MxRtyPSL, MxRtyPassiveActivation: try twice, not forever.
        self.command(RF_CONFIGURATION, bytes([0x05, 0xFF, 0x01, 0x02]))
        version = self.command(GET_FIRMWARE_VERSION)
        if len(version) < 3:
            raise Pn532Error(f"short firmware version: {version.hex()}")
        self.firmware = (version[0], version[1], version[2])

    def command(self, code: int, params: bytes = b"") -> bytes:
        """Send a command, wait for its ACK and response; return the response's data."""
        # Exchanges are strictly one at a time: anything still unread is stale.
        self._pending.clear()
        self._lost = False  # a frame of this exchange failed its checksum
        self.parser.reset()
        self.serial.reset_input_buffer()
        self.serial.write(pn532_frame(HOST_TO_PN532, bytes([code]) + params))
        frame = self._next_frame()
        if frame.kind != "ack":
            raise Pn532Error(f"command {code:#04x} got {frame.kind} instead of an ACK")
        frame = self._next_frame()
        body = frame.body
        if frame.kind != "data" or body[:2] != bytes([PN532_TO_HOST, code + 1]):
            raise Pn532Error(f"command {code:#04x} got {frame.kind} {body.hex()}")
        return body[2:]

    def _next_frame(self) -> Pn532Frame:
        deadline = self._clock_real() + self.response_timeout
        if self._lost:
            deadline = min(deadline, self._clock_real() + LOST_GRACE)
        while not self._pending:
            if self._clock_real() > deadline:
                if self._lost:
                    raise _FrameLost("a frame failed its checksum")
                self.parser.reset()
                raise Pn532Error("PN532 did not answer in time")
            data = self.serial.read(max(1, self.serial.in_waiting))
            if not data:
                continue
            before = self.parser.bad_frames
            self._pending += self.parser.feed(data)
            if self.parser.bad_frames != before:
                self.bad_frames += self.parser.bad_frames - before
                self._lost = True
                # The damaged frame was most likely the answer; wait only briefly for
                # another, in case it was line noise in front of the real one.
                deadline = min(deadline, self._clock_real() + LOST_GRACE)
        return self._pending.pop(0)

    @staticmethod
    def _clock_real() -> float:
        # Timeouts are real waits on the port, whatever clock the tag hold uses.
        return time.monotonic()

    def read_passive_target(self) -> str | None:
        """Poll once for a type A card; its uid, or ``None`` if there is none."""
        data = self.command(IN_LIST_PASSIVE_TARGET, bytes([0x01, 0x00]))
        try:
            return parse_target_uid(data)
        except ValueError as exc:
            self._bad_frame(str(exc))
            return None

    # -- the reader ------------------------------------------------------------------------

    def poll(self) -> None:
        """Wake the chip if needed, poll for a card once, report it, forget cards gone."""
        if self.firmware is None:
            self.begin()
        try:
            uid = self.read_passive_target()
        except _FrameLost:
            uid = None  # counted; the next poll asks again
        except Pn532Error:
            self.firmware = None  # the chip may have reset: wake it next time
            raise
        now = self._clock()
        if uid is not None:
            self._seen(uid, now)
        self.check_removed(now)

    def close(self) -> None:
        super().close()
        self.serial.close()
