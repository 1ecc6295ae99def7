"""The long-running commands (hub, agent, bridge) stop on SIGTERM whichever thread the
kernel hands it to.  Python runs signal handlers only in the main thread; a main thread
asleep in a long lock wait used to sleep on (up to an hour) when SIGTERM landed on the
MQTT or reader thread, and systemd then had to kill the process."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.helpers import REPO

PROGRAM = textwrap.dedent(
    """
    import signal, sys, threading, time
    from hub import systemd

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def another_thread():
        # once the main thread sleeps in serve_until (nothing to await from outside it),
        # the signal lands on this thread, not on the main one
        time.sleep(0.5)
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)

    threading.Thread(target=another_thread).start()
    systemd.serve_until(stop, lambda: True)
    print("stopped")
    """
)


def test_sigterm_on_another_thread_still_stops_the_main_loop():
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,  # without the fix the main thread sleeps for the watchdog's hour
        check=False,
    )
    assert (done.returncode, done.stdout.strip()) == (0, "stopped"), done.stderr
