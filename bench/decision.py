"""Bench the hub's decision path: badge-to-reply round trip under telemetry load.

    .venv/bin/python bench/decision.py [--badges 2000] [--rate 1000] [--devices 20]

Prints one JSON object.  What a member at a tool waits for is the time from the
reader's badge event (QoS 1) to the hub's ``peershop/dev/{id}/cmd`` reply carrying
``re`` = the event's seq (docs/device-protocol.md).  This bench measures it at a simulated
reader, with the shop's telemetry going on, and compares it with the least any MQTT
answer can take on the same broker at the same moment: a bare echo client.

Processes (so that no two of them share a GIL):

- this process: a private Mosquitto (a child), the hub in-process (``Hub(cfg).start()``)
  on a fresh SQLite database with a small shop inserted row by row;
- the power meters: ``bench.common.Fleet`` (raw-socket MQTT, its own process), 20
  devices ``plug-000``… each bound to a tool of its own, publishing ``power`` events at
  1,000 messages/s in total, QoS 1, from before the first probe to after the last;
- ``echo``: a client subscribed to ``bench/echo/req`` that republishes each message to
  ``bench/echo/rep`` (QoS 1, TCP_NODELAY: it is an :class:`~hub.contract.mqtt.MqttLink`);
- ``probe``: the reader ``laser-node`` at ``laser-1`` (policy ``tap``).  It alternates a
  badge of a trained member (grant, then release at the next tap: a session opens and
  closes) with a badge of an untrained one (deny), and after each badge sends one echo
  request, one at a time: both series see the same load over the same window.

The round trip is timed in the probe process, from just before ``publish`` to the
arrival of the matching reply in its network thread.  A reply that has not come after
``--timeout`` seconds counts as missing (it must be 0).  At the end the bench waits for
the hub to have stored every event sent and reports its counters.

Target (issue 3): hub p99 <= 2 x echo p99 + 5 ms, and under 20 ms on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import queue
import signal
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Fleet, hub_config, latency_ms, mqtt_link, orphaned
from bench.common import machine as machine_facts
from hub.contract.messages import cmd_topic, event_topic
from hub.contract.mqtt import MqttLink, Received
from hub.service.broker import PrivateBroker
from hub.service.service import Hub
from hub.store.db import make_engine, migrate, session_factory
from hub.store.models import Badge, Member, Tool, ToolBinding, Training, TrainingGrant

READER = "laser-node"
TOOL = "laser-1"
GRANTED_UID = "04A1B2C3D4E5F6"  # Ada: trained on the laser
DENIED_UID = "04B0B0B0B0B0B0"  # Bob: a member without the training
ECHO_REQ = "bench/echo/req"
ECHO_REP = "bench/echo/rep"
TARGET_ABS_MS = 20.0
UNCLEAN: list[str] = []  # what could not be stopped cleanly (a stuck hub)


PLUG_PREFIX = "plug"  # bench.common.Fleet names its devices plug-000, plug-001, …


def plug_id(i: int) -> str:
    return f"{PLUG_PREFIX}-{i:03d}"


# --- the shop -----------------------------------------------------------------------


def fill_shop(db_url: str, devices: int) -> None:
    """Members with badges, the laser bound to the reader, a tool for every power meter."""
    engine = make_engine(db_url)
    migrate(engine)
    with session_factory(engine).begin() as s:
        ada = Member(handle="ada", name="Ada L.", roles=["member"])
        bob = Member(handle="bob", name="Bob B.", roles=["member"])
        s.add_all([ada, bob])
        s.add(Training(id="laser", name="Laser cutter"))
        s.flush()
        s.add(Badge(uid=GRANTED_UID, member_id=ada.id))
        s.add(Badge(uid=DENIED_UID, member_id=bob.id))
        s.add(TrainingGrant(training_id="laser", member_id=ada.id))
        s.add(
            Tool(
                id=TOOL,
                name="Laser cutter",
                policy="tap",
                training_id="laser",
                power={"off_w": 5, "busy_w": 200},
            )
        )
        for i in range(devices):
            s.add(Tool(id=f"tool-{i + 1:02d}", name=f"Tool {i + 1}", policy="tap"))
        s.flush()
        s.add(ToolBinding(tool_id=TOOL, kind="device", ref=READER))
        for i in range(devices):
            s.add(ToolBinding(tool_id=f"tool-{i + 1:02d}", kind="device", ref=plug_id(i)))
    engine.dispose()


# --- the child processes --------------------------------------------------------------


def run_echo(port: int, ready: Any, stop: Any, max_s: float, parent: int) -> None:
    """Republish every request to the reply topic, from the network thread, at once."""
    logging.basicConfig(level=logging.WARNING)
    link: MqttLink

    def on_request(msg: Received) -> None:
        link.publish(ECHO_REP, msg.payload, qos=1)

    link = mqtt_link(port, "bench-echo", on_message=on_request, subscriptions=[ECHO_REQ])
    link.start()
    try:
        if not link.wait_subscribed(10):
            raise RuntimeError("the echo client could not subscribe")
        ready.set()
        deadline = time.monotonic() + max_s
        while not stop.wait(1.0) and time.monotonic() < deadline and not orphaned(parent):
            pass
    finally:
        link.stop()


def badge_body(seq: int, uid: str) -> str:
    """The probe reader's badge event (boot 1), stamped with the time now."""
    return json.dumps(
        {
            "boot": 1,
            "seq": seq,
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds")[:-6] + "Z",
            "type": "badge",
            "uid": uid,
            "replay": False,
        },
        separators=(",", ":"),
    )


