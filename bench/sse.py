"""Live floor latency: from a tool event's MQTT publish to its server-sent event.

    .venv/bin/python bench/sse.py [--probes 200] [--rates 1000,5000] [--devices 50]

Prints one JSON object.  What a wall screen shows late is the time from a reader's
badge event (QoS 1) to the ``tool`` event on ``/api/v1/stream`` that shows the tool's
new state.  This bench measures it at a client that both publishes the badges and reads
the stream, so both ends use one clock, in phases on the same hub:

- ``baseline``: nothing else happens;
- ``loaded``: the ingest bench's load (``bench.common.Fleet``, its own process, raw
  MQTT 5 QoS 1 from ``--devices`` power meters, each bound to a tool), at each of
  ``--rates`` events/s in total: 5,000 is ``bench.ingest --paced-rate``, 1,000 the
  telemetry of ``bench/decision.py``; from before the first probe to after the last.
  Power samples make their tools busy or idle, so the stream is busy too: every client
  gets those tool changes and ``batch`` events.

Processes: this one runs a private Mosquitto (a child), the hub and its web view
(``Hub`` and ``serve_in_thread`` on waitress, as ``peershop run`` does) on a fresh
SQLite database (the shop of ``bench/decision.py``); the probe, a child process, is
the reader ``laser-node`` at ``laser-1`` (policy ``tap``) and an SSE client.  It
badges Ada in and out in turn (the laser goes ``in_use``, then ``free``), and for each
badge waits for the stream's ``tool`` event of ``laser-1`` in the new state, however
late (up to ``--timeout`` s: then it counts as missing and the phase ends).
``hub_stored_per_s_while_probing`` says whether the hub kept up with the load.
Target (issue 6): under 1 s.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Fleet, dump, latency_ms, machine, mqtt_link
from bench.decision import GRANTED_UID, PLUG_PREFIX, READER, TOOL, badge_body, start_shop
from hub.contract.messages import event_topic
from tests.helpers import StreamReader
from web import create_app, serve_in_thread

TARGET_MS = 1000.0


def run_probe(
    mqtt_port: int,
    http_port: int,
    probes: int,
    first_seq: int,
    gap_s: float,
    timeout: float,
    ready: Any,
    go: Any,
    until: Any,
    results: Any,
) -> None:
    """Badge Ada in and out at the laser; time each badge to its state on the stream.
    ``until`` (a shared double, Unix time) is when the load ends: no probe after it."""
    link = mqtt_link(mqtt_port, "bench-sse")
    link.start()
    stream = StreamReader(f"http://127.0.0.1:{http_port}", timeout=60)
    samples: list[float] = []
    missing = 0
    try:
        if not link.wait_connected(10):
            raise RuntimeError("the probe could not connect")
        # the stream starts with every tool's state
        if (initial := stream.wait("tool", timeout=10, tool=TOOL)) is None:
            raise RuntimeError("the stream sent no initial state of the laser")
        expect = "free" if initial[1]["state"] == "in_use" else "in_use"
        topic = event_topic(READER)
        ready.set()
        go.wait()
        for i in range(probes):
            if time.time() > until.value:
                break  # measuring on after the load ended would flatter the figure
            since = len(stream.events)  # a state from now on
            body = badge_body(first_seq + i, GRANTED_UID)
            t0 = time.perf_counter()
            link.publish(topic, body, qos=1)
            seen = stream.wait("tool", timeout=timeout, since=since, tool=TOOL, state=expect)
            if seen is None:
                missing += 1
                break  # which state the laser is in now is unknown
            samples.append(seen[0] - t0)
            expect = "free" if expect == "in_use" else "in_use"
            time.sleep(gap_s)
        results.put({"samples": samples, "missing": missing, "stream_events": len(stream.events)})
    finally:
        stream.close()
        link.stop()


def summary(samples: list[float], missing: int) -> dict[str, Any]:
    stats = latency_ms(samples, percentiles=(50, 95, 99), digits=1)
    return {"probes": stats.pop("n"), "missing": missing, **stats}


def phase(
    args: argparse.Namespace, mqtt_port: int, http_port: int, first_seq: int, hub: Any
) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    ready, go, until = ctx.Event(), ctx.Event(), ctx.Value("d", float("inf"))
    probe = ctx.Process(
        target=run_probe,
        args=(
            mqtt_port,
            http_port,
            args.probes,
            first_seq,
            args.gap,
            args.timeout,
            ready,
            go,
            until,
            results,
        ),
        daemon=True,
    )
    probe.start()
    load = None
    try:
        if not ready.wait(120):
            raise RuntimeError("the probe did not connect to the broker and the stream")
        if args.rate > 0:
            # enough load for every probe to meet its state at once, and then some
            load_s = args.probes * (args.gap + 0.05) + 10
            per_device = max(1, int(args.rate * load_s / args.devices))
            load = Fleet(
                mqtt_port,
                devices=args.devices,
                per_device=per_device,
                boot=int(time.time()),
                rate=args.rate,
                prefix=PLUG_PREFIX,
            ).__enter__()
            load.go()
            load_started = time.time()
            time.sleep(2)  # the load reaches its pace before the first probe
            until.value = load_started + per_device * args.devices / args.rate
        stored_before, started = hub.counters.events, time.time()
        go.set()
        out = results.get(timeout=args.probes * (args.gap + args.timeout) + 60)
        probe_s = time.time() - started
        stored = hub.counters.events - stored_before
    finally:
        go.set()
        probe.join(30)
        if probe.is_alive():
            probe.kill()
        if load is not None:
            load.__exit__(None, None, None)
    report = summary(out["samples"], out["missing"])
    report["stream_events_seen"] = out["stream_events"]
    if load is not None:
        report["offered_per_s"] = args.rate
        report["hub_stored_per_s_while_probing"] = round(stored / probe_s)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=200)
    parser.add_argument(
        "--rates", default="1000,5000", help="loads to measure under, events/s, comma-separated"
    )
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--gap", type=float, default=0.1, help="s between probes")
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="peershop-bench-") as tmp:
        broker, hub = start_shop(Path(tmp), args.devices)
        stop_web = serve_in_thread(create_app({"SECRET_KEY": "bench"}, hub=hub), ("127.0.0.1", 0))
        try:
            _host, http_port = stop_web.address  # type: ignore[attr-defined]
            report: dict[str, Any] = {"machine": machine(), "target_ms": TARGET_MS}
            quiet = argparse.Namespace(**{**vars(args), "rate": 0.0})
            report["baseline"] = phase(quiet, broker.port, http_port, 0, hub)
            report["loaded"] = {}
            for k, rate in enumerate(float(r) for r in args.rates.split(",") if r):
                at_rate = argparse.Namespace(**{**vars(args), "rate": rate})
                first_seq = 10 * args.probes * (k + 1)
                loaded = phase(at_rate, broker.port, http_port, first_seq, hub)
                loaded["met"] = bool(
                    loaded.get("probes") and not loaded["missing"] and loaded["p99_ms"] < TARGET_MS
                )
                report["loaded"][f"{rate:g}_per_s"] = loaded
        finally:
            stop_web()
            hub.stop()
            broker.stop()
    print(dump(report))


if __name__ == "__main__":
    main()
