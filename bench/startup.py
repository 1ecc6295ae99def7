"""How long a hub takes to start on a big event log, and the part of it that resumes the
rules (open sessions replayed from the log, presence, every tool's power state).

``.venv/bin/python -m bench.startup [--events 1000000] [--tools 40] [--open 10]`` builds
a SQLite database of ``--events`` events (half the tools report power, half only badge;
a door; ``--open`` sessions left open by the hub that stopped), then constructs a `Hub`
on it three times (its start-up: migrate, load the shop, the seen index, resume, close
what was open, allow-lists) and prints one JSON object.  No broker is needed: the hub's
MQTT link starts only with ``Hub.start``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import dump, hub_config, machine
from hub.service import service
from hub.shopfile.apply import apply_shop
from hub.shopfile.parse import parse_shop
from hub.store.db import make_engine, migrate, session_factory
from hub.store.models import BadgeDecision, Event, UsageSession

CHUNK = 50_000


def shop(tools: int) -> str:
    lines = [
        "members:",
        '  - {handle: ada, name: Ada L., badges: ["04A1B2C3D4E5F6"]}',
        "tools:",
    ]
    for n in range(tools):
        lines.append(
            f"  - {{id: tool-{n:02d}, name: Tool {n}, devices: [node-{n:02d}], "
            "power: {off_w: 5, busy_w: 100, idle_timeout: 20m}}"
        )
    lines += ["stations:", "  - {device: door, kind: sign_in}"]
    return "\n".join(lines) + "\n"


def build(url: str, events: int, tools: int, open_sessions: int) -> None:
    engine = make_engine(url)
    migrate(engine)
    sm = session_factory(engine)
    with sm.begin() as session:
        apply_shop(session, parse_shop(shop(tools)))
    devices = [f"node-{n:02d}" for n in range(tools)] + ["door"]
    t0 = datetime.now(UTC) - timedelta(seconds=events // 10)
    seqs = dict.fromkeys(devices, 0)
    rows: list[dict[str, Any]] = []
    with engine.begin() as conn:
        for i in range(events):
            device = devices[i % len(devices)]
            powered = device != "door" and int(device[-2:]) % 2 == 0
            at = t0 + timedelta(milliseconds=100 * i)
            if powered and i % 50:
                kind, data = "power", {"w": float(i % 7) * 60.0}
            else:
                kind, data = "badge", {"uid": "04A1B2C3D4E5F6"}
            rows.append(
                {
                    "device_id": device,
                    "boot": 1,
                    "seq": seqs[device],
                    "type": kind,
                    "device_ts": at,
                    "received_at": at,
                    "replay": False,
                    "data": data,
                }
            )
            seqs[device] += 1
            if len(rows) == CHUNK:
                conn.execute(Event.__table__.insert(), rows)
                rows = []
        if rows:
            conn.execute(Event.__table__.insert(), rows)
    # sessions the stopped hub left open, each opened by a granted badge near the end
    with sm.begin() as session:
        for n in range(open_sessions):
            device = f"node-{n:02d}"
            badge = session.scalars(select_last_badge(device)).first()
            session.add(
                BadgeDecision(
                    device_id=device, boot=1, seq=badge.seq, at=badge.received_at,
                    uid="04A1B2C3D4E5F6", member="ada", tool_id=f"tool-{n:02d}",
                    action="grant",
                )
            )  # fmt: skip
            session.add(
                UsageSession(
                    key=f"open-{n}", tool_id=f"tool-{n:02d}", member="ada",
                    start=badge.received_at, busy_s=0.0, idle_s=0.0, wh=0.0,
                )
            )  # fmt: skip
    engine.dispose()


def select_last_badge(device: str):
    from sqlalchemy import select

    return (
        select(Event)
        .where(Event.device_id == device, Event.type == "badge")
        .order_by(Event.id.desc())
        .limit(1)
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--tools", type=int, default=40)
    parser.add_argument("--open", type=int, default=10)
    parser.add_argument("--starts", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="peershop-startup-") as tmp:
        folder = Path(tmp)
        url = f"sqlite:///{folder / 'peershop.db'}"
        started = time.perf_counter()
        build(url, args.events, args.tools, args.open)
        built_s = time.perf_counter() - started
        # the part that resumes the rules: `resume` now, `restore` before it
        name = "resume" if hasattr(service, "resume") else "restore"
        inner = getattr(service, name)
        spent: list[float] = []

        def timed(*a: Any, **kw: Any) -> Any:
            begun = time.perf_counter()
            try:
                return inner(*a, **kw)
            finally:
                spent.append(time.perf_counter() - begun)

        setattr(service, name, timed)
        starts = []
        for n in range(args.starts):
            cfg = hub_config(folder / f"hub-{n}", url, 1, f"bench-startup-{n}")
            begun = time.perf_counter()
            hub = service.Hub(cfg)
            starts.append(time.perf_counter() - begun)
            hub.engine.dispose()
        print(
            dump(
                {
                    "events": args.events,
                    "tools": args.tools,
                    "open_sessions": args.open,
                    "build_s": round(built_s, 1),
                    "hub_start_s": [round(s, 3) for s in starts],
                    f"{name}_s": [round(s, 3) for s in spent],
                    "machine": machine(),
                }
            )
        )


if __name__ == "__main__":
    main()
