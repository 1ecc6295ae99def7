"""Serial framing of docs/serial-protocol.md: one JSON object per line, guarded by a CRC-16.

A frame is the compact JSON of one object, ``*``, the CRC-16/CCITT-FALSE of the JSON
bytes as 4 uppercase hex digits, and ``\\n``; at most 512 bytes in all::

    {"t":"ack","seq":17}*3AD2\\n

This one module serves both ends of the wire: the bridge imports it under CPython as
``firmware_bridge.framing``, and node firmware runs the same file under MicroPython
(copied to the board as ``framing.py``).  So it uses only ``json`` and ``sys``, no
dataclasses, no typing, no f-strings, and plain ``ValueError``/``TypeError``.

>>> encode_frame({"t": "ack", "seq": 17})
b'{"t":"ack","seq":17}*3AD2\\n'
>>> decoder = FrameDecoder()
>>> decoder.feed(b'noise\\n{"t":"ack","seq":17}*3AD2\\n{"t":"ack"')
[{'t': 'ack', 'seq': 17}]
>>> decoder.counters["no_crc"], decoder.buffered
(1, 10)
"""

import json
import sys

MAX_LINE = 512  # bytes of a frame, its newline included
RAW_KEEP = 80  # bytes of a rejected line kept for the dead letter

# Why a line was dropped, in the order the decoder checks them.
REASONS = ("too_long", "no_crc", "bad_crc", "bad_json", "not_object")

_HEX = b"0123456789ABCDEF"
_MICROPYTHON = sys.implementation.name == "micropython"


def _crc_table():
    table = []
    for high in range(256):
        crc = high << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16_ccitt_false(data: bytes) -> int:
    """CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, no final xor.

    >>> hex(crc16_ccitt_false(b"123456789"))
    '0x29b1'
    """
    crc = 0xFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = ((crc << 8) & 0xFF00) ^ table[(crc >> 8) ^ byte]
    return crc


def _reject_constant(name):
    raise ValueError(name + " is not JSON")


if _MICROPYTHON:

    def dumps(obj) -> str:
        """Compact JSON text of ``obj`` (MicroPython: no NaN check, UTF-8 left as is)."""
        try:
            return json.dumps(obj, separators=(",", ":"))
        except TypeError:  # MicroPython before 1.20 has no separators
            return json.dumps(obj)

    def loads(text: str):
        """Parse JSON text; MicroPython's parser is laxer than CPython's, the CRC is not."""
        return json.loads(text)

else:

    def dumps(obj) -> str:
        """Compact, ASCII-only JSON text of ``obj``; NaN and infinities are refused."""
        return json.dumps(obj, separators=(",", ":"), allow_nan=False)

    def loads(text: str):
        """Parse JSON text strictly: NaN and Infinity are not JSON."""
        return json.loads(text, parse_constant=_reject_constant)


def encode_frame(obj) -> bytes:
    """The line that carries ``obj``: compact JSON, ``*``, CRC as 4 uppercase hex, ``\\n``.

    Raises ``TypeError`` for anything but a dict and ``ValueError`` when the frame would
    be longer than 512 bytes or the object holds something JSON cannot carry.
    """
    if not isinstance(obj, dict):
        raise TypeError("a frame carries a JSON object, not " + type(obj).__name__)
    body = dumps(obj).encode()
    frame = body + b"*" + f"{crc16_ccitt_false(body):04X}".encode() + b"\n"
    if len(frame) > MAX_LINE:
        raise ValueError(f"frame is {len(frame)} bytes, over the {MAX_LINE}-byte limit of a line")
    return frame


class Rejection:
    """A line the decoder dropped: ``reason`` (one of :data:`REASONS`), the first bytes
    of the line as ``raw`` (at most ``RAW_KEEP``), and the line's full ``length``."""

    __slots__ = ("length", "raw", "reason")

    def __init__(self, reason: str, raw: bytes, length: int):
        self.reason = reason
        self.raw = raw
        self.length = length

    def __repr__(self):
        return f"Rejection({self.reason!r}, {self.raw!r}, {self.length})"