class Waiter:
    """Replies by key, stamped in the network thread the moment they arrive."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.got: dict[Any, tuple[float, bytes]] = {}

    def put(self, key: Any, payload: bytes) -> None:
        t = time.perf_counter()
        with self.cond:
            self.got[key] = (t, payload)
            self.cond.notify_all()

    def wait(self, key: Any, timeout: float) -> tuple[float, bytes] | None:
        with self.cond:
            self.cond.wait_for(lambda: key in self.got, timeout)
            return self.got.get(key)


def run_probe(
    port: int,
    badges: int,
    warmup: int,
    gap_s: float,
    timeout: float,
    give_up: int,
    load_until: float,
    results: Any,
) -> None:
    """The reader at the laser: badge, wait for the reply; echo, wait for the echo."""
    logging.basicConfig(level=logging.WARNING)
    cmds, echoes = Waiter(), Waiter()
    unexpected: list[str] = []

    def on_message(msg: Received) -> None:
        if msg.topic == ECHO_REP:
            echoes.put(int(msg.payload), msg.payload)
            return
        body = json.loads(msg.payload)
        if "re" in body:
            cmds.put(body["re"], msg.payload)
        else:
            unexpected.append(msg.payload.decode())

    link = mqtt_link(
        port, "bench-probe", on_message=on_message, subscriptions=[cmd_topic(READER), ECHO_REP]
    )
    link.start()
    hub_rtt: list[float] = []
    echo_rtt: list[float] = []
    hub_at: list[float] = []  # when each counted probe was sent, s after the first
    echo_at: list[float] = []
    missing_hub: list[int] = []
    missing_echo: list[int] = []
    actions: dict[str, int] = {}
    wrong: list[str] = []
    cpu0 = time.process_time()
    started = time.perf_counter()
    try:
        if not link.wait_subscribed(10):
            raise RuntimeError("the probe could not subscribe")
        granted = False  # Ada's session at the laser
        aborted = False
        load_ended = False
        sent = 0
        topic = event_topic(READER)
        for seq in range(warmup + badges):
            if time.time() > load_until:
                load_ended = True  # measuring on without the load would flatter both
                break
            counted = seq >= warmup
            uid = GRANTED_UID if seq % 2 == 0 else DENIED_UID
            body = badge_body(seq, uid)
            t0 = time.perf_counter()
            link.publish(topic, body, qos=1)
            sent += 1
            got = cmds.wait(seq, timeout)
            if got is None:
                missing_hub.append(seq)
                if missing_hub[-give_up:] == list(range(seq - give_up + 1, seq + 1)):
                    aborted = True  # the hub stopped answering: no point going on
                    break
            else:
                reply = json.loads(got[1])
                action = reply.get("action", "?")
                actions[action] = actions.get(action, 0) + 1
                expect = ("release" if granted else "grant") if uid == GRANTED_UID else "deny"
                if action != expect:
                    wrong.append(got[1].decode())
                if uid == GRANTED_UID and action in ("grant", "release"):
                    granted = action == "grant"
                if counted:
                    hub_rtt.append(got[0] - t0)
                    hub_at.append(t0 - started)
            time.sleep(gap_s)

            t0 = time.perf_counter()
            link.publish(ECHO_REQ, str(seq), qos=1)
            got = echoes.wait(seq, timeout)
            if got is None:
                missing_echo.append(seq)
            elif counted:
                echo_rtt.append(got[0] - t0)
                echo_at.append(t0 - started)
            time.sleep(gap_s)
        elapsed = time.perf_counter() - started
        # Late replies are not missing; only those that never come are.
        time.sleep(min(timeout, 2.0))
        late_hub = [s for s in missing_hub if s in cmds.got]
        late_echo = [s for s in missing_echo if s in echoes.got]
    finally:
        link.stop()
    results.put(
        {
            "probe": {
                "hub_rtt": hub_rtt,
                "echo_rtt": echo_rtt,
                "hub_at": hub_at,
                "echo_at": echo_at,
                "badges_sent": sent,
                "missing_hub": len(missing_hub) - len(late_hub),
                "late_hub": len(late_hub),
                "missing_echo": len(missing_echo) - len(late_echo),
                "late_echo": len(late_echo),
                "aborted": aborted,
                "load_ended": load_ended,
                "actions": actions,
                "unexpected_actions": len(wrong),
                "unexpected_examples": wrong[:5],
                "other_cmds": len(unexpected),
                "seconds": round(elapsed, 3),
                "cpu_s": round(time.process_time() - cpu0, 3),
            }
        }
    )


# --- measuring --------------------------------------------------------------------------


def summary(samples: list[float]) -> dict[str, float]:
    return latency_ms(samples, percentiles=(50, 90, 99), digits=3)


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux ``/proc``); 0 elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def machine() -> dict[str, Any]:
    # The load average shows other work on the machine (the bench does not run yet).
    return {**machine_facts(), "loadavg_1m_at_start": round(os.getloadavg()[0], 2)}


def wait_until(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _get(results: Any, key: str, timeout: float, child: Any) -> dict[str, Any]:
    """The result ``child`` put under ``key`` (children may finish in any order)."""
    deadline = time.monotonic() + timeout
    while key not in _received:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError(f"no result from the {key} process after {timeout:.0f} s")
        try:
            _received.update(results.get(timeout=min(left, 1.0)))
        except queue.Empty:
            if not child.is_alive() and child.exitcode:
                raise RuntimeError(
                    f"the {key} process failed (exit code {child.exitcode})"
                ) from None
    return _received.pop(key)


_received: dict[str, Any] = {}


class HubStuck(RuntimeError):
    """The hub stopped answering; its threads' stacks say where it waits."""

    def __init__(self, message: str, stacks: dict[str, list[str]]):
        super().__init__(message)
        self.stacks = stacks


