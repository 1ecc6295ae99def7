"""Hub memory with a big shop and a long log: issue 9's Raspberry Pi Zero 2 W question.

``.venv/bin/python -m bench.memory [--devices 200] [--members 5000] [--events 1000000]``

Builds a SQLite database with the shop (members with a badge each, one tool per
device, loaded through the shop file like a real shop) and the event log (inserted with
``executemany``, boots of ``--per-boot`` events per device, mostly power samples with a
badge now and then), then starts ``peershop run`` as its own process against a private
Mosquitto.  The hub loads every stored identity into its SeenIndex at start.  Reported:
the hub's RSS (``/proc/PID/status`` VmRSS) once it is up, and after ``--live`` events
flooded in from every device (bench/common.py's publisher process); VmHWM is the peak.
Target: under 120 MB.  RSS is also taken once every tool's signed allow-list (issued at
start, sent through the outbox) has reached the broker.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.common import Fleet, dump, machine
from hub.service.broker import PrivateBroker
from hub.shopfile.apply import apply_shop
from hub.shopfile.parse import parse_shop
from hub.store.db import make_engine, migrate, session_factory
from tests.helpers import HubProcess, Listener, wait_for, write_config

BOOT_LIVE = 1_000_000  # a boot no stored event has


def shop_yaml(devices: int, members: int) -> str:
    lines = ["projects:", "  - {id: commons, name: Commons, model: production_effort}"]
    lines.append("members:")
    for m in range(members):
        uid = f"{0x10000000 + m:08X}"
        lines.append(f'  - {{handle: m{m:05d}, name: Member {m}, badges: ["{uid}"]}}')
    lines.append("tools:")
    for d in range(devices):
        lines.append(
            f"  - {{id: tool-{d:03d}, name: Tool {d}, project: commons, devices: [node-{d:03d}],"
            " policy: tap, power: {off_w: 5, busy_w: 100}}"
        )
    return "\n".join(lines) + "\n"


def build(db_path: Path, devices: int, members: int, events: int, per_boot: int) -> dict:
    started = time.perf_counter()
    engine = make_engine(f"sqlite:///{db_path}")
    migrate(engine)
    with session_factory(engine).begin() as session:
        apply_shop(session, parse_shop(shop_yaml(devices, members)))
    engine.dispose()
    shop_s = time.perf_counter() - started

    rng = random.Random(9)
    per_device = events // devices
    t0 = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=30)
    step = timedelta(days=30) / max(per_device, 1)
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")

    def rows(d: int):
        device = f"node-{d:03d}"
        for n in range(per_device):
            boot, seq = divmod(n, per_boot)
            at = (t0 + step * n).isoformat(sep=" ")
            if n % 50 == 0:
                data = json.dumps({"uid": f"{0x10000000 + rng.randrange(members):08X}"})
                kind = "badge"
            else:
                data = json.dumps({"w": round(rng.uniform(0, 1500), 1)})
                kind = "power"
            yield device, boot, seq, kind, None, at, 0, data

    sql = (
        "INSERT INTO events (device_id, boot, seq, type, device_ts, received_at, replay, data)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    )
    for d in range(devices):
        conn.executemany(sql, rows(d))
        conn.execute(
            "INSERT OR IGNORE INTO devices (id, approval, online, boot, kind) "
            "VALUES (?, 'approved', 0, ?, '[]')",
            (f"node-{d:03d}", (per_device - 1) // per_boot),
        )
    conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    stored = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    conn.close()
    return {
        "events": stored,
        "runs_in_seen_index": devices * -(-per_device // per_boot),
        "shop_load_s": round(shop_s, 1),
        "build_s": round(time.perf_counter() - started, 1),
        "db_mb": round(db_path.stat().st_size / 2**20, 1),
    }


def start_hub(hub: HubProcess, port: int, timeout: float = 900) -> None:
    """``HubProcess.start``, waiting longer: a big shop on a busy Pi (or a shared VM) takes
    more than the tests' 30 s to sign every allow-list and load the log."""
    try:
        hub.start(port)
        return
    except AssertionError:
        if hub.proc is None or hub.proc.poll() is not None:
            raise
    # A fresh broker holds no stale status: the retained birth is this hub's.
    status = Listener(port, "peershop/hub/status")
    try:
        status.wait(lambda msgs: any(b'"online"' in m.payload for m in msgs), timeout=timeout)
    finally:
        status.close()


def status_kb(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0])
    return out


def mb(kb: dict[str, int]) -> dict[str, float]:
    return {k: round(v / 1024, 1) for k, v in kb.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=200)
    ap.add_argument("--members", type=int, default=5_000)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--per-boot", type=int, default=500, help="events per device boot")
    ap.add_argument("--live", type=int, default=20_000, help="events sent to the running hub")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="peershop-memory-") as tmp:
        root = Path(tmp)
        (root / "data").mkdir()
        db_path = root / "data" / "peershop.db"
        built = build(db_path, args.devices, args.members, args.events, args.per_boot)
        broker = PrivateBroker(root / "mosquitto").start()
        config = write_config(
            root / "peershop.toml",
            data_dir=root / "data",
            port=broker.port,
            db_url=f"sqlite:///{db_path}",
            client_id=f"peershop-hub-{uuid.uuid4().hex[:8]}",
        )
        hub = HubProcess(config, root / "hub.log")
        try:
            began = time.perf_counter()
            start_hub(hub, broker.port)
            start_s = time.perf_counter() - began
            assert hub.proc is not None
            after_start = status_kb(hub.proc.pid)
            # the start issued every tool's signed allow-list; the outbox publishes them
            lists = Listener(broker.port, "peershop/dev/+/allowlist")
            try:
                lists.wait(lambda msgs: len(msgs) >= args.devices, timeout=300)
                allowlist_bytes = sum(len(m.payload) for m in lists.messages)
            finally:
                lists.close()
            after_allowlists = status_kb(hub.proc.pid)
            per_device = max(args.live // args.devices, 1)
            conn = sqlite3.connect(db_path, timeout=30)
            try:
                with Fleet(
                    broker.port,
                    devices=args.devices,
                    per_device=per_device,
                    boot=BOOT_LIVE,
                    prefix="node",
                ) as fleet:
                    fleet.go()
                    fleet.result()
                target = built["events"] + per_device * args.devices

                def count() -> int:
                    return conn.execute("SELECT count(*) FROM events").fetchone()[0]

                wait_for(lambda: count() >= target, timeout=300, what="the live events stored")
            finally:
                conn.close()
            after_live = status_kb(hub.proc.pid)
            assert hub.terminate() == 0
        finally:
            if hub.proc is not None and hub.proc.poll() is None:
                hub.terminate()
            broker.stop()

    print(
        dump(
            {
                "bench": "memory",
                "devices": args.devices,
                "members": args.members,
                "database": built,
                "hub_start_s": round(start_s, 1),
                "rss_mb_after_start": mb(after_start),
                "allowlists_mb": round(allowlist_bytes / 2**20, 1),
                "rss_mb_after_allowlists_published": mb(after_allowlists),
                "live_events": per_device * args.devices,
                "rss_mb_after_live": mb(after_live),
                "target_mb": 120,
                "met": after_live["VmHWM"] < 120 * 1024,
                "machine": machine(),
            }
        )
    )


if __name__ == "__main__":
    main()
