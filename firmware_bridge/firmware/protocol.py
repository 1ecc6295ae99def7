"""The node side of docs/serial-protocol.md, for MicroPython tool nodes and their CPython tests.

:class:`Node` speaks the serial protocol: it says ``hello``, numbers events by
``boot``/``seq``, keeps at most 8 of them unacknowledged on the wire and resends each
after 500 ms until the bridge acks it, stores every event in flash until then (so a
reboot replays them with ``replay: true`` and their first ``boot``/``seq``), acks
commands by ``hseq`` and hands each command to the application once.

Nothing here touches hardware or real time: the frame writer, the millisecond clock
and the storage are passed in.  ``main.py`` wires it to a board; the tests wire it to
a fake link and a fake clock.

>>> frames = []
>>> node = Node("lathe-node", "1.0", frames.append, MemoryStore(), lambda: 0)
>>> node.start()
>>> node.send_event("badge", uid="0F00C1D1E2")
0
>>> node.feed(b'{"t":"ack","seq":0}*3CB7\\n')
>>> node.unacked, node.queued
(0, 0)
"""

try:  # CPython: the host package
    from firmware_bridge import framing
except ImportError:  # MicroPython: framing.py copied next to this file
    import framing

import os

WINDOW = 8  # events on the wire without an ack
RESEND_MS = 500  # an unacked event (the bridge: a command) goes again after this
MAX_PENDING = 200  # events kept for the bridge; beyond it the oldest are dropped
REPLAY_AFTER_MS = 10000  # an event this old when (re)sent is marked replay
HSEQ_MEMORY_MS = 30000  # how long a command's hseq is remembered to drop its resends
HSEQ_MEMORY = 32  # at most this many hseqs remembered
COMPACT_AFTER = 64  # outbox records beyond the pending events before a rewrite

BOOT_FILE = "boot"
OUTBOX_FILE = "outbox"


class MemoryStore:
    """Storage that forgets at power-off; for tests and nodes without a filesystem."""

    def __init__(self):
        self.files = {}

    def read(self, name):
        return self.files.get(name)

    def write(self, name, text):
        self.files[name] = text

    def append(self, name, text):
        self.files[name] = self.files.get(name, "") + text


class FileStore:
    """Storage in a directory: the flash filesystem on a board, a temp dir in tests.

    ``write`` replaces a file through a temporary file and a rename, so a power cut
    leaves the old or the new content, never a torn one; ``append`` adds to the end
    (a torn last line is skipped when read back).
    """

    def __init__(self, directory):
        self.directory = directory.rstrip("/") or "/"
        try:
            os.mkdir(self.directory)
        except OSError:
            pass  # exists already

    def _path(self, name):
        return self.directory + "/" + name

    def read(self, name):
        try:
            with open(self._path(name)) as f:
                return f.read()
        except OSError:
            return None

    def write(self, name, text):
        temp = self._path(name + ".tmp")
        with open(temp, "w") as f:
            f.write(text)
        try:
            os.rename(temp, self._path(name))
        except OSError:  # FAT will not rename onto an existing file; littlefs does
            os.remove(self._path(name))
            os.rename(temp, self._path(name))

    def append(self, name, text):
        with open(self._path(name), "a") as f:
            f.write(text)


class _Outgoing:
    """One event on its way to the bridge."""

    __slots__ = ("boot", "created", "replay", "sent", "seq", "text")

    def __init__(self, boot, seq, text, created, replay):
        self.boot = boot
        self.seq = seq
        self.text = text  # the event's compact JSON, without "t" and "replay"
        self.created = created  # clock reading, None for events from an earlier boot
        self.replay = replay
        self.sent = None  # clock reading of the last send, None while queued


def _subtract(a, b):
    return a - b


