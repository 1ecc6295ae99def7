"""Ingest bench (issue 2): events/s and publish-to-commit latency through the hub.

    .venv/bin/python -m bench.ingest [--events 50000] [--devices 50] [--paced-rate 5000]

One private Mosquitto, three phases with the same publisher fleet (a separate process,
see bench/common.py), printed as JSON:

- ``bare``: a paho subscriber that does nothing (MQTT 5, QoS 1, TCP_NODELAY, auto-ack,
  the hub's receive maximum): the ceiling that broker, publishers and paho set here.
- ``hub``: the same flood through ``Hub`` (in this process, SQLite file in a temp dir).
  Rate is events committed per second from the first publish to the last commit.  Its
  latency is mostly queueing, since the fleet offers more than anyone can take.
- ``hub_paced``: the fleet offers ``--paced-rate`` events/s; the latency from the
  publish time in each event's ``ts`` to the commit (a ``Hub.hooks`` callback runs right
  after each commit) is what a device sees at that load.
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` and `hub` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench.common import Fleet, dump, machine, percentile
from hub.config import load_config
from hub.service.broker import PrivateBroker
from hub.service.service import Hub
from hub.store.ingest import BatchResult

TOPIC = "peershop/dev/+/event"


def bare_phase(port: int, args: argparse.Namespace) -> dict[str, Any]:
    total = args.events
    count = 0
    last = 0.0
    done = threading.Event()

    def on_message(_c: Any, _u: Any, _m: paho.MQTTMessage) -> None:
        nonlocal count, last
        count += 1
        if count >= total:
            last = time.time()
            done.set()

    def on_socket_open(_c: Any, _u: Any, sock: Any) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    subscribed = threading.Event()
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"bare-{uuid.uuid4().hex[:6]}",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    client.on_message = on_message
    client.on_socket_open = on_socket_open
    client.on_subscribe = lambda *_a: subscribed.set()
    client.on_connect = lambda c, *_a: c.subscribe(TOPIC, qos=1)
    props = Properties(PacketTypes.CONNECT)
    props.ReceiveMaximum = args.receive_maximum
    client.connect("127.0.0.1", port, properties=props)
    client.loop_start()
    try:
        if not subscribed.wait(10):
            raise RuntimeError("bare subscriber could not subscribe")
        with Fleet(
            port, devices=args.devices, per_device=args.events // args.devices, boot=1
        ) as fleet:
            fleet.go()
            if not done.wait(600):
                raise RuntimeError(f"bare subscriber got only {count} of {total}")
            pub = fleet.result()
    finally:
        client.disconnect()
        client.loop_stop()
    return {
        "events": total,
        "events_per_s": round(total / (last - pub["started"])),
        "publish_per_s": round(total / (pub["finished"] - pub["started"])),
    }


class CommitClock:
    """A ``Hub.hooks`` callback: when each event was committed, against its ``ts``."""

    def __init__(self, total: int):
        self.total = total
        self.count = 0
        self.last = 0.0
        self.batches = 0
        self.stamps: list[tuple[float, list[Any]]] = []
        self.done = threading.Event()

    def __call__(self, result: BatchResult) -> None:
        now = time.time()
        if not result.new_events:
            return
        self.batches += 1
        self.stamps.append((now, [s.event.device_ts for s in result.new_events]))
        self.count += len(result.new_events)
        if self.count >= self.total:
            self.last = now
            self.done.set()

    def latencies_ms(self) -> list[float]:
        return [(at - ts.timestamp()) * 1000 for at, tss in self.stamps for ts in tss]


def hub_phase(
    hub: Hub, port: int, args: argparse.Namespace, boot: int, rate: float | None
) -> dict[str, Any]:
    clock = CommitClock(args.events)
    hub.hooks.append(clock)
    try:
        with Fleet(
            port, devices=args.devices, per_device=args.events // args.devices, boot=boot, rate=rate
        ) as fleet:
            fleet.go()
            if not clock.done.wait(900):
                raise RuntimeError(f"hub committed only {clock.count} of {args.events}")
            pub = fleet.result()
    finally:
        hub.hooks.remove(clock)
    lat = clock.latencies_ms()
    out: dict[str, Any] = {"events": args.events}
    if rate is not None:
        out["offered_per_s"] = rate
    out |= {
        "events_per_s": round(args.events / (clock.last - pub["started"])),
        "publish_per_s": round(args.events / (pub["finished"] - pub["started"])),
        "latency_ms": {
            "p50": round(percentile(lat, 50), 2),
            "p99": round(percentile(lat, 99), 2),
            "max": round(max(lat), 2),
        },
        "mean_batch": round(clock.count / max(clock.batches, 1), 1),
    }
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--paced-rate", type=float, default=5_000.0)
    parser.add_argument("--receive-maximum", type=int, default=2000)
    parser.add_argument("--skip-bare", action="store_true")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="peershop-bench-") as tmp:
        report: dict[str, Any] = {"machine": machine(), "devices": args.devices}
        with PrivateBroker(Path(tmp) / "mosquitto") as broker:
            if not args.skip_bare:
                report["bare"] = bare_phase(broker.port, args)
            cfg = load_config(
                None,
                env={},
                search=(),
                overrides={
                    "site": {"data_dir": str(Path(tmp) / "data")},
                    "mqtt": {"host": "127.0.0.1", "port": broker.port, "client_id": "bench-hub"},
                    "ingest": {"receive_maximum": args.receive_maximum},
                },
            )
            hub = Hub(cfg)
            hub.start()
            try:
                if not hub.wait_ready(10):
                    raise RuntimeError("hub did not connect")
                report["hub"] = hub_phase(hub, broker.port, args, boot=2, rate=None)
                report["hub_paced"] = hub_phase(
                    hub, broker.port, args, boot=3, rate=args.paced_rate
                )
                report["hub_counters"] = {
                    "duplicates": hub.counters.duplicates,
                    "dead_letters": hub.counters.dead_letters,
                    "db_errors": hub.counters.db_errors,
                }
            finally:
                hub.stop()
        if "bare" in report:
            report["hub_vs_bare"] = round(
                report["hub"]["events_per_s"] / report["bare"]["events_per_s"], 2
            )
        print(dump(report))


if __name__ == "__main__":
    main()
