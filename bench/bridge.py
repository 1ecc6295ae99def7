"""Bench the serial bridge: throughput over a pty, and the badge-to-reply round trip.

    .venv/bin/python bench/bridge.py [--events 5000] [--round-trips 300]

Prints one JSON object.  A private Mosquitto is started for the run.  The node is the
reference ``protocol.Node`` on the master side of a pty; the bridge opens the slave.

pyserial on a pty does not enforce the baud rate, so the measured rate is what the
bridge and the node can do, not what the line can: a UART at 115200 8N1 carries 10
bits a byte, 11,520 bytes/s a direction.  ``line`` reports the share of that capacity
the measured rate would use, and the frames/s the line itself could carry at the
measured average frame size.

The round trip is what a member at a tool waits for: the node's badge event goes
through the bridge to MQTT, a stand-in hub answers on the cmd topic at once, and the
bridge hands the answer to the node.  The baseline is the same exchange made directly
over MQTT by an MQTT device, in the same run, against the same broker and responder.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import latency_ms
from firmware_bridge.bridge import BAUD, Bridge
from hub.contract.messages import cmd_topic, event_topic, parse_event
from hub.contract.mqtt import MqttLink, MqttSettings, Received
from hub.service.broker import PrivateBroker
from tests.firmware_bridge.test_bridge import PtyNode
from tests.helpers import wait_for

LINE_BYTES_PER_S = BAUD / 10  # 8N1: a start bit, 8 data bits, a stop bit


class ByteCount:
    def __init__(self) -> None:
        self.bytes = 0

    def __call__(self, data: bytes) -> bytes:
        self.bytes += len(data)
        return data


class Responder:
    """A stand-in hub: answers every badge event on the device's cmd topic at once."""

    def __init__(self, port: int):
        self.link = MqttLink(
            MqttSettings(port=port),
            "bench-hub",
            on_message=self._on_event,
            subscriptions=["peershop/dev/+/event"],
            persistent=False,
        )
        self.link.start()
        if not self.link.wait_subscribed(10):
            raise RuntimeError("the responder could not subscribe")

    def _on_event(self, msg: Received) -> None:
        device_id = msg.topic.split("/")[2]
        event = parse_event(device_id, msg.payload)
        if event.type == "badge":
            reply = {"re": event.seq, "action": "grant", "member": "Ada L.", "max_s": 60}
            self.link.publish(cmd_topic(device_id), json.dumps(reply))

    def close(self) -> None:
        self.link.stop()


def throughput(port: int, workdir: Path, events: int) -> dict[str, Any]:
    up = ByteCount()
    node = PtyNode("bench-throughput", workdir / "usb-throughput", to_bridge=up)
    node.plug()
    try:
        with Bridge(MqttSettings(port=port), [str(node.link)]) as bridge:
            wait_for(lambda: bridge.ports[0].node_id == "bench-throughput", 10, "hello")
            wait_for(node.all_acked, 10, "a quiet start")
            up.bytes = 0
            start = time.perf_counter()
            for i in range(events):
                # Keep the node's buffer (200 events) from overflowing: a real meter
                # waits for its window too.
                while node.node.queued > 100:
                    time.sleep(0.0005)
                node.send("power", w=float(i % 4000), wh_total=1000.0 + i / 10)
            wait_for(node.all_acked, 120, "every event acked")
            elapsed = time.perf_counter() - start
            counters = bridge.counters
    finally:
        node.unplug()
    frames_per_s = events / elapsed
    bytes_per_s = up.bytes / elapsed
    frame_size = up.bytes / events
    return {
        "events": events,
        "seconds": round(elapsed, 3),
        "frames_per_s": round(frames_per_s, 1),
        "bytes_per_s": round(bytes_per_s, 1),
        "avg_frame_bytes": round(frame_size, 1),
        "node_resends": node.node.counters["resent"],
        "bridge_publishes": counters["events_published"],
        "line": {
            "capacity_bytes_per_s": LINE_BYTES_PER_S,
            "share_of_capacity": round(bytes_per_s / LINE_BYTES_PER_S, 2),
            "frames_per_s_at_avg_size": round(LINE_BYTES_PER_S / frame_size, 1),
        },
    }


def round_trip_bridge(port: int, workdir: Path, count: int) -> list[float]:
    node = PtyNode("bench-rtt", workdir / "usb-rtt")
    got = threading.Condition()
    replies: dict[int, float] = {}

    def on_command(command: dict[str, Any]) -> None:
        if command.get("action") == "grant":
            with got:
                replies[command["re"]] = time.perf_counter()
                got.notify_all()

    node.plug()
    node.node.on_command = on_command
    samples = []
    try:
        with Bridge(MqttSettings(port=port), [str(node.link)]) as bridge:
            wait_for(lambda: bridge.ports[0].node_id == "bench-rtt", 10, "hello")
            wait_for(lambda: bridge.ports[0].commands_pending == 0, 10, "a quiet start")
            for _ in range(count):
                start = time.perf_counter()
                _boot, seq = node.send("badge", uid="04A1B2C3D4E5F6")
                with got:
                    if not got.wait_for(lambda seq=seq: seq in replies, 10):
                        raise RuntimeError(f"no reply to badge {seq}")
                samples.append(replies[seq] - start)
    finally:
        node.unplug()
    return samples


def round_trip_direct(port: int, count: int) -> list[float]:
    got = threading.Condition()
    replies: dict[int, float] = {}

    def on_command(msg: Received) -> None:
        reply = json.loads(msg.payload)
        with got:
            replies[reply["re"]] = time.perf_counter()
            got.notify_all()

    device = MqttLink(
        MqttSettings(port=port),
        "bench-direct",
        on_message=on_command,
        subscriptions=[cmd_topic("bench-direct")],
        persistent=False,
    )
    device.start()
    samples = []
    try:
        if not device.wait_subscribed(10):
            raise RuntimeError("the direct device could not subscribe")
        for seq in range(count):
            start = time.perf_counter()
            event = {"boot": 1, "seq": seq, "type": "badge", "uid": "04A1B2C3D4E5F6"}
            device.publish(event_topic("bench-direct"), json.dumps(event))
            with got:
                if not got.wait_for(lambda seq=seq: seq in replies, 10):
                    raise RuntimeError(f"no reply to badge {seq}")
            samples.append(replies[seq] - start)
    finally:
        device.stop()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--round-trips", type=int, default=300)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        with PrivateBroker(workdir / "mosquitto") as broker:
            result_throughput = throughput(broker.port, workdir, args.events)
            responder = Responder(broker.port)
            try:
                direct = round_trip_direct(broker.port, args.round_trips)
                bridged = round_trip_bridge(broker.port, workdir, args.round_trips)
            finally:
                responder.close()
    print(
        json.dumps(
            {
                "bench": "bridge",
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "platform": platform.platform(),
                },
                "throughput": result_throughput,
                "round_trip": {
                    "through_bridge": latency_ms(bridged, digits=3),
                    "baseline_direct_mqtt": latency_ms(direct, digits=3),
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
