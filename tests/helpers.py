"""Helpers shared by the MQTT tests: simulated devices, a listening client, hub processes
and commands, a reader for the database such a hub writes, a client of the web view's
event stream, and a browser-like client of the web server."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import text

from hub.contract.messages import event_topic
from hub.contract.mqtt import MqttLink, MqttSettings, Received
from hub.service.broker import free_port
from hub.shopfile.apply import apply_shop
from hub.shopfile.parse import parse_shop
from hub.store.db import make_engine, migrate, session_factory
from hub.store.models import Member

REPO = Path(__file__).resolve().parent.parent


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until it is truthy (for state in another process or a database)."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)


def event_payload(boot: int, seq: int, type: str = "power", **fields: Any) -> bytes:
    body: dict[str, Any] = {"boot": boot, "seq": seq, "type": type}
    if type == "power" and "w" not in fields:
        fields = {"w": float(seq % 1000), **fields}
    body.update(fields)
    return json.dumps(body, separators=(",", ":")).encode()


class Device:
    """A simulated MQTT device: publishes QoS 1 and waits for the broker's PUBACKs."""

    def __init__(self, port: int, device_id: str):
        self.device_id = device_id
        self.link = MqttLink(
            MqttSettings(port=port), f"dev-{device_id}-{uuid.uuid4().hex[:6]}", persistent=False
        )
        self.link.start()
        assert self.link.wait_connected(10), f"device {device_id} could not connect"
        self._pending: list[Any] = []

    def send(self, payload: bytes, topic: str | None = None, retain: bool = False) -> None:
        info = self.link.publish(topic or event_topic(self.device_id), payload, 1, retain)
        self._pending.append(info)

    def send_events(self, boot: int, seqs: Iterable[int], **fields: Any) -> None:
        for seq in seqs:
            self.send(event_payload(boot, seq, **fields))

    def flush(self, timeout: float = 60.0) -> None:
        """Wait until the broker has acknowledged everything sent so far."""
        for info in self._pending:
            info.wait_for_publish(timeout)
            assert info.is_published()
        self._pending.clear()

    def close(self) -> None:
        self.flush()
        self.link.stop()


class Listener:
    """Subscribes to topics and lets a test await the messages it expects."""

    def __init__(self, port: int, *topics: str):
        self.messages: list[Received] = []
        self._cond = threading.Condition()
        self.link = MqttLink(
            MqttSettings(port=port),
            f"listener-{uuid.uuid4().hex[:8]}",
            on_message=self._on_message,
            subscriptions=topics,
            persistent=False,
        )
        self.link.start()
        assert self.link.wait_subscribed(10), "listener could not subscribe"

    def _on_message(self, msg: Received) -> None:
        with self._cond:
            self.messages.append(msg)
            self._cond.notify_all()

    def wait(self, predicate: Callable[[list[Received]], Any], timeout: float = 60.0) -> Any:
        with self._cond:
            ok = self._cond.wait_for(lambda: predicate(self.messages), timeout)
        assert ok, f"expected messages did not arrive; got {[m.topic for m in self.messages]}"
        return ok

    def payloads(self, topic: str) -> list[dict[str, Any]]:
        with self._cond:
            return [json.loads(m.payload) for m in self.messages if m.topic == topic and m.payload]

    def close(self) -> None:
        self.link.stop()


def clear_retained(port: int, *topics: str) -> None:
    """Delete the retained messages of ``topics`` (no wildcards) at the broker on ``port``;
    the broker has done so when this returns.

    A test module's tests share one broker (the ``broker`` fixture), so the allow-lists,
    tool states and hub status an earlier test's hub left retained would otherwise be
    taken for this test's, by a listener subscribing now."""
    wild = [t for t in topics if "+" in t or "#" in t]
    if wild:
        raise ValueError(f"a retained message is deleted by its exact topic, not {wild}")
    cleaner = Device(port, "retained-cleaner")
    try:
        for topic in topics:
            cleaner.send(b"", topic=topic, retain=True)
    finally:
        cleaner.close()  # waits for the PUBACKs


def write_config(path: Path, *, data_dir: Path, port: int, db_url: str, client_id: str) -> Path:
    path.write_text(
        "\n".join(
            [
                "[site]",
                f'data_dir = "{data_dir}"',
                "[db]",
                f'url = "{db_url}"',
                "[mqtt]",
                'host = "127.0.0.1"',
                f"port = {port}",
                f'client_id = "{client_id}"',
                "[http]",
                # never the default 8080: another test, a demo or a real hub may hold it
                f'listen = "127.0.0.1:{free_port()}"',
                "",
            ]
        )
    )
    return path