def start_shop(workdir: Path, devices: int) -> tuple[PrivateBroker, Hub]:
    """A private Mosquitto and a hub on a fresh database holding the bench's shop."""
    broker = PrivateBroker(workdir / "mosquitto").start()
    hub: Hub | None = None
    try:
        data_dir = workdir / "data"
        # The hub writes its signing key there and does not create the folder itself.
        data_dir.mkdir(parents=True)
        db_url = f"sqlite:///{data_dir / 'peershop.db'}"
        fill_shop(db_url, devices)
        hub = Hub(hub_config(data_dir, db_url, broker.port, "bench-hub"))
        hub.start()
        if not hub.wait_ready(15):
            raise RuntimeError("the hub did not connect")
        # The hub's start-up messages (tool states, allow-lists) leave through the
        # outbox; a hub that cannot deliver them will not answer badges either.
        if not wait_until(lambda: hub.outbox.pending() == 0, 10):
            raise HubStuck("the hub's outbox did not drain after start-up", thread_stacks(hub))
    except BaseException as exc:
        if hub is not None and not stop_within(
            hub.stop, 30 if not isinstance(exc, HubStuck) else 2
        ):
            UNCLEAN.append("a hub's stop() did not return")
        broker.stop()
        raise
    return broker, hub


def thread_stacks(hub: Hub, depth: int = 4) -> dict[str, list[str]]:
    """The innermost frames of the hub's threads, for a stuck hub's report."""
    frames = sys._current_frames()
    threads = [hub._thread, hub._timer, hub.outbox._thread, hub.link.client._thread]
    stacks = {}
    for thread in threads:
        if thread is None or thread.ident is None:
            continue
        frame = frames.get(thread.ident)
        lines = []
        while frame is not None and len(lines) < depth:
            code = frame.f_code
            where = Path(code.co_filename)
            lines.append(f"{where.parent.name}/{where.name}:{frame.f_lineno} {code.co_name}")
            frame = frame.f_back
        stacks[thread.name] = lines
    return stacks


