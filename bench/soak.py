"""A long soak of the hub under a steady mixed shop load: do memory and latency stay flat?

    .venv/bin/python -m bench.soak [--duration 3600] [--rate 500] [--sample 60]

Issue 9: "a one-hour soak at 500 events/s: memory and latency flat".  Prints one JSON
object at the end (and one JSON line per sample to stderr while it runs, so a long run
can be followed with ``tail -f``).

Processes (no two share a GIL):

- this process: a private Mosquitto (a child) and the hub in-process (``Hub(cfg)``) on a
  fresh SQLite file holding a shop loaded from a shop file (the shop of
  tests/faults/test_kill_storm.py, with more power meters);
- ``load``: the shop's devices at ``--rate`` events/s in total, QoS 1, each stamped with
  its publish time in ``ts``: readers at two tools (power samples, a badge now and
  then), the door (badges: sign in and out), a task station (task buttons and badges)
  and power meters bound to tools of their own;
- ``probe``: a reader at a tool of its own that badges ``--probe-rate`` times a second
  and times the hub's reply (``re`` = its seq) from just before the publish.

Sampled every ``--sample`` seconds:

- the hub's RSS (``/proc/self/status`` VmRSS, and VmHWM, the peak so far);
- decision latency: the probe's badge-to-reply round trip (p50/p99/max);
- commit latency: from an event's publish (its ``ts``) to the commit of the batch
  holding it, for every event (a ``Hub.hooks`` callback; p50/p99/max);
- events stored, dead letters, internal errors, the hub's queue, its CPU (cores), and
  the machine's 1-minute load average (other work shows in the latencies).

The first sample is the baseline: "flat" compares the middle and the last with it.
At the end the bench waits until every event sent is stored, once.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import queue
import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import dump, hub_config, latency_ms, machine, mqtt_link, orphaned
from hub.contract.messages import cmd_topic, event_topic
from hub.contract.mqtt import Received
from hub.service.broker import PrivateBroker
from hub.service.service import Hub
from hub.shopfile.apply import apply_shop
from hub.shopfile.parse import parse_shop
from hub.store.db import make_engine, migrate, session_factory
from hub.store.ingest import BatchResult

BOOT = 1
METERS = 8  # power meters, each bound to a tool of its own
UIDS = ("04A1B2C3D4E5F6", "5E2A9C11", "77001122", "8A11F0C3", "DEADBEEF")  # the last: nobody's
PROBE = "probe-node"
PROBE_UIDS = ("04A1B2C3D4E5F6", "5E2A9C11")  # Ada (grant, then release), Bob


def shop_yaml() -> str:
    meters = "".join(
        f"  - {{id: bench-{i}, name: Bench {i}, project: commons, devices: [meter-{i}],"
        " policy: timeout, power: {off_w: 5, busy_w: 100, idle_timeout: 2m}}\n"
        for i in range(METERS)
    )
    return f"""
projects:
  - {{id: commons, name: Shop commons, model: production_effort}}
members:
  - {{handle: ada, name: Ada L., roles: [member, trainer], badges: ["04A1B2C3D4E5F6"]}}
  - {{handle: bob, name: Bob B., badges: ["5E2A9C11"]}}
  - {{handle: cy, name: Cy C., badges: ["77001122"]}}
  - {{handle: dee, name: Dee D., badges: ["8A11F0C3"]}}
trainings:
  - {{id: laser, name: Laser, granted: [{{member: ada, by: ada}}, {{member: cy, by: ada}}]}}
tools:
  - id: laser-1
    name: Laser cutter
    project: commons
    devices: [laser-node]
    policy: tap
    training: laser
    power: {{off_w: 5, busy_w: 200, idle_timeout: 20m}}
  - id: drill-1
    name: Drill press
    project: commons
    devices: [drill-node]
    policy: tap
    power: {{off_w: 5, busy_w: 100, idle_timeout: 20m}}
  - id: probe-1
    name: Probe saw
    project: commons
    devices: [{PROBE}]
    policy: tap
{meters}tasks:
  - {{id: empty-dust, title: Empty the dust collector, project: commons, slots: 4, hours: 0.5}}
  - {{id: sweep, title: Sweep the floor, project: commons, slots: 4, hours: 0.25}}
stations:
  - {{device: desk, kind: task_station}}
  - {{device: door, kind: sign_in}}
"""


def body(seq: int, type_: str, **fields: Any) -> bytes:
    return json.dumps(
        {"boot": BOOT, "seq": seq, "ts": round(time.time(), 6), "type": type_, **fields},
        separators=(",", ":"),
    ).encode()


def payload_for(device: str, seq: int, rng: random.Random) -> bytes:
    """The kill-storm test's loads: tools, door, task station, meters."""
    if device in ("laser-node", "drill-node"):
        if seq % 7 == 3:
            return body(seq, "badge", uid=rng.choice(UIDS))
        return body(seq, "power", w=rng.choice((0.0, 2.0, 40.0, 150.0, 900.0)))
    if device == "door":
        return body(seq, "badge", uid=rng.choice(UIDS))
    if device == "desk":
        if seq % 3 == 0:
            return body(seq, "button", name=rng.choice(("empty-dust", "sweep")))
        return body(seq, "badge", uid=rng.choice(UIDS))
    return body(seq, "power", w=round(rng.uniform(0, 1200), 1))


