"""Server time of the floor, tasks and period pages and the main API reads on a big
SQLite database.

Builds a database with 1,000,000 events and 100,000 usage sessions (executemany in
large transactions), plus a task board (300 tasks, 10 closed weeks of weight history)
and 10 closed periods with every member's balance, then times requests through the
WSGI app (Flask's test client: server time, no network), among them the fragments
that open task and period pages fetch on each change.  ``/healthz`` (one
``SELECT 1``) is the baseline in the same run.  Each read reports its wall time and
the request thread's CPU time.  Prints one JSON object.

    .venv/bin/python bench/web.py [--events 1000000] [--sessions 100000] [--requests 200]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from decimal import Decimal

from sqlalchemy import insert, text

from hub.store.db import make_engine, migrate, session_factory
from hub.store.models import (
    EffortRecord,
    Period,
    PeriodBalance,
    PeriodResourceCost,
    Project,
    Task,
    TaskWant,
    TaskWeightHistory,
)
from web import create_app
from web.auth import create_token

TOOLS, MEMBERS, DEVICES = 40, 300, 60
TASKS, WEEKS, EFFORT_PER_WEEK = 300, 10, 2000


def build(url: str, n_events: int, n_sessions: int) -> None:
    engine = make_engine(url)
    migrate(engine)
    rnd = random.Random(7)
    t0 = datetime(2026, 1, 1)  # naive UTC, as stored
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO members (handle, name, roles, suspended, created_at) "
                "VALUES (:h, :n, '[\"member\"]', 0, :t)"
            ),
            [{"h": f"m{i}", "n": f"Member {i}", "t": t0} for i in range(MEMBERS)],
        )
        conn.execute(
            text(
                "INSERT INTO tools (id, name, policy, power, options, locked) "
                "VALUES (:id, :n, 'tap', '{}', '{}', 0)"
            ),
            [{"id": f"tool-{i}", "n": f"Tool {i}"} for i in range(TOOLS)],
        )
        conn.execute(
            text(
                "INSERT INTO devices (id, approval, online, boot, fw, kind, last_seen, "
                "last_event_id) VALUES (:id, 'approved', :on, 1, '1.0', '[\"reader\"]', :t, :e)"
            ),
            [
                {"id": f"node-{i}", "on": i % 7 != 0, "t": t0, "e": n_events - i}
                for i in range(DEVICES)
            ],
        )
        conn.execute(
            text("INSERT INTO tool_bindings (tool_id, kind, ref) VALUES (:t, 'device', :d)"),
            [{"t": f"tool-{i}", "d": f"node-{i}"} for i in range(TOOLS)],
        )
    step = 50_000
    for start in range(0, n_events, step):
        rows = []
        for i in range(start, min(start + step, n_events)):
            at = t0 + timedelta(seconds=i * 2)
            if i % 10 == 0:
                kind, data = "badge", '{"uid":"04A1B2C3D4E5F6"}'
            else:
                kind, data = "power", '{"w":%.1f}' % (rnd.random() * 900)
            rows.append((f"node-{i % DEVICES}", 1, i // DEVICES, kind, at, at, 0, data))
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO events (device_id, boot, seq, type, device_ts, received_at, "
                "replay, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
    rows = []
    for i in range(n_sessions):
        start = t0 + timedelta(minutes=i * 3)
        is_open = i >= n_sessions - 5
        rows.append(
            (
                f"s{i}",
                f"tool-{i % TOOLS}",
                f"m{rnd.randrange(MEMBERS)}",
                start,
                None if is_open else start + timedelta(minutes=40),
                1200.0,
                600.0,
                150.0,
                None if is_open else "tap_out",
            )
        )
    with engine.begin() as conn:
        conn.exec_driver_sql(
            'INSERT INTO usage_sessions (key, tool_id, member, start, "end", busy_s, idle_s, '
            "wh, close_reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    build_economy(engine, t0 + timedelta(minutes=3 * n_sessions), rnd)
    with engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    engine.dispose()


def build_economy(engine, end: datetime, rnd: random.Random) -> int:
    """Tasks and ``WEEKS`` closed weeks ending at ``end`` (Core inserts: a close's rows
    are written as the close writes them, without running the close)."""
    end = end.replace(tzinfo=UTC)
    weeks = [
        (end - timedelta(weeks=WEEKS - k), end - timedelta(weeks=WEEKS - k - 1))
        for k in range(WEEKS)
    ]
    members = [f"m{i}" for i in range(MEMBERS)]
    with engine.begin() as conn:
        conn.execute(insert(Project.__table__), [{"id": "commons", "name": "Shop commons"}])
        conn.execute(
            insert(Task.__table__),
            [
                {
                    "id": f"task-{i}",
                    "title": f"Task {i}",
                    "project_id": "commons",
                    "slots": 1 + i % 3,
                    "hours": Decimal(1),
                    "weight": Decimal(1),
                }
                for i in range(TASKS)
            ],
        )
        conn.execute(
            insert(TaskWant.__table__),
            [
                {"task_id": f"task-{rnd.randrange(TASKS)}", "member": m, "at": end}
                for m in members[:100]
            ],
        )
        for k, (start, stop) in enumerate(weeks):
            period_id = conn.execute(
                insert(Period.__table__).values(start=start, end=stop, closed_at=stop)
            ).inserted_primary_key[0]
            credited = [Decimal(rnd.randrange(0, 400)) / 100 for _ in members]
            mean = sum(credited) / len(members)
            conn.execute(
                insert(PeriodBalance.__table__),
                [
                    {
                        "period_id": period_id,
                        "project_id": "commons",
                        "member": m,
                        "credited": c,
                        "expected": mean,
                        "balance": c - mean,
                        "running": (c - mean) * (k + 1),
                    }
                    for m, c in zip(members, credited, strict=True)
                ],
            )
            conn.execute(
                insert(PeriodResourceCost.__table__),
                [
                    {
                        "period_id": period_id,
                        "project_id": "commons",
                        "resource": f"tool-{t}",
                        "units": Decimal(30),
                        "unit_cost": Decimal("0.4"),
                        "scarce_units": Decimal(0),
                        "scarce_multiplier": None,
                    }
                    for t in range(TOOLS)
                ],
            )
            conn.execute(
                insert(TaskWeightHistory.__table__),
                [
                    {
                        "task_id": f"task-{i}",
                        "period_id": period_id,
                        "weight": Decimal(1) + Decimal(k % 3) / 10,
                        "slots": 1,
                        "volunteers": 1,
                        "next_weight": Decimal(1),
                        "pinned": False,
                    }
                    for i in range(TASKS)
                ],
            )
            conn.execute(
                insert(EffortRecord.__table__),
                [
                    {
                        "key": f"bench:{k}:{j}",
                        "member": rnd.choice(members),
                        "task_id": f"task-{rnd.randrange(TASKS)}",
                        "project_id": "commons",
                        "start": start + timedelta(minutes=5 * j),
                        "end": None,
                        "hours": Decimal(1),
                        "weight": Decimal(1),
                        "source": "board",
                    }
                    for j in range(EFFORT_PER_WEEK)
                ],
            )
    return period_id


def time_requests(client, path: str, n: int, headers: dict[str, str]) -> dict[str, float]:
    for _ in range(5):  # warm caches
        assert client.get(path, headers=headers).status_code == 200, path
    samples, cpu = [], []
    for _ in range(n):
        started, started_cpu = time.perf_counter(), time.thread_time()
        response = client.get(path, headers=headers)
        response.get_data()
        samples.append((time.perf_counter() - started) * 1000)
        # The test client serves the request on this thread: its CPU time is the
        # server's work, which other load on a shared machine inflates far less.
        cpu.append((time.thread_time() - started_cpu) * 1000)
        assert response.status_code == 200, path
    samples.sort()
    cpu.sort()
    return {
        "p50_ms": round(statistics.median(samples), 2),
        "p95_ms": round(samples[int(0.95 * (len(samples) - 1))], 2),
        "max_ms": round(samples[-1], 2),
        "cpu_p50_ms": round(statistics.median(cpu), 2),
        "cpu_p95_ms": round(cpu[int(0.95 * (len(cpu) - 1))], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        started = time.perf_counter()
        build(url, args.events, args.sessions)
        build_s = time.perf_counter() - started
        engine = make_engine(url)
        sm = session_factory(engine)
        with sm.begin() as session:
            token = create_token(session, "bench", "coordinator")
            last = session.scalar(text("SELECT max(id) FROM periods"))
        app = create_app({"SECRET_KEY": "bench"}, sm=sm)
        client = app.test_client()
        auth = {"Authorization": f"Bearer {token}"}
        paths = {
            "baseline /healthz": "/healthz",
            "floor /": "/",
            "/api/v1/tools": "/api/v1/tools",
            "/api/v1/devices": "/api/v1/devices",
            "/api/v1/sessions": "/api/v1/sessions",
            "/api/v1/sessions?tool=tool-3": "/api/v1/sessions?tool=tool-3",
            "/api/v1/sessions?member=m7": "/api/v1/sessions?member=m7",
            "tasks /tasks": "/tasks",
            "tasks fragment /tasks/board": "/tasks/board",
            "period /periods/{last}": f"/periods/{last}",
            "period fragment /periods/{last}/fragment": f"/periods/{last}/fragment",
            "/api/v1/tasks": "/api/v1/tasks",
            "/api/v1/periods": "/api/v1/periods",
            "/api/v1/periods/{last}/allocations": f"/api/v1/periods/{last}/allocations",
        }
        load_before = os.getloadavg()[0]
        results = {
            name: time_requests(client, path, args.requests, auth) for name, path in paths.items()
        }
        load_after = os.getloadavg()[0]
        engine.dispose()
    worst = max(r["p95_ms"] for name, r in results.items() if not name.startswith("baseline"))
    worst_cpu = max(
        r["cpu_p95_ms"] for name, r in results.items() if not name.startswith("baseline")
    )
    print(
        json.dumps(
            {
                "events": args.events,
                "sessions": args.sessions,
                "requests_each": args.requests,
                "build_s": round(build_s, 1),
                "results": results,
                "worst_p95_ms": worst,
                "worst_cpu_p95_ms": worst_cpu,
                "target_p95_ms": 100,
                # the machine may be shared: its load says how much of it this run had
                "load_avg_1min": [round(load_before, 2), round(load_after, 2)],
                "machine": f"{platform.machine()} {platform.python_implementation()} "
                f"{platform.python_version()}",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