class FrameDecoder:
    """Turns a byte stream into the objects of its intact frames, in order; pure, no I/O.

    Feed it whatever the port returned, in chunks of any size.  A line is dropped and
    counted in :attr:`counters` under its reason when it is longer than 512 bytes
    (``too_long``), has no ``*`` and 4 characters at its end (``no_crc``), a CRC that is
    not 4 uppercase hex digits or does not match (``bad_crc``), JSON that does not parse
    (``bad_json``), or JSON that is not an object (``not_object``); ``accepted`` counts
    the good ones.  Each drop is also passed to ``on_reject`` (a :class:`Rejection`),
    which is called inside :meth:`feed` and must not raise.  Decoding picks up again at
    the next newline.  An over-long line is skipped without being buffered, so memory
    stays under 512 bytes whatever arrives.  A ``\\r`` before the newline is ignored
    (MicroPython's ``print`` and terminals send ``\\r\\n``), and so are empty lines.
    """

    def __init__(self, on_reject=None, max_line: int = MAX_LINE, keep: int = RAW_KEEP):
        self.on_reject = on_reject
        self.max_line = max_line
        self.keep = keep
        self.counters = {"accepted": 0}
        for reason in REASONS:
            self.counters[reason] = 0
        self._buf = bytearray()
        self._skipped = -1  # length of the over-long line being skipped, -1 when none
        self._head = b""  # the first bytes of that line, for its rejection

    @property
    def buffered(self) -> int:
        """Bytes held of a line whose newline has not arrived yet."""
        return len(self._buf)

    def feed(self, data: bytes) -> list:
        """Consume ``data``; return the objects of the frames it completed, in order."""
        objects = []
        start = 0
        end = len(data)
        while start < end:
            newline = data.find(b"\n", start)
            if newline < 0:
                self._take(data[start:])
                break
            self._take(data[start:newline])
            self._finish_line(objects)
            start = newline + 1
        return objects

    def _take(self, chunk):
        if self._skipped >= 0:
            self._skipped += len(chunk)
            return
        # The line may still end in "\r", which does not count: over max_line bytes
        # before the newline, it can never fit.
        if len(self._buf) + len(chunk) > self.max_line:
            self._head = bytes((bytes(self._buf) + bytes(chunk[: self.keep]))[: self.keep])
            self._skipped = len(self._buf) + len(chunk)
            self._buf = bytearray()
            return
        self._buf.extend(chunk)

    def _finish_line(self, objects):
        if self._skipped >= 0:
            length = self._skipped
            head = self._head
            self._skipped = -1
            self._head = b""
            self._reject("too_long", head, length)
            return
        line = bytes(self._buf)
        self._buf = bytearray()
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            return
        obj = self._parse(line)
        if obj is not None:
            self.counters["accepted"] += 1
            objects.append(obj)

    def _parse(self, line):
        # A frame fills at most max_line bytes with its newline.
        if len(line) >= self.max_line:
            return self._reject("too_long", line, len(line))
        star = line.rfind(b"*")
        if star < 0 or len(line) - star != 5:
            return self._reject("no_crc", line, len(line))
        body = line[:star]
        for char in line[star + 1 :]:
            if char not in _HEX:
                return self._reject("bad_crc", line, len(line))
        if int(line[star + 1 :].decode(), 16) != crc16_ccitt_false(body):
            return self._reject("bad_crc", line, len(line))
        try:
            obj = loads(body.decode("utf-8"))
        except (ValueError, UnicodeError, RuntimeError):
            # RuntimeError: CPython's RecursionError on absurd nesting.
            return self._reject("bad_json", line, len(line))
        if not isinstance(obj, dict):
            return self._reject("not_object", line, len(line))
        return obj

    def _reject(self, reason, raw, length):
        self.counters[reason] += 1
        if self.on_reject is not None:
            self.on_reject(Rejection(reason, bytes(raw[: self.keep]), length))
        return None
