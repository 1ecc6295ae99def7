"""RDM6300-style 125 kHz (EM4100) readers on a UART.

The module sends one 14-byte frame per read, and repeats it while the tag stays in the
field::

    0x02 | 10 hex digits: 2 version + 8 tag | 2 hex digits: XOR of the 5 data bytes | 0x03

The uid reported is the 5 data bytes (version and tag, 10 hex digits), so two tags that
differ only in the version byte stay apart; ``include_version=False`` reports only the
4 tag bytes, which is what a keyboard-wedge EM4100 reader prints in decimal.

>>> p = Rdm6300Parser()
>>> p.feed(b"noise\\x020F00C1D1E2FD\\x03")
['0F00C1D1E2']
>>> p.bad_frames
0
"""

from __future__ import annotations

import logging
import time

import serial

from devices.readers import BadgeReader, Clock

log = logging.getLogger(__name__)

STX = 0x02
ETX = 0x03
BODY_LEN = 12  # 10 data digits + 2 checksum digits
HEX_DIGITS = frozenset(b"0123456789ABCDEF")


def rdm6300_frame(data: bytes) -> bytes:
    """The frame an RDM6300 sends for 5 data bytes (version + tag), checksum included."""
    if len(data) != 5:
        raise ValueError(f"an RDM6300 frame carries 5 bytes, got {len(data)}")
    checksum = 0
    for byte in data:
        checksum ^= byte
    return bytes([STX]) + f"{data.hex().upper()}{checksum:02X}".encode() + bytes([ETX])


class Rdm6300Parser:
    """Turns a byte stream from an RDM6300 into uids; pure, no I/O.

    Noise between frames is skipped. A frame is dropped and counted in :attr:`bad_frames`
    when it is cut short by a new ``0x02``, holds a byte that is not an uppercase hex
    digit, lacks its ``0x03``, or fails the XOR checksum; the parser then resynchronises
    on the next ``0x02``. A single flipped bit anywhere in a frame never yields a uid.
    """

    def __init__(self, *, include_version: bool = True) -> None:
        self.include_version = include_version
        self.bad_frames = 0
        self._body: bytearray | None = None  # None: waiting for STX

    def feed(self, data: bytes) -> list[str]:
        """Consume bytes, return the uids of the frames they completed, in order."""
        uids: list[str] = []
        for byte in data:
            if byte == STX:
                if self._body:
                    self.bad_frames += 1  # cut short by the next frame's start
                self._body = bytearray()
            elif self._body is None:
                continue  # noise between frames
            elif len(self._body) < BODY_LEN:
                if byte in HEX_DIGITS:
                    self._body.append(byte)
                else:
                    self.bad_frames += 1
                    self._body = None
            else:
                uid = self._finish(byte)
                if uid is not None:
                    uids.append(uid)
                self._body = None
        return uids

    def _finish(self, last: int) -> str | None:
        assert self._body is not None
        if last != ETX:
            self.bad_frames += 1
            return None
        data = bytes.fromhex(self._body[:10].decode())
        checksum = 0
        for byte in data:
            checksum ^= byte
        if checksum != int(self._body[10:], 16):
            self.bad_frames += 1
            return None
        return (data if self.include_version else data[1:]).hex().upper()


class Rdm6300Reader(BadgeReader):
    """An RDM6300 125 kHz reader on a serial port (9600 8N1).

    :param port: a device path (``/dev/serial0``) or any pyserial URL (``loop://``).
    :param hold_time: a tag seen again within this many seconds is the same presentation;
        :attr:`when_removed` fires once it has not been seen for this long.
    :param include_version: report 5 bytes (version + tag) or only the 4 tag bytes.
    :param background: read in a daemon thread; with ``False`` call :meth:`poll` yourself.
    :param clock: seconds, monotonic; injectable for tests.

    Example::

        reader = Rdm6300Reader("/dev/serial0")
        reader.when_badge = lambda uid: print("badge", uid)
        reader.when_removed = lambda uid: print("gone", uid)
    """

    def __init__(
        self,
        port: str = "/dev/serial0",
        *,
        hold_time: float = 0.5,
        include_version: bool = True,
        background: bool = True,
        clock: Clock = time.monotonic,
        read_timeout: float = 0.05,
    ) -> None:
        super().__init__(hold_time=hold_time, clock=clock)
        self.parser = Rdm6300Parser(include_version=include_version)
        self.serial = serial.serial_for_url(port, 9600, timeout=read_timeout)
        self._start(background)

    def poll(self) -> None:
        """Read what the port has (waiting at most ``read_timeout``) and report tags."""
        data = self.serial.read(max(1, self.serial.in_waiting))
        now = self._clock()
        before = self.parser.bad_frames
        uids = self.parser.feed(data)
        self.bad_frames += self.parser.bad_frames - before
        for uid in uids:
            self._seen(uid, now)
        self.check_removed(now)

    def close(self) -> None:
        super().close()
        self.serial.close()