def add_member(url: str, handle: str = "ada") -> None:
    """A member in the database at ``url`` (migrated): a hub on a database without
    members reports an empty shop on /healthz, which tests of ingest health do not want."""
    engine = make_engine(url)
    try:
        migrate(engine)
        with session_factory(engine).begin() as session:
            session.add(Member(handle=handle, name=handle))
    finally:
        engine.dispose()


class StoredRows:
    """Reads the database a hub process writes, from the test (SQLite or PostgreSQL).

    Each :meth:`query` runs in its own short transaction, so it sees what the hub has
    committed by then."""

    def __init__(self, url: str):
        self.engine = make_engine(url)

    def query(self, sql: str) -> list[tuple]:
        with self.engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(sql))]

    def close(self) -> None:
        self.engine.dispose()


def peershop_command(config: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``peershop --config CONFIG ARGS...`` as its own process, as an operator runs it:
    its exit code and output (text), never raising on a failure."""
    # the installed script, not `python -m hub.cli`: run as __main__, hub.cli's Context
    # is a second class, which the commands living in web/ do not find
    return subprocess.run(
        [str(Path(sys.executable).with_name("peershop")), "--config", str(config), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
        check=False,
    )


def hub_process(
    tmp_path: Path, port: int, db_url: str, shop: str | None = None
) -> tuple[Path, HubProcess]:
    """A config for `peershop run` on ``db_url`` and the broker at ``port`` (data in
    ``tmp_path / "data"``, a client id of its own), the shop file text ``shop`` loaded
    into the database, and the hub's process, not started."""
    engine = make_engine(db_url)
    try:
        migrate(engine)
        if shop is not None:
            with session_factory(engine).begin() as session:
                apply_shop(session, parse_shop(shop))
    finally:
        engine.dispose()
    config = write_config(
        tmp_path / "peershop.toml",
        data_dir=tmp_path / "data",
        port=port,
        db_url=db_url,
        client_id=f"peershop-hub-{uuid.uuid4().hex[:8]}",
    )
    return config, HubProcess(config, tmp_path / "hub.log")


def web_base(config: Path) -> str:
    """``http://host:port`` of the web view of the hub running with ``config`` (a file
    from :func:`write_config`), once it answers: the hub's birth comes before its web."""
    listen = re.search(r'^listen = "([^"]+)"', config.read_text(), re.MULTILINE)
    assert listen, f"no http.listen in {config}"
    base = f"http://{listen.group(1)}"

    def answers() -> bool:
        try:
            with socket.create_connection(tuple(listen.group(1).rsplit(":", 1)), timeout=5):
                return True
        except OSError:
            return False

    wait_for(answers, 30, f"the web view at {base}")
    return base


class HubProcess:
    """``peershop run`` as a real process, to kill with SIGKILL or stop with SIGTERM."""

    def __init__(self, config: Path, log: Path):
        self.config = config
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, port: int) -> None:
        listener = Listener(port, "peershop/hub/status")
        try:
            with self.log.open("ab") as out:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "hub.cli", "--config", str(self.config), "run"],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=REPO,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
            # The hub publishes its retained birth once it is connected and subscribed
            # enough to take messages; a stale retained "online" from a killed hub would
            # also match, so wait for a birth published after this start.
            start_count = len(listener.payloads("peershop/hub/status"))
            listener.wait(
                lambda msgs: any(
                    m.topic == "peershop/hub/status" and not m.retain and b"online" in m.payload
                    for m in msgs[start_count:]
                ),
                timeout=30,
            )
        finally:
            listener.close()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


@dataclass
class Answer:
    """What a :class:`WebClient` request got."""

    status: int
    headers: http.client.HTTPMessage
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


