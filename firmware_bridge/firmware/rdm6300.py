"""RDM6300 125 kHz reader for node firmware: UART frames in, card presentations out.

The module sends ``0x02``, 10 hex digits (version byte + 4 tag bytes), 2 hex digits of
their XOR, ``0x03`` (9600 8N1), and repeats the frame while the card stays in the
field.  This is the firmware's own small copy of ``devices/rdm6300.py`` (which runs on
a Pi with pyserial and cannot be imported under MicroPython); the uid it reports is the
same 10 uppercase hex digits.

>>> reader = Rdm6300()
>>> reader.feed(b"\\x020F00C1D1E2FD\\x03", 0)
['0F00C1D1E2']
>>> reader.feed(b"\\x020F00C1D1E2FD\\x03", 100), reader.removed(400), reader.removed(700)
([], [], ['0F00C1D1E2'])
"""

STX = 0x02
ETX = 0x03
HOLD_MS = 500  # a card unseen this long has left the reader
_HEX = b"0123456789ABCDEF"


def _subtract(a, b):
    return a - b


class Rdm6300:
    """Parses the byte stream and tracks which card is on the reader; pure, no I/O.

    :meth:`feed` returns the uid of each new presentation once (a card held on the
    reader repeats its frame, which is not a new badge); :meth:`removed` returns the
    uids that have not been seen for ``hold_ms``.  Bad frames are dropped and counted
    in :attr:`bad_frames`.
    """

    def __init__(self, hold_ms=HOLD_MS, ticks_diff=None):
        self.hold_ms = hold_ms
        self.bad_frames = 0
        self._diff = ticks_diff or _subtract
        self._body = None  # None: waiting for STX
        self._present = {}  # uid -> when last seen

    def feed(self, data, now):
        """Consume UART bytes read at ``now`` (ms); return uids newly presented."""
        new = []
        for byte in data:
            if byte == STX:
                if self._body:
                    self.bad_frames += 1  # cut short by the next frame
                self._body = bytearray()
            elif self._body is None:
                continue
            elif len(self._body) < 12:
                if byte in _HEX:
                    self._body.append(byte)
                else:
                    self.bad_frames += 1
                    self._body = None
            else:
                uid = self._finish(byte)
                self._body = None
                if uid is None:
                    continue
                if uid not in self._present:
                    new.append(uid)
                self._present[uid] = now
        return new

    def removed(self, now):
        """Uids not seen for ``hold_ms`` up to ``now``; each is reported once."""
        gone = []
        for uid in self._present:
            if self._diff(now, self._present[uid]) >= self.hold_ms:
                gone.append(uid)
        for uid in gone:
            del self._present[uid]
        return gone

    def _finish(self, last):
        if last != ETX:
            self.bad_frames += 1
            return None
        text = bytes(self._body).decode()
        checksum = 0
        for i in range(0, 10, 2):
            checksum ^= int(text[i : i + 2], 16)
        if checksum != int(text[10:12], 16):
            self.bad_frames += 1
            return None
        return text[:10]
