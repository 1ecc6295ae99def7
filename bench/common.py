"""Shared bench helpers: a fast QoS 1 publisher fleet in its own process, machine facts,
a bench hub's config, the MQTT client and orphan check of a bench's child processes, and
the latency summary every bench prints.

The fleet speaks just enough MQTT 5 over raw sockets to push QoS 1 PUBLISH packets as
fast as the broker takes them: one socket per simulated device with TCP_NODELAY, up to
``window`` unacknowledged publishes each (Mosquitto's receive maximum, 100 by default in
PrivateBroker), several packets per write.  paho's per-message overhead would make the
publishers, not the system under test, the limit.  Each event carries its publish time
in ``ts`` (Unix seconds with microseconds) so the consumer can measure latency.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import platform
import selectors
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hub.config import Config, load_config
from hub.contract.mqtt import MqttLink, MqttSettings


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(s: str) -> bytes:
    data = s.encode()
    return len(data).to_bytes(2, "big") + data


def connect_packet(client_id: str, keepalive: int = 60) -> bytes:
    # protocol name, level 5, flags: clean start; keepalive; no properties
    variable = _utf8("MQTT") + bytes([5, 0x02]) + keepalive.to_bytes(2, "big") + b"\x00"
    body = variable + _utf8(client_id)
    return b"\x10" + _varint(len(body)) + body


def publish_packet(topic: bytes, packet_id: int, payload: bytes) -> bytes:
    """QoS 1 PUBLISH (first byte 0x32), no properties."""
    body_len = 2 + len(topic) + 2 + 1 + len(payload)
    return b"".join(
        (
            b"\x32",
            _varint(body_len),
            len(topic).to_bytes(2, "big"),
            topic,
            packet_id.to_bytes(2, "big"),
            b"\x00",
            payload,
        )
    )


def _packets(buf: bytearray) -> list[tuple[int, bytes]]:
    """Split complete MQTT packets off the front of ``buf`` (first byte, body)."""
    out = []
    while len(buf) >= 2:
        mult, length, i = 1, 0, 1
        while True:
            if i >= len(buf):
                return out
            byte = buf[i]
            length += (byte & 0x7F) * mult
            mult *= 128
            i += 1
            if not byte & 0x80:
                break
        if len(buf) < i + length:
            return out
        out.append((buf[0], bytes(buf[i : i + length])))
        del buf[: i + length]
    return out


@dataclass
class _Dev:
    sock: socket.socket
    topic: bytes
    next_seq: int = 0
    inflight: int = 0
    next_pid: int = 1
    buf: bytearray | None = None


def run_fleet(
    port: int,
    devices: int,
    per_device: int,
    boot: int,
    rate: float | None,
    window: int,
    prefix: str,
    ready: Any,
    go: Any,
    results: Any,
) -> None:
    """Process target: connect, signal ``ready``, wait for ``go``, publish, report."""
    sel = selectors.DefaultSelector()
    devs: list[_Dev] = []
    for i in range(devices):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(connect_packet(f"{prefix}-{i}-{os.getpid()}"))
        buf = bytearray()
        while not (pkts := _packets(buf)):
            buf += sock.recv(4096)
        first, body = pkts[0]
        if first >> 4 != 2 or body[1] != 0:
            raise RuntimeError(f"CONNACK refused: {body!r}")
        dev = _Dev(sock, f"peershop/dev/{prefix}-{i:03d}/event".encode(), buf=buf)
        sel.register(sock, selectors.EVENT_READ, dev)
        devs.append(dev)
    ready.set()
    go.wait()
    total = devices * per_device
    sent = acked = 0
    started = time.time()
    while acked < total:
        allowed = total if rate is None else int((time.time() - started) * rate) + 1
        for dev in devs:
            chunk = []
            while dev.inflight < window and dev.next_seq < per_device and sent < allowed:
                body = b'{"boot":%d,"seq":%d,"type":"power","w":%d.5,"ts":%.6f}' % (
                    boot,
                    dev.next_seq,
                    dev.next_seq % 1000,
                    time.time(),
                )
                chunk.append(publish_packet(dev.topic, dev.next_pid, body))
                dev.next_pid = dev.next_pid % 65535 + 1
                dev.next_seq += 1
                dev.inflight += 1
                sent += 1
                if rate is not None:
                    break  # paced: one per device per round spreads the load evenly
            if chunk:
                dev.sock.sendall(b"".join(chunk))
        wait = 0.05
        if rate is not None and sent < total:  # sleep until the next event is due
            wait = min(wait, max(0.0, started + sent / rate - time.time()))
        for key, _ in sel.select(wait):
            dev = key.data
            data = dev.sock.recv(65536)
            if not data:
                raise RuntimeError("the broker closed a publisher's connection")
            dev.buf += data
            for first, _body in _packets(dev.buf):
                if first >> 4 == 4:  # PUBACK
                    dev.inflight -= 1
                    acked += 1
    finished = time.time()
    for dev in devs:
        dev.sock.sendall(b"\xe0\x00")  # DISCONNECT, normal: no will
        sel.unregister(dev.sock)
        dev.sock.close()
    sel.close()
    results.put({"started": started, "finished": finished, "sent": sent})


class Fleet:
    """The publishers in their own process, so they never share the GIL with the hub."""

    def __init__(
        self,
        port: int,
        *,
        devices: int,
        per_device: int,
        boot: int,
        rate: float | None = None,
        window: int = 100,
        prefix: str = "bench",
    ):
        ctx = mp.get_context("spawn")
        self._ready = ctx.Event()
        self._go = ctx.Event()
        self._results = ctx.Queue()
        self.process = ctx.Process(
            target=run_fleet,
            args=(port, devices, per_device, boot, rate, window, prefix, *self._sync()),
            daemon=True,
        )
        self.total = devices * per_device

    def _sync(self) -> tuple[Any, Any, Any]:
        return self._ready, self._go, self._results

    def __enter__(self) -> Fleet:
        self.process.start()
        if not self._ready.wait(60):
            raise RuntimeError("publishers did not connect")
        return self

    def go(self) -> None:
        self._go.set()

    def result(self, timeout: float = 600) -> dict[str, float]:
        return self._results.get(timeout=timeout)

    def __exit__(self, *exc: object) -> None:
        self.process.join(30)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self._results.close()
        self._results.join_thread()


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def latency_ms(
    seconds: Sequence[float], percentiles: Sequence[int] = (50, 99), digits: int = 2
) -> dict[str, float]:
    """Samples in seconds as ``{"n", "p50_ms", …, "max_ms"}`` in milliseconds, rounded to
    ``digits``; p50 is the median; ``{"n": 0}`` for no samples."""
    ms = [s * 1000 for s in seconds]
    if not ms:
        return {"n": 0}
    out: dict[str, float] = {"n": len(ms)}
    for p in percentiles:
        value = statistics.median(ms) if p == 50 else percentile(ms, p)
        out[f"p{p}_ms"] = round(value, digits)
    out["max_ms"] = round(max(ms), digits)
    return out


def hub_config(data_dir: Path, db_url: str, port: int, client_id: str) -> Config:
    """A bench hub's config: data in ``data_dir``, the broker on ``port``, nothing read
    from the environment or a config file."""
    return load_config(
        None,
        env={},
        search=(),
        overrides={
            "site": {"data_dir": str(data_dir)},
            "db": {"url": db_url},
            "mqtt": {"host": "127.0.0.1", "port": port, "client_id": client_id},
        },
    )


def mqtt_link(port: int, name: str, **kwargs: Any) -> MqttLink:
    """A bench process's MQTT client (``name``-random id, clean session, TCP_NODELAY)."""
    return MqttLink(
        MqttSettings(port=port), f"{name}-{uuid.uuid4().hex[:6]}", persistent=False, **kwargs
    )


def orphaned(parent: int) -> bool:
    """The bench's main process is gone (killed): a child stops too."""
    return os.getppid() != parent


def machine() -> dict[str, Any]:
    model = platform.processor() or ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    try:
        mosq = subprocess.run(
            ["mosquitto", "-h"], capture_output=True, text=True, check=False
        ).stdout.splitlines()[0]
    except (OSError, IndexError):
        mosq = "unknown"
    import paho.mqtt
    import sqlalchemy

    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "sqlalchemy": sqlalchemy.__version__,
        "paho": paho.mqtt.__version__,
        "mosquitto": mosq,
    }


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=False)