def run_load(port: int, rate: float, seconds: float, seed: int, results: Any) -> None:
    """Publish at ``rate`` events/s in total, shared by the devices by their weights."""
    logging.basicConfig(level=logging.WARNING)
    parent = os.getppid()
    rng = random.Random(seed)
    # door and desk at a person's pace; the tools and meters carry the telemetry
    weights = {"door": 1, "desk": 1, "laser-node": 10, "drill-node": 10}
    weights.update({f"meter-{i}": 20 for i in range(METERS)})
    names = list(weights)
    cum = [sum(list(weights.values())[: i + 1]) for i in range(len(names))]
    links = {name: mqtt_link(port, f"soak-{name}") for name in names}
    for link in links.values():
        link.start()
        if not link.wait_connected(10):
            raise RuntimeError("a load device could not connect")
    seqs = dict.fromkeys(names, 0)
    infos = []
    started = time.monotonic()
    sent = 0
    try:
        while True:
            now = time.monotonic()
            if now - started >= seconds or orphaned(parent):
                break
            due = int((now - started) * rate) + 1
            while sent < due:
                name = rng.choices(names, cum_weights=cum)[0]
                seq = seqs[name]
                seqs[name] = seq + 1
                infos.append(links[name].publish(event_topic(name), payload_for(name, seq, rng), 1))
                sent += 1
            if len(infos) > 5000:  # keep PUBACK tracking bounded
                infos = [i for i in infos if not i.is_published()]
            time.sleep(max(0.0, started + sent / rate - time.monotonic()))
        # A machine that fell behind may take minutes to take the rest: wait for the
        # PUBACKs as long as it keeps making progress.
        waiting = [i for i in infos if not i.is_published()]
        while waiting and not orphaned(parent):
            before = len(waiting)
            time.sleep(5)
            waiting = [i for i in waiting if not i.is_published()]
            if len(waiting) == before:
                break  # stuck: report what was sent; the main process compares
    finally:
        for link in links.values():
            link.stop()
    results.put({"load": {"sent": sent, "per_device": seqs}})


def run_probe(port: int, rate: float, seconds: float, timeout: float, results: Any) -> None:
    """Badge at ``rate``/s and time each reply: (unix time sent, seconds or None)."""
    logging.basicConfig(level=logging.WARNING)
    parent = os.getppid()
    cond = threading.Condition()
    got: dict[int, float] = {}
    actions: dict[str, int] = {}

    def on_message(msg: Received) -> None:
        t = time.perf_counter()
        reply = json.loads(msg.payload)
        if "re" in reply:
            with cond:
                got[reply["re"]] = t
                actions[reply.get("action", "?")] = actions.get(reply.get("action", "?"), 0) + 1
                cond.notify_all()

    link = mqtt_link(port, "soak-probe", on_message=on_message, subscriptions=[cmd_topic(PROBE)])
    link.start()
    samples: list[tuple[float, float | None]] = []
    try:
        if not link.wait_subscribed(10):
            raise RuntimeError("the probe could not subscribe")
        started = time.monotonic()
        seq = 0
        while time.monotonic() - started < seconds and not orphaned(parent):
            at = time.time()
            t0 = time.perf_counter()
            link.publish(event_topic(PROBE), body(seq, "badge", uid=PROBE_UIDS[seq % 2]), 1)
            with cond:
                cond.wait_for(lambda s=seq: s in got, timeout)
                rtt = got.pop(seq, None)
            samples.append((at, None if rtt is None else rtt - t0))
            seq += 1
            time.sleep(max(0.0, started + seq / rate - time.monotonic()))
    finally:
        link.stop()
    results.put({"probe": {"samples": samples, "sent": seq, "actions": actions}})


def status_kb() -> dict[str, int]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


