"""The relay that lets a tool be switched on.

Fail-safe by construction: the relay is off when the object is made, when it is closed,
when the interpreter exits (also after an uncaught exception) and when the object is
garbage-collected. Wire the tool through the relay's normally-open contact, so a Pi that
loses power, reboots or never started leaves the tool without power too (docs/wiring.md).

A process stopped by SIGTERM (systemd) runs no exit handlers unless the program turns the
signal into ``SystemExit``; ``peershop agent`` does, and so should any other owner.
"""

from __future__ import annotations

import atexit
import functools
import logging
import threading
import weakref
from collections.abc import Callable

from gpiozero import OutputDevice

log = logging.getLogger(__name__)


def _cut(device: OutputDevice) -> None:
    # Runs at exit or collection: drive the relay off, then let the pin go.
    try:
        if not device.closed:
            device.off()
            device.close()
    except Exception:
        log.exception("could not switch the interlock relay off")


def _release(device: OutputDevice, at_exit: Callable[[], None]) -> None:
    _cut(device)
    atexit.unregister(at_exit)


class Interlock:
    """A relay that powers a tool while :attr:`is_enabled`.

    :param pin: the GPIO (BCM number by default) driving the relay board's IN.
    :param active_high: ``False`` for the common relay boards whose input is active-low
        (the relay clicks on when IN is pulled to ground).
    :param no_cut_while_busy: a callable that says whether the tool is busy (cutting now);
        while it returns true, :meth:`disable` does not cut but logs a warning and leaves
        the cut pending until :meth:`busy_changed` finds the tool no longer busy. Lets a
        cut finish instead of stopping a spindle mid-work (as Fabman's bridge does).
    :param pin_factory: gpiozero pin factory; ``None`` for the default.

    Example::

        lock = Interlock(5, active_high=False)
        lock.enable()                               # member granted: the tool gets power
        lock.is_enabled                             # True
        lock.disable()                              # session over: power cut
    """

    def __init__(
        self,
        pin: int | str,
        *,
        active_high: bool = True,
        no_cut_while_busy: Callable[[], bool] | None = None,
        pin_factory=None,
    ) -> None:
        self._relay = OutputDevice(
            pin, active_high=active_high, initial_value=False, pin_factory=pin_factory
        )
        self._is_busy = no_cut_while_busy
        self._cut_pending = False
        self._lock = threading.RLock()
        # Off at exit: registered after gpiozero's own exit handler, so it runs first
        # (atexit is last-in first-out). gpiozero's handler only releases the pin, and a
        # released line may keep its level, so the relay must be driven off before that.
        self._at_exit = functools.partial(_cut, self._relay)
        atexit.register(self._at_exit)
        # Off when an Interlock is dropped without close(); close() runs the same.
        self._finalizer = weakref.finalize(self, _release, self._relay, self._at_exit)
        self._finalizer.atexit = False

    @property
    def is_enabled(self) -> bool:
        """Whether the relay lets the tool have power."""
        return not self._relay.closed and bool(self._relay.value)

    @property
    def is_cut_pending(self) -> bool:
        """:meth:`disable` was called while the tool was busy; the cut waits for idle."""
        return self._cut_pending

    @property
    def closed(self) -> bool:
        return self._relay.closed

    def enable(self) -> None:
        """Give the tool power; cancels a pending cut."""
        with self._lock:
            self._cut_pending = False
            self._relay.on()

    def disable(self, *, force: bool = False) -> bool:
        """Cut the tool's power; returns whether it was cut now.

        With ``no_cut_while_busy`` and a busy tool the cut is deferred (``False``) unless
        ``force`` (lock-out, emergency) is true.
        """
        with self._lock:
            if not force and self.is_enabled and self._busy():
                if not self._cut_pending:
                    log.warning("tool is busy: the interlock cuts once it is idle")
                self._cut_pending = True
                return False
            self._cut_pending = False
            self._relay.off()
            return True

    def busy_changed(self, busy: bool | None = None) -> None:
        """Tell the interlock the busy state may have changed; a pending cut happens if idle.

        ``busy`` is the new state if the caller knows it (e.g. from
        ``CurrentSensor.when_idle``); otherwise the ``no_cut_while_busy`` callable is asked.
        """
        with self._lock:
            if not self._cut_pending:
                return
            if busy is None:
                busy = self._busy()
            if not busy:
                log.info("tool is idle: cutting the interlock as asked")
                self._cut_pending = False
                self._relay.off()

    def _busy(self) -> bool:
        if self._is_busy is None:
            return False
        try:
            return bool(self._is_busy())
        except Exception:
            # Not knowing whether the tool is busy must not keep it powered.
            log.exception("busy check failed; cutting the interlock anyway")
            return False

    def close(self) -> None:
        """Switch the relay off and release the pin. Safe to call twice."""
        with self._lock:
            self._cut_pending = False
            self._finalizer()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        if self.closed:
            return "<Interlock closed>"
        state = "enabled" if self.is_enabled else "disabled"
        if self._cut_pending:
            state += ", cut pending"
        return f"<Interlock {state} on {self._relay.pin}>"
