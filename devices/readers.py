"""What every badge reader shares: uid checking, per-tag hold, callbacks, the poll thread.

A reader driver turns its wire format into uids and hands each to :meth:`BadgeReader._seen`.
The base class then does the rest the same way for every reader:

* the uid is checked against docs/device-protocol.md (uppercase hex, 4 to 10 bytes); one that fails
  is counted in :attr:`~BadgeReader.bad_frames` and dropped, never reported;
* a tag seen again within ``hold_time`` of its last sighting is the same presentation
  (125 kHz readers repeat their frame while a tag is held, and a polled reader sees it at
  every poll), so :attr:`~BadgeReader.when_badge` fires once per presentation;
* once a tag has not been seen for ``hold_time`` it has left the reader and
  :attr:`~BadgeReader.when_removed` fires (the card-present session policy needs this);
* a callback that raises is logged and never stops the reader (STYLE.md rule 8).

Time comes from ``clock`` (``time.monotonic`` by default), so tests move time by hand.
"""

from __future__ import annotations

import abc
import logging
import threading
import time
from collections.abc import Callable

from hub.contract.messages import normalize_uid
from hub.errors import ContractError

log = logging.getLogger(__name__)

Clock = Callable[[], float]
UidCallback = Callable[[str], object]


class BadgeReader(abc.ABC):
    """Base class of the badge readers; not used directly.

    Subclasses implement :meth:`poll`, which waits briefly for input and handles what
    arrived. With ``background=True`` a daemon thread calls it until :meth:`close`.
    """

    def __init__(self, *, hold_time: float, clock: Clock = time.monotonic) -> None:
        if hold_time < 0:
            raise ValueError(f"hold_time must be >= 0, got {hold_time}")
        self.hold_time = hold_time
        #: Called with the uid (uppercase hex) once per presentation of a tag.
        self.when_badge: UidCallback | None = None
        #: Called with the uid once a tag has not been seen for ``hold_time``.
        self.when_removed: UidCallback | None = None
        #: Frames dropped because they were malformed or failed a check.
        self.bad_frames = 0
        self._clock = clock
        self._present: dict[str, float] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- state -------------------------------------------------------------------------

    @property
    def present(self) -> tuple[str, ...]:
        """The uids on the reader now, oldest first."""
        with self._lock:
            return tuple(self._present)

    @property
    def closed(self) -> bool:
        return self._stop.is_set()

    # -- for subclasses ----------------------------------------------------------------

    def _seen(self, uid: str, now: float | None = None) -> None:
        """A frame with a valid checksum carried ``uid``: report it once per presentation."""
        try:
            uid = normalize_uid(uid)
        except ContractError as exc:
            self._bad_frame(str(exc))
            return
        if now is None:
            now = self._clock()
        self.check_removed(now)
        with self._lock:
            new = uid not in self._present
            self._present[uid] = now
        if new:
            self._call(self.when_badge, uid)

    def _bad_frame(self, reason: str) -> None:
        self.bad_frames += 1
        log.debug("%s dropped a bad frame: %s", type(self).__name__, reason)

    def _call(self, callback: UidCallback | None, uid: str) -> None:
        if callback is None:
            return
        try:
            callback(uid)
        except Exception:
            log.exception("%s callback failed for uid %s", type(self).__name__, uid)

    def _start(self, background: bool) -> None:
        if background:
            self._thread = threading.Thread(target=self._run, name=type(self).__name__, daemon=True)
            self._thread.start()

    #: seconds the background loop waits between polls; readers whose poll blocks on
    #: their port keep 0.
    _poll_interval = 0.0

    def _run(self) -> None:
        while not self._stop.wait(self._poll_interval):
            try:
                self.poll()
            except Exception:
                if self._stop.is_set():
                    break
                log.exception("%s poll failed; retrying in 1 s", type(self).__name__)
                self._stop.wait(1.0)

    # -- public ------------------------------------------------------------------------

    def check_removed(self, now: float | None = None) -> list[str]:
        """Forget tags not seen for ``hold_time``, fire :attr:`when_removed` for each.

        :meth:`poll` calls this; returns the uids that left.
        """
        if now is None:
            now = self._clock()
        with self._lock:
            gone = [u for u, seen in self._present.items() if now - seen >= self.hold_time]
            for uid in gone:
                del self._present[uid]
        for uid in gone:
            self._call(self.when_removed, uid)
        return gone

    @abc.abstractmethod
    def poll(self) -> None:
        """Wait briefly for input and handle whatever arrived (the background loop's body)."""

    def close(self) -> None:
        """Stop the background thread and release the hardware. Safe to call twice."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