class Node:
    """A tool node's end of the serial link.

    :param node_id: the device id, as in docs/device-protocol.md (``[a-z0-9][a-z0-9-]{0,62}``).
    :param fw: the firmware version sent in ``hello``.
    :param write: called with each frame's bytes (``sys.stdout.buffer.write``, a UART).
    :param store: :class:`FileStore` on a board; anything with ``read``/``write``/``append``.
    :param now_ms: a millisecond clock (``time.ticks_ms`` on a board).
    :param ticks_diff: ``ticks_diff(a, b)`` is ``a - b`` for that clock; pass
        ``time.ticks_diff`` with ``ticks_ms``, which wraps around.
    :param on_command: called with each command once, as the ``cmd`` object of
        docs/device-protocol.md (``{"re": 17, "action": "grant", ...}``, without ``t``/``hseq``).
    :param kind: optional list for the ``kind`` of the status birth (``["reader"]``).
    :param wall_clock: for a node that knows the time (an RTC set by NTP), a callable
        giving it in Unix seconds: ``hello`` and every event then carry it as ``ts``, and the hub
        corrects the replayed events by how far it is off.  None (the default): the node
        has no clock, says no ``ts``, and the hub's receive time counts.

    Call :meth:`start` once, :meth:`feed` with the bytes that arrive from the bridge,
    :meth:`poll` every few milliseconds, and :meth:`send_event` for every event.
    """

    def __init__(
        self,
        node_id,
        fw,
        write,
        store,
        now_ms,
        ticks_diff=None,
        on_command=None,
        kind=None,
        window=WINDOW,
        resend_ms=RESEND_MS,
        max_pending=MAX_PENDING,
        replay_after_ms=REPLAY_AFTER_MS,
        wall_clock=None,
    ):
        if max_pending < window:
            raise ValueError("max_pending must hold at least one window of events")
        self.node_id = node_id
        self.fw = fw
        self.kind = kind
        self.boot = None
        self.window = window
        self.resend_ms = resend_ms
        self.max_pending = max_pending
        self.replay_after_ms = replay_after_ms
        self.on_command = on_command
        self.wall_clock = wall_clock
        self.decoder = framing.FrameDecoder()
        self.counters = {
            "sent": 0,
            "resent": 0,
            "acked": 0,
            "stray_acks": 0,
            "commands": 0,
            "duplicate_commands": 0,
            "command_errors": 0,
            "ignored": 0,
            "dropped": 0,
        }
        self._write = write
        self._store = store
        self._now = now_ms
        self._diff = ticks_diff or _subtract
        self._next_seq = 0
        self._inflight = []  # sent, waiting for an ack, oldest first
        self._queue = []  # waiting for room in the window, oldest first
        self._hseqs = []  # [hseq, seen_at] of recent commands, oldest first
        self._log_records = 0  # records in the outbox file

    # -- life cycle -------------------------------------------------------------------

    def start(self):
        """Count this boot in storage, say hello, and replay what an earlier boot left."""
        restored = self._load_outbox()
        last_boot = -1
        text = self._store.read(BOOT_FILE)
        if text:
            try:
                last_boot = int(text.strip())
            except ValueError:
                pass
        for entry in restored:  # a lost boot file must never reuse an old boot number
            if entry.boot > last_boot:
                last_boot = entry.boot
        self.boot = last_boot + 1
        self._store.write(BOOT_FILE, str(self.boot))
        if len(restored) > self.max_pending:
            self.counters["dropped"] += len(restored) - self.max_pending
            restored = restored[-self.max_pending :]
        self._queue = restored
        self._rewrite_outbox()
        self.send_hello()
        self._fill_window(self._now())

    def send_hello(self):
        """Send ``hello`` (at start, and again when the bridge asks with ``rebirth``)."""
        hello = {"t": "hello", "id": self.node_id, "boot": self.boot, "fw": self.fw}
        if self.kind:
            hello["kind"] = list(self.kind)
        if self.wall_clock is not None:
            hello["ts"] = self._time()
        self._write(framing.encode_frame(hello))

    def _time(self):
        return round(self.wall_clock(), 3)

    # -- events -----------------------------------------------------------------------

    def send_event(self, event_type, **fields):
        """Queue an event of docs/device-protocol.md and send it when the window has room.

        Returns its ``seq``.  ``fields`` are the type's own (``uid=``, ``w=``, ``ts=`` …).
        Raises ``ValueError`` if the event would not fit in one frame; nothing is
        stored or numbered then.
        """
        if self.boot is None:
            raise ValueError("call start() before sending events")
        event = {}
        if self.wall_clock is not None:
            event["ts"] = self._time()
        for key in fields:
            event[key] = fields[key]
        event["type"] = event_type
        event["boot"] = self.boot
        event["seq"] = self._next_seq
        text = framing.dumps(event)
        self._frame(text, True)  # the longest form it can take must fit in a line
        entry = _Outgoing(self.boot, self._next_seq, text, self._now(), False)
        self._next_seq += 1
        self._store.append(OUTBOX_FILE, "E " + text + "\n")
        self._log_records += 1
        self._queue.append(entry)
        if len(self._inflight) + len(self._queue) > self.max_pending:
            dropped = self._queue.pop(0)
            self.counters["dropped"] += 1
            self._forget(dropped)
        self._fill_window(self._now())
        return entry.seq

    @property
    def unacked(self):
        """Events sent and not yet acknowledged (at most the window, 8)."""
        return len(self._inflight)

    @property
    def queued(self):
        """Events waiting for room in the window."""
        return len(self._queue)

    def waiting_ms(self):
        """How long the oldest unacked event has waited for its ack; 0 when none has."""
        if not self._inflight:
            return 0
        oldest = self._inflight[0]
        if oldest.created is None:
            return 0 if oldest.sent is None else self._diff(self._now(), oldest.sent)
        return self._diff(self._now(), oldest.created)

    def poll(self):
        """Resend every event whose ack is overdue; call this every few milliseconds."""
        now = self._now()
        for entry in self._inflight:
            if self._diff(now, entry.sent) >= self.resend_ms:
                self._send(entry, now)
                self.counters["resent"] += 1
        self._fill_window(now)

    # -- what comes from the bridge ---------------------------------------------------

    def feed(self, data):
        """Handle the bytes that arrived from the bridge (any chunk size)."""
        for obj in self.decoder.feed(data):
            kind = obj.get("t")
            if kind == "ack" and "seq" in obj:
                self._on_ack(obj.get("boot"), obj["seq"])
            elif kind == "cmd":
                self._on_command(obj)
            else:
                self.counters["ignored"] += 1

    def _on_ack(self, boot, seq):
        if not _is_int(seq) or (boot is not None and not _is_int(boot)):
            self.counters["ignored"] += 1
            return
        # A bare ack names only seq: the window never holds two events with one seq,
        # so it is unambiguous there.  With a boot it may also clear a queued event.
        places = (self._inflight,) if boot is None else (self._inflight, self._queue)
        for place in places:
            for i in range(len(place)):
                entry = place[i]
                if entry.seq == seq and (boot is None or entry.boot == boot):
                    place.pop(i)
                    self.counters["acked"] += 1
                    self._forget(entry)
                    self._fill_window(self._now())
                    return
        self.counters["stray_acks"] += 1

    def _on_command(self, obj):
        hseq = obj.get("hseq")
        if not _is_int(hseq):
            self.counters["ignored"] += 1
            return
        # Ack every copy: the bridge resends until one of our acks gets through.
        self._write(framing.encode_frame({"t": "ack", "hseq": hseq}))
        now = self._now()
        while self._hseqs and (
            len(self._hseqs) >= HSEQ_MEMORY or self._diff(now, self._hseqs[0][1]) > HSEQ_MEMORY_MS
        ):
            self._hseqs.pop(0)
        for seen in self._hseqs:
            if seen[0] == hseq:
                self.counters["duplicate_commands"] += 1
                return
        self._hseqs.append([hseq, now])
        self.counters["commands"] += 1
        command = {}
        for key in obj:
            if key != "t" and key != "hseq":
                command[key] = obj[key]
        if command.get("action") == "rebirth":
            self.send_hello()
            for entry in self._inflight:
                self._send(entry, now)
        if self.on_command is None:
            return
        try:
            self.on_command(command)
        except Exception as exc:  # a bad command must not stop the node's loop
            self.counters["command_errors"] += 1
            self.send_event("fault", code="command_failed", msg=repr(exc)[:120])

    # -- internals --------------------------------------------------------------------

    def _frame(self, text, replay):
        obj = framing.loads(text)
        obj["t"] = "ev"
        if replay:
            obj["replay"] = True
        return framing.encode_frame(obj)

    def _send(self, entry, now):
        if not entry.replay and entry.created is not None:
            entry.replay = self._diff(now, entry.created) >= self.replay_after_ms
        self._write(self._frame(entry.text, entry.replay))
        entry.sent = now
        self.counters["sent"] += 1

    def _fill_window(self, now):
        while self._queue and len(self._inflight) < self.window:
            head = self._queue[0]
            for entry in self._inflight:
                if entry.seq == head.seq:
                    return  # wait, so that a bare {"t":"ack","seq":N} names one event
            self._queue.pop(0)
            self._inflight.append(head)
            self._send(head, now)

    def _forget(self, entry):
        """The event is with the broker (or dropped): strike it from the outbox."""
        if not self._inflight and not self._queue:
            self._rewrite_outbox()
        elif self._log_records > len(self._inflight) + len(self._queue) + COMPACT_AFTER:
            self._rewrite_outbox()
        else:
            self._store.append(OUTBOX_FILE, f"A {entry.boot} {entry.seq}\n")
            self._log_records += 1

    def _rewrite_outbox(self):
        lines = []
        for entry in self._inflight + self._queue:
            lines.append("E " + entry.text + "\n")
        self._store.write(OUTBOX_FILE, "".join(lines))
        self._log_records = len(lines)

    def _load_outbox(self):
        text = self._store.read(OUTBOX_FILE) or ""
        events = []
        done = {}
        for line in text.split("\n"):
            try:
                if line.startswith("E "):
                    event = framing.loads(line[2:])
                    boot = event["boot"]
                    seq = event["seq"]
                    if _is_int(boot) and _is_int(seq):
                        events.append(_Outgoing(boot, seq, line[2:], None, True))
                elif line.startswith("A "):
                    parts = line.split()
                    done[(int(parts[1]), int(parts[2]))] = True
            except (ValueError, KeyError, IndexError, TypeError):
                pass  # a line torn by a power cut
        pending = []
        for entry in events:
            if (entry.boot, entry.seq) not in done:
                pending.append(entry)
        return pending


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)