def stop_within(fn: Any, timeout: float) -> bool:
    """Call ``fn`` in a daemon thread; False if it has not returned after ``timeout``."""
    thread = threading.Thread(target=fn, name="bench-stop", daemon=True)
    thread.start()
    thread.join(timeout)
    return not thread.is_alive()


def run(args: argparse.Namespace) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    report: dict[str, Any] = {"bench": "decision", "machine": machine()}
    report["settings"] = {
        "badges": args.badges,
        "warmup": args.warmup,
        "telemetry_devices": args.devices,
        "telemetry_rate_per_s": args.rate,
        "gap_ms": args.gap * 1000,
        "reply_timeout_s": args.timeout,
        "hub_switch_interval_s": sys.getswitchinterval(),
    }
    with tempfile.TemporaryDirectory(prefix="peershop-bench-decision-") as tmp:
        workdir = Path(tmp)
        # A hub that deadlocks at start-up is a hub bug (see bench/README.md): it is
        # reported, with where its threads wait, and a fresh hub is measured instead.
        report["stuck_starts"] = 0
        for attempt in range(args.start_attempts):
            try:
                broker, hub = start_shop(workdir / f"attempt-{attempt + 1}", args.devices)
                break
            except HubStuck as exc:
                report["stuck_starts"] += 1
                report.setdefault("stuck_start", {"error": str(exc), "hub_threads": exc.stacks})
        else:
            report["error"] = f"the hub got stuck at each of {args.start_attempts} starts"
            return report
        hub_ok = True
        children: list[Any] = []
        stop = ctx.Event()
        results = ctx.Queue()
        # Every child ends by itself by then, even if this process is killed.
        max_s = (args.badges + args.warmup) * (args.gap + 0.05) * 2 + 120
        # The power meters publish a fixed number of events, paced: enough to outlast
        # the probe (which stops early, and says so, if they run out first).
        load_s = args.load_seconds or args.settle + (args.badges + args.warmup) * 0.02 + 5
        per_device = max(1, round(args.rate * load_s / args.devices))
        fleet = Fleet(
            broker.port,
            devices=args.devices,
            per_device=per_device,
            boot=1,
            rate=args.rate,
            prefix=PLUG_PREFIX,
        )
        fleet_entered = False
        try:
            parent = os.getpid()
            echo_ready = ctx.Event()
            echo = ctx.Process(
                target=run_echo,
                args=(broker.port, echo_ready, stop, max_s, parent),
                name="echo",
                daemon=True,
            )
            children.append(echo)
            echo.start()
            fleet.__enter__()
            fleet_entered = True
            if not echo_ready.wait(30):
                raise RuntimeError("the echo client did not start")
            fleet.go()
            load_until = time.time() + fleet.total / args.rate
            time.sleep(args.settle)  # let the load reach its steady state

            assert broker.process is not None
            pids = {"mosquitto": broker.process.pid, "load_process": fleet.process.pid}
            pids["echo_process"] = echo.pid
            cpu_before = {name: proc_cpu_s(pid) for name, pid in pids.items()}
            cpu_before["hub_process"] = time.process_time()
            probe = ctx.Process(
                target=run_probe,
                args=(
                    broker.port,
                    args.badges,
                    args.warmup,
                    args.gap,
                    args.timeout,
                    args.give_up,
                    load_until,
                    results,
                ),
                name="probe",
                daemon=True,
            )
            children.append(probe)
            wall0 = time.perf_counter()
            probe.start()
            probe_result = _get(results, "probe", max_s, probe)
            wall = time.perf_counter() - wall0
            cpu = {name: proc_cpu_s(pid) - cpu_before[name] for name, pid in pids.items()}
            cpu["hub_process"] = time.process_time() - cpu_before["hub_process"]
            cpu["probe_process"] = probe_result["cpu_s"]
            probe.join(10)
            if probe_result["aborted"]:
                hub_ok = False
                report["hub_threads"] = thread_stacks(hub)

            load_result = fleet.result(timeout=load_s + 60)
            seconds = load_result["finished"] - load_result["started"]
            load_report = {
                "devices": args.devices,
                "sent_and_acked": load_result["sent"],
                "seconds": round(seconds, 3),
                "rate_per_s": round(load_result["sent"] / seconds, 1) if seconds else 0.0,
                "outlasted_probe": not probe_result["load_ended"],
            }
            stop.set()
            for child in children:
                child.join(10)

            expected_events = probe_result["badges_sent"] + load_result["sent"]
            caught_up = hub_ok and wait_until(lambda: hub.counters.events >= expected_events, 60)
            c = hub.counters
            report["hub"] = {
                "events": c.events,
                "expected_events": expected_events,
                "caught_up": caught_up,
                "decisions": c.decisions,
                "duplicates": c.duplicates,
                "dead_letters": c.dead_letters,
                "internal_errors": c.internal_errors,
                "db_errors": c.db_errors,
                "batches": c.batches,
                "mean_batch": round(c.messages / c.batches, 1) if c.batches else 0,
            }
        finally:
            stop.set()
            if fleet_entered:
                fleet.__exit__(None, None, None)
            for child in children:
                child.join(5)
                if child.is_alive():
                    child.terminate()
                    child.join(5)
                if child.is_alive():
                    child.kill()
                    child.join()
            # A stuck hub's stop() never returns (paho joins its network thread).
            if not stop_within(hub.stop, 30 if hub_ok else 2):
                UNCLEAN.append("the hub's stop() did not return")
            broker.stop()
            results.close()

    if args.samples:
        with open(args.samples, "w") as out:
            for kind in ("hub", "echo"):
                pairs = zip(probe_result[f"{kind}_at"], probe_result[f"{kind}_rtt"], strict=True)
                for at, rtt in pairs:
                    out.write(f"{kind}\t{at:.6f}\t{rtt * 1000:.3f}\n")
    hub_s = summary(probe_result.pop("hub_rtt"))
    echo_s = summary(probe_result.pop("echo_rtt"))
    target = None
    if hub_s.get("n") and echo_s.get("n"):
        bound = min(2 * echo_s["p99_ms"] + 5.0, TARGET_ABS_MS)
        target = {
            "hub_p99_ms": hub_s["p99_ms"],
            "bound_ms": round(bound, 3),
            "rule": "hub p99 <= min(2 x echo p99 + 5 ms, 20 ms), no reply missing or late",
            "met": hub_s["p99_ms"] <= bound
            and probe_result["missing_hub"] == 0
            and probe_result["late_hub"] == 0
            and not probe_result["aborted"]
            and not probe_result["load_ended"],
        }
    report["round_trip"] = {"hub": hub_s, "echo": echo_s}
    report["target"] = target
    report["replies"] = {
        "missing": probe_result["missing_hub"],
        "late": probe_result["late_hub"],
        "aborted": probe_result["aborted"],
        "probe_stopped_as_load_ended": probe_result["load_ended"],
        "actions": probe_result["actions"],
        "unexpected": probe_result["unexpected_actions"],
        "unexpected_examples": probe_result["unexpected_examples"],
        "echo_missing": probe_result["missing_echo"],
        "echo_late": probe_result["late_echo"],
    }
    report["load"] = load_report
    report["cpu_share_during_probe"] = {"wall_s": round(wall, 3)} | {
        name: round(seconds / wall, 3) for name, seconds in cpu.items()
    }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--badges", type=int, default=2000, help="measured badge round trips")
    parser.add_argument("--warmup", type=int, default=50, help="round trips not counted")
    parser.add_argument("--devices", type=int, default=20, help="power meters")
    parser.add_argument("--rate", type=float, default=1000.0, help="telemetry messages/s")
    parser.add_argument("--gap", type=float, default=0.002, help="pause after each probe, s")
    parser.add_argument("--timeout", type=float, default=2.0, help="a reply later is missing")
    parser.add_argument("--settle", type=float, default=2.0, help="load before probing, s")
    parser.add_argument(
        "--load-seconds", type=float, help="how long the power meters run (default: enough)"
    )
    parser.add_argument(
        "--give-up", type=int, default=5, help="stop after this many replies missing in a row"
    )
    parser.add_argument(
        "--start-attempts", type=int, default=5, help="fresh hubs to try if one gets stuck"
    )
    parser.add_argument(
        "--switch-interval",
        type=float,
        help="sys.setswitchinterval() for the hub's process, s (a diagnosis: Python's is 0.005)",
    )
    parser.add_argument("--samples", help="write every sample (kind, sent at s, ms) to FILE")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    # SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C, so the broker and children go too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    report = run(args)
    print(json.dumps(report, indent=2), flush=True)
    replies = report.get("replies") or {}
    failed = "error" in report or replies.get("aborted") or replies.get("missing")
    if UNCLEAN:
        # A stuck hub's threads hold locks that interpreter shutdown could wait on.
        sys.stdout.flush()
        os._exit(1 if failed else 0)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
