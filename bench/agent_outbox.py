"""What the agent's resend window costs its SQLite outbox (devices/outbox.py).

``.venv/bin/python -m bench.agent_outbox [--events 3000] [--batch 10] [--window 2000]``

Each event goes through the store as in the agent: ``add`` (a committed, fsynced
insert), then its PUBACK in batches of ``--batch``.  The *window* run records the PUBACK
(``acked``) and prunes once a second, as the agent does now; the *baseline* run, in the
same process on the same disk, deletes the rows on PUBACK as the agent did before.
``resend_ms`` is what a reconnect costs: reading the ``--window`` events acknowledged
within the window (``recent``) from a store that holds them.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from bench.common import dump, machine
from devices.outbox import AgentStore


def body(seq: int) -> str:
    return json.dumps(
        {"boot": 1, "seq": seq, "ts": "2026-11-28T12:00:00.000Z", "type": "power", "w": 812.4},
        separators=(",", ":"),
    )


def run(path: Path, events: int, batch: int, window: bool) -> float:
    """Events per second through add + PUBACK bookkeeping."""
    store = AgentStore(path)
    pruned_at = 0.0
    started = time.perf_counter()
    acks: list[tuple[int, int]] = []
    for seq in range(events):
        store.add(1, seq, body(seq))
        acks.append((1, seq))
        if len(acks) == batch:
            if window:
                now = time.time()
                store.acked(acks, now)
                if now - pruned_at >= 1.0:
                    pruned_at = now
                    store.prune(now - 10.0)
            else:
                with store._lock:  # the old path: delete on PUBACK
                    store._db.execute("BEGIN")
                    store._db.executemany("DELETE FROM outbox WHERE boot = ? AND seq = ?", acks)
                    store._db.execute("COMMIT")
            acks = []
    elapsed = time.perf_counter() - started
    store.close()
    return events / elapsed


def resend_ms(path: Path, rows: int) -> float:
    store = AgentStore(path)
    now = time.time()
    for seq in range(rows):
        store.add(1, seq, body(seq))
    store.acked([(1, s) for s in range(rows)], now)
    started = time.perf_counter()
    got = store.recent(10.0)
    elapsed = (time.perf_counter() - started) * 1000
    assert len(got) == rows
    store.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--window", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        folder = Path(tmp)
        baseline = run(folder / "baseline.db", args.events, args.batch, window=False)
        windowed = run(folder / "window.db", args.events, args.batch, window=True)
        resend = resend_ms(folder / "resend.db", args.window)
    print(
        dump(
            {
                "events": args.events,
                "ack_batch": args.batch,
                "baseline_delete_on_puback_events_per_s": round(baseline, 1),
                "window_events_per_s": round(windowed, 1),
                "window_vs_baseline": round(windowed / baseline, 3),
                "resend_window_rows": args.window,
                "resend_read_ms": round(resend, 2),
                "machine": machine(),
            }
        )
    )


if __name__ == "__main__":
    main()