class WebClient:
    """A browser's side of a real web server over HTTP: keeps its cookies, follows no
    redirect.  ``source`` is the loopback address it connects from (each its own
    client address); ``forwarded_for`` makes it a client behind a proxy, which names it
    in ``X-Forwarded-For``."""

    def __init__(self, base: str, source: str = "127.0.0.1", forwarded_for: str | None = None):
        host, port = base.removeprefix("http://").split(":")
        self.host, self.port = host, int(port)
        self.source = source
        self.forwarded_for = forwarded_for
        self.cookies: dict[str, str] = {}

    def request(
        self,
        method: str,
        path: str,
        form: dict[str, str] | None = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        sent = dict(headers or {})
        if form is not None:
            body = urlencode(form).encode()
            sent.setdefault("Content-Type", "application/x-www-form-urlencoded")
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if self.forwarded_for:
            sent["X-Forwarded-For"] = self.forwarded_for
        conn = http.client.HTTPConnection(
            self.host, self.port, timeout=30, source_address=(self.source, 0)
        )
        try:
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            text = response.read().decode()
        finally:
            conn.close()
        for header in response.headers.get_all("Set-Cookie") or ():
            for name, morsel in SimpleCookie(header).items():
                if morsel["max-age"] == "0" or "1970" in morsel["expires"]:
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        return Answer(response.status, response.headers, text)

    def get(self, path: str, **headers: str) -> Answer:
        return self.request("GET", path, headers=headers)

    def csrf(self, path: str = "/login") -> str:
        """The CSRF token of this client's session, from a form on ``path``."""
        page = self.get(path).text
        match = re.search(r'name="(?:[\w-]+-)?csrf_token" type="hidden" value="([^"]+)"', page)
        assert match, f"no CSRF token on {path}"
        return match.group(1)

    def log_in(self, handle: str, password: str | None = None) -> Answer:
        """Log in by handle and password (``<handle>-password`` unless given)."""
        form = {"handle": handle, "password": password or f"{handle}-password"}
        return self.request("POST", "/login", {**form, "csrf_token": self.csrf()})

    def kiosk(self, badge: str, pin: str) -> Answer:
        """Log in at a kiosk by badge and PIN."""
        form = {"badge": badge, "pin": pin, "csrf_token": self.csrf()}
        return self.request("POST", "/login/kiosk", form)

    def copy(self, source: str | None = None) -> WebClient:
        """Another client holding this one's cookies (a copied cookie jar)."""
        other = WebClient(f"http://{self.host}:{self.port}", source or self.source)
        other.cookies = dict(self.cookies)
        return other


class StreamReader:
    """Reads server-sent events (``/api/v1/stream``) from a real socket into ``events``:
    ``(arrival time by time.perf_counter(), event name, data)``, in arrival order.
    ``source`` is the loopback address to connect from (each its own client address).

    Used by the live-view tests and by ``bench/sse.py``."""

    def __init__(
        self,
        base: str,
        headers: dict[str, str] | None = None,
        path: str = "/api/v1/stream",
        timeout: float = 30,
        source: str | None = None,
    ):
        host, port = base.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(
            host, int(port), timeout=timeout, source_address=(source, 0) if source else None
        )
        self.conn.request("GET", path, headers=headers or {})
        self._sock = self.conn.sock  # the response takes it over (Connection: close)
        self.response = self.conn.getresponse()
        kind = self.response.getheader("Content-Type") or ""
        if self.response.status != 200 or not kind.startswith("text/event-stream"):
            raise AssertionError(f"the stream answered {self.response.status} {kind}")
        self.events: list[tuple[float, str, dict[str, Any]]] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, name="sse-reader", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        event = None
        try:
            for raw in self.response:
                at = time.perf_counter()
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event:
                    data = json.loads(line[6:])
                    with self._cond:
                        self.events.append((at, event, data))
                        self._cond.notify_all()
        except (OSError, ValueError):
            return

    def find(
        self, kind: str, /, since: int = 0, **match: Any
    ) -> tuple[float, dict[str, Any]] | None:
        """The first ``kind`` event from index ``since`` on whose data has ``match``."""
        with self._cond:
            events = self.events[since:]
        for at, name, data in events:
            if name == kind and all(data.get(k) == v for k, v in match.items()):
                return at, data
        return None

    def wait(
        self, kind: str, /, timeout: float, since: int = 0, **match: Any
    ) -> tuple[float, dict[str, Any]] | None:
        """:meth:`find`, waiting up to ``timeout`` s for such an event; None if none came."""
        checked = since  # events before it are known not to match

        def found() -> tuple[float, dict[str, Any]] | None:
            nonlocal checked
            for at, name, data in self.events[checked:]:
                checked += 1
                if name == kind and all(data.get(k) == v for k, v in match.items()):
                    return at, data
            return None

        with self._cond:
            hit = self._cond.wait_for(found, timeout)
        return hit or None

    def close(self) -> None:
        """Hang up as a browser closing the page does.  ``conn.close()`` alone leaves the
        socket open: the response being read still holds it, so the server never sees
        the client go."""
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # the server hung up first
        self.conn.close()