class CommitClock:
    """A batch hook: publish-to-commit seconds of every new event, per sample window."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.window: list[float] = []

    def __call__(self, result: BatchResult) -> None:
        now = time.time()
        lat = [
            now - s.event.device_ts.timestamp()
            for s in result.new_events
            if s.event.device_ts is not None
        ]
        with self.lock:
            self.window.extend(lat)

    def take(self) -> list[float]:
        with self.lock:
            out, self.window = self.window, []
        return out


def get_result(results: Any, key: str, got: dict[str, Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while key not in got:
        try:
            got.update(results.get(timeout=max(0.1, deadline - time.monotonic())))
        except queue.Empty:
            raise RuntimeError(f"no result from the {key} process") from None
    return got[key]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=3600.0, help="seconds of load")
    ap.add_argument("--rate", type=float, default=500.0, help="events/s in total")
    ap.add_argument("--sample", type=float, default=60.0, help="seconds between samples")
    ap.add_argument("--probe-rate", type=float, default=2.0, help="probe badges per second")
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    logging.basicConfig(level=logging.ERROR)  # the hub logs every decision at INFO
    facts = {**machine(), "loadavg_1m_at_start": round(os.getloadavg()[0], 2)}

    with tempfile.TemporaryDirectory(prefix="peershop-soak-") as tmp:
        root = Path(tmp)
        data_dir = root / "data"
        data_dir.mkdir()
        db_url = f"sqlite:///{data_dir / 'peershop.db'}"
        engine = make_engine(db_url)
        migrate(engine)
        with session_factory(engine).begin() as session:
            apply_shop(session, parse_shop(shop_yaml()))
        engine.dispose()
        broker = PrivateBroker(root / "mosquitto").start()
        hub = Hub(hub_config(data_dir, db_url, broker.port, "soak-hub"))
        clock = CommitClock()
        hub.hooks.append(clock)
        hub.start()
        ctx = mp.get_context("spawn")
        results = ctx.Queue()
        children = []
        got: dict[str, Any] = {}
        samples: list[dict[str, Any]] = []
        try:
            if not hub.wait_ready(15):
                raise RuntimeError("the hub did not connect")
            children = [
                ctx.Process(
                    target=run_load,
                    args=(broker.port, args.rate, args.duration, seed, results),
                    daemon=True,
                ),
                ctx.Process(
                    target=run_probe,
                    args=(broker.port, args.probe_rate, args.duration, 2.0, results),
                    daemon=True,
                ),
            ]
            for child in children:
                child.start()
            began = time.time()
            cpu0 = time.process_time()
            events0 = hub.counters.events
            window_start = began
            probe_q: list[float] = []
            while True:
                left = began + args.duration - time.time()
                time.sleep(max(0.0, min(args.sample, left)))
                now = time.time()
                cpu = time.process_time()
                sample = {
                    "t_s": round(now - began),
                    "rss_mb": round(status_kb()["VmRSS"] / 1024, 1),
                    "hwm_mb": round(status_kb()["VmHWM"] / 1024, 1),
                    "commit": latency_ms(clock.take()),
                    "events_per_s": round(
                        (hub.counters.events - events0) / max(now - window_start, 1e-9)
                    ),
                    "events": hub.counters.events,
                    "dead_letters": hub.counters.dead_letters,
                    "internal_errors": hub.counters.internal_errors,
                    "queue": hub._queue.qsize(),
                    "hub_cpu": round((cpu - cpu0) / max(now - window_start, 1e-9), 2),
                    # other work on the machine shows in the latencies: say how much
                    "loadavg_1m": round(os.getloadavg()[0], 2),
                }
                events0, cpu0, window_start = hub.counters.events, cpu, now
                samples.append(sample)
                print(json.dumps(sample), file=sys.stderr, flush=True)
                if left <= args.sample:
                    break
            load = get_result(results, "load", got, 1800)
            probe = get_result(results, "probe", got, 120)
            # every event sent, stored once (the probe's badges included)
            expected = load["sent"] + probe["sent"]
            deadline = time.monotonic() + 1800  # a backlog drains after the load stops
            while hub.counters.events < expected and time.monotonic() < deadline:
                time.sleep(0.2)
            probe_q = [r for _, r in probe["samples"] if r is not None]
            # the probe's round trips, bucketed into the same sample windows
            for i, sample in enumerate(samples):
                lo = began + (samples[i - 1]["t_s"] if i else 0)
                hi = began + sample["t_s"]
                sample["decision"] = latency_ms(
                    [r for at, r in probe["samples"] if r is not None and lo <= at < hi]
                )
        finally:
            for child in children:
                child.join(30)
                if child.is_alive():
                    child.kill()
            hub.stop()
            broker.stop()

    def at(i: int) -> dict[str, Any]:
        s = samples[i]
        return {
            "t_s": s["t_s"],
            "rss_mb": s["rss_mb"],
            "decision_p99_ms": s["decision"].get("p99_ms"),
            "commit_p99_ms": s["commit"].get("p99_ms"),
        }

    stored = hub.counters.events
    print(
        dump(
            {
                "bench": "soak",
                "duration_s": args.duration,
                "rate": args.rate,
                "seed": seed,
                "sent": expected,
                "stored": stored,
                "duplicates": hub.counters.duplicates,
                "dead_letters": hub.counters.dead_letters,
                "internal_errors": hub.counters.internal_errors,
                "probe": {
                    "badges": probe["sent"],
                    "missing": sum(1 for _, r in probe["samples"] if r is None),
                    "actions": probe["actions"],
                    "decision": latency_ms(probe_q),
                },
                "baseline_first_sample": at(0),
                "middle": at(len(samples) // 2),
                "end": at(-1),
                "rss_growth_mb": round(samples[-1]["rss_mb"] - samples[0]["rss_mb"], 1),
                "peak_mb": samples[-1]["hwm_mb"],
                "samples": samples,
                "machine": facts,
            }
        )
    )
    if stored != expected:
        sys.exit(1)


if __name__ == "__main__":
    main()
