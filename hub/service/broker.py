"""A private Mosquitto: for `peershop run --private-broker`, the demo, tests and benches.

It listens on 127.0.0.1 only, keeps its persistence in its own folder, and is set up as
DESIGN.md asks of the hub's broker (TCP_NODELAY, queues large enough to lose nothing).

>>> broker = PrivateBroker(Path("/tmp/x"))  # doctest: +SKIP
>>> broker.start(); broker.port  # doctest: +SKIP
41893
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import threading
from pathlib import Path

from hub.errors import BrokerError

MOSQUITTO_CANDIDATES = ("mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


def find_mosquitto() -> str:
    for candidate in MOSQUITTO_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    raise BrokerError(
        "mosquitto is not installed: run the README's setup command, "
        "or `sudo apt-get install mosquitto`"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def broker_conf(port: int, workdir: Path, extra: str = "") -> str:
    # Started as root, Mosquitto drops to the "mosquitto" user and then cannot write its
    # persistence file into our folder: a restart would lose every queued message.  Keep
    # it the user we are.  (Mosquitto ignores `user` when not started as root.)
    user = [] if "user " in extra else [f"user {pwd.getpwuid(os.geteuid()).pw_name}"]
    return "\n".join(
        [
            f"listener {port} 127.0.0.1",
            *user,
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {workdir}/",
            "autosave_interval 1",
            # 0 is "no maximum": a hub that is down for a day must find every event.
            "max_queued_messages 0",
            "max_inflight_messages 100",
            "set_tcp_nodelay true",
            "log_dest stderr",  # unbuffered, unlike stdout on a pipe
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            extra,
            "",
        ]
    )


class PrivateBroker:
    """A Mosquitto process of our own, on a free (or given) loopback port."""

    def __init__(self, workdir: Path, port: int | None = None, extra_conf: str = ""):
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.extra_conf = extra_conf
        self.process: subprocess.Popen[str] | None = None
        self.log_lines: list[str] = []
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None

    @property
    def conf_path(self) -> Path:
        return self.workdir / "mosquitto.conf"

    def start(self, timeout: float = 15.0) -> PrivateBroker:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(broker_conf(self.port, self.workdir.resolve(), self.extra_conf))
        self._ready.clear()
        self.process = subprocess.Popen(
            [find_mosquitto(), "-c", str(self.conf_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read_log, args=(self.process,), daemon=True)
        self._reader.start()
        if not self._ready.wait(timeout) or self.process.poll() is not None:
            self.stop()
            tail = "\n".join(self.log_lines[-10:])
            raise BrokerError(f"mosquitto did not start on port {self.port}:\n{tail}")
        return self

    def _read_log(self, process: subprocess.Popen[str]) -> None:
        assert process.stderr is not None
        for line in process.stderr:
            self.log_lines.append(line.rstrip())
            if len(self.log_lines) > 5000:
                del self.log_lines[:1000]
            if " running" in line:  # "mosquitto version X running": accepting now
                self._ready.set()
        self._ready.set()  # the process ended; start() checks poll()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop gracefully: Mosquitto saves its persistence file on SIGTERM."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reap()

    def kill(self) -> None:
        """SIGKILL: what a power cut does to the broker (unsaved state is lost)."""
        if self.process and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self._reap()

    def _reap(self) -> None:
        """After the process ended: let the log reader reach EOF, then close the pipe."""
        if self.process is not None:
            if self._reader is not None:
                self._reader.join(5)
            if self.process.stderr is not None:
                self.process.stderr.close()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> PrivateBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
