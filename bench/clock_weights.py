"""Bench rule (a)'s ``clock`` mode: what the rising weights cost the hub and the board.

Usage: ``.venv/bin/python bench/clock_weights.py [--claims 5000] [--history 100000]``

One SQLite file: 2,000 members, 300 tasks in one project, ``--history`` station effort
records spread over the 20 weeks before the open period, and in the open period
``--claims`` board claims and as many station efforts.  Each figure is measured with
the project in ``close`` mode (the baseline, the same run, the same data) and in
``clock`` mode, best of ``--repeat`` runs (default 5):

Figures are CPU seconds of this process, the least of the runs.

* ``load_shop_s``: :func:`hub.store.shop_store.load_shop`, which the hub runs at start, on
  every ``shop_version`` change (a claim in a clock project is one) and after a close;
* ``board_s``: :func:`hub.ledger.taskboard.board`, the task board page and ``GET /api/v1/tasks``;
* ``station_effort_us``: one effort at a task station through the pure
  :class:`~hub.rules.engine.ShopEngine` (a task button, a badge in, a badge out), per effort,
  over 2,000 efforts with the loaded data (no database).

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from sqlalchemy import insert, update

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hub.config import load_config
from hub.contract.messages import DeviceEvent
from hub.ledger.taskboard import board
from hub.rules.engine import ShopEngine
from hub.store.db import make_engine, migrate, session_factory
from hub.store.models import (
    Badge,
    EffortRecord,
    Member,
    Period,
    Project,
    ProjectRules,
    Station,
    Task,
    TaskClaim,
)
from hub.store.shop_store import load_shop

MEMBERS, TASKS = 2000, 300
WEEK = datetime(2026, 11, 22, 23, 0, tzinfo=UTC)  # Monday 00:00 in Berlin
NOW = WEEK + timedelta(days=4, hours=3)
CFG = load_config(env={}, search=(), overrides={"site": {"timezone": "Europe/Berlin"}})


def fill(url: str, claims: int, history: int, seed: int = 7) -> None:
    rnd = random.Random(seed)
    engine = make_engine(url)
    migrate(engine)
    with engine.begin() as conn:
        conn.execute(insert(Project), [{"id": "commons", "name": "Commons", "model": "flat_rate"}])
        conn.execute(
            insert(ProjectRules),
            [
                {
                    "project_id": "commons",
                    "gain": Decimal("0.2"),
                    "weight_min": Decimal("0.25"),
                    "weight_max": Decimal("4"),
                    "weight_mode": "close",
                }
            ],
        )
        conn.execute(
            insert(Member), [{"handle": f"m{i}", "name": f"M {i}"} for i in range(MEMBERS)]
        )
        conn.execute(
            insert(Badge), [{"uid": f"{i + 1:08X}", "member_id": i + 1} for i in range(MEMBERS)]
        )
        conn.execute(insert(Station), [{"device_id": "desk", "kind": "task_station"}])
        conn.execute(
            insert(Task),
            [
                {
                    "id": f"t{i}",
                    "title": f"Task {i}",
                    "project_id": "commons",
                    "slots": rnd.randint(1, 40),
                    "hours": Decimal("0.5"),
                    "weight": Decimal(rnd.choice(("0.8", "1", "1.2", "1.5"))),
                }
                for i in range(TASKS)
            ],
        )
        conn.execute(
            insert(Period),
            [
                {
                    "id": w + 1,
                    "start": WEEK - timedelta(weeks=20 - w),
                    "end": WEEK - timedelta(weeks=19 - w),
                }
                for w in range(20)
            ]
            + [{"id": 21, "start": WEEK, "end": WEEK + timedelta(weeks=1)}],
        )

        def effort(i: int, start: datetime) -> dict:
            return {
                "key": f"e{i}",
                "member": f"m{rnd.randrange(MEMBERS)}",
                "task_id": f"t{rnd.randrange(TASKS)}",
                "project_id": "commons",
                "start": start,
                "end": start + timedelta(minutes=30),
                "hours": Decimal("0.5"),
                "weight": Decimal(1),
                "source": "station",
                "device_id": "desk",
            }

        span = 20 * 7 * 86400
        rows = [
            effort(i, WEEK - timedelta(weeks=20) + timedelta(seconds=rnd.randrange(span)))
            for i in range(history)
        ]
        in_week = int((NOW - WEEK).total_seconds())
        rows += [
            effort(history + i, WEEK + timedelta(seconds=rnd.randrange(in_week)))
            for i in range(claims)
        ]
        conn.execute(insert(EffortRecord), rows)
        conn.execute(
            insert(TaskClaim),
            [
                {
                    "task_id": f"t{rnd.randrange(TASKS)}",
                    "member": f"m{rnd.randrange(MEMBERS)}",
                    "period_id": 21,
                    "claimed_at": WEEK + timedelta(seconds=rnd.randrange(in_week)),
                    "weight": Decimal(1),
                }
                for _ in range(claims)
            ],
        )
    engine.dispose()


def best(fn, repeat: int) -> float:
    """The least CPU time of ``repeat`` runs: the machine is shared, CPU time is what
    other load cannot add to (everything here runs on one thread, SQLite in-process)."""
    times = []
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return min(times)


def station_efforts(data, n: int = 2000) -> float:
    """CPU seconds per effort: a task button, a badge in and a badge out at the desk."""
    engine = ShopEngine(data)
    at = NOW
    t0 = time.process_time()
    for i in range(n):
        at += timedelta(seconds=1)
        uid = {"uid": f"{i + 1:08X}"}
        engine.on_event(DeviceEvent("desk", 1, 3 * i, "button", {"name": f"t{i % TASKS}"}), at)
        engine.on_event(DeviceEvent("desk", 1, 3 * i + 1, "badge", uid), at)
        engine.on_event(DeviceEvent("desk", 1, 3 * i + 2, "badge", uid), at)
    return (time.process_time() - t0) / n


def measure(url: str, mode: str, repeat: int) -> dict:
    engine = make_engine(url)
    sm = session_factory(engine)
    with sm.begin() as s:
        s.execute(update(ProjectRules).values(weight_mode=mode))
    with sm() as s:
        load_s = best(lambda: load_shop(s, CFG.site.timezone), repeat)
        data = load_shop(s, CFG.site.timezone)
        board_s = best(lambda: board(s, NOW, CFG), repeat)
        clock_tasks = sum(1 for t in data.tasks.values() if t.clock is not None)
    engine.dispose()
    per_effort = min(station_efforts(data) for _ in range(repeat))
    return {
        "load_shop_s": round(load_s, 4),
        "board_s": round(board_s, 4),
        "station_effort_us": round(per_effort * 1e6, 1),
        "clock_tasks": clock_tasks,
        "station_takes_loaded": len(data.station_takes),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--claims", type=int, default=5000)
    ap.add_argument("--history", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{os.path.join(tmp, 'bench.db')}"
        fill(url, args.claims, args.history)
        baseline = measure(url, "close", args.repeat)
        clock = measure(url, "clock", args.repeat)
    print(
        json.dumps(
            {
                "bench": "clock_weights",
                "members": MEMBERS,
                "tasks": TASKS,
                "claims": args.claims,
                "station_efforts_in_period": args.claims,
                "history_records": args.history,
                "baseline_close_mode": baseline,
                "clock_mode": clock,
                "python": platform.python_version(),
                "machine": platform.machine(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
