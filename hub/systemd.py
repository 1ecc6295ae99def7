"""Tell systemd how the process is doing (``sd_notify``), with a plain socket.

Under a unit with ``Type=notify`` systemd waits for ``READY=1`` before it counts the
service as started; with ``WatchdogSec=`` it restarts the service when ``WATCHDOG=1``
stops arriving.  Outside systemd (no ``$NOTIFY_SOCKET``) every call does nothing, so
the same code runs in a terminal, in tests and under systemd.

>>> notify("READY=1", env={})
False
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Mapping


def notify(state: str, *, env: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. ``"READY=1"``) to systemd; ``True`` if it was sent."""
    env = os.environ if env is None else env
    address = env.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket: a leading NUL byte
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.connect(address)
            sock.sendall(state.encode())
        except OSError:
            return False
    return True


def ready(*, env: Mapping[str, str] | None = None) -> bool:
    """The service is up: connected and taking messages."""
    return notify("READY=1", env=env)


def stopping(*, env: Mapping[str, str] | None = None) -> bool:
    """The service is shutting down on purpose (no watchdog restart meanwhile)."""
    return notify("STOPPING=1", env=env)


def watchdog(*, env: Mapping[str, str] | None = None) -> bool:
    """Still alive; send more often than :func:`watchdog_interval`."""
    return notify("WATCHDOG=1", env=env)


def watchdog_interval(*, env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between pings this process should send (half of ``WatchdogSec=``).

    ``None`` when no watchdog is set for this process.
    """
    env = os.environ if env is None else env
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None
    return usec / 2_000_000


def serve_until(stop: threading.Event, alive: Callable[[], bool]) -> None:
    """Block until ``stop`` is set, feeding the watchdog every interval while ``alive()``.

    The wait wakes every second.  Python runs a signal handler only in the main thread,
    and only once that thread runs again; the kernel may hand SIGTERM to another thread
    (the MQTT or reader thread) while the main one sleeps in a lock, and the handler that
    sets ``stop`` would then wait for the next wake-up: up to the watchdog interval, an
    hour without one, while systemd waits to kill the process."""
    interval = watchdog_interval() or 3600.0
    next_ping = time.monotonic() + interval
    while not stop.wait(1.0):
        if time.monotonic() >= next_ping:
            next_ping = time.monotonic() + interval
            if alive():
                watchdog()
