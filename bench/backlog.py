"""A hub started on a broker's backlog: memory and time to store it (issue 9).

``.venv/bin/python -m bench.backlog [--events 200000] [--devices 10]``

The hub's persistent session is made, the hub stops, and ``--events`` power samples
(~280 bytes each) from ``--devices`` devices queue at a private Mosquitto, as after an
outage of the hub.  Then ``peershop run`` starts and stores them.  Reported: the hub's
peak RSS (VmHWM) and the seconds until every event is stored, once with
``ingest.max_pending`` so large it never bounds anything (the baseline: what the hub did
before the bound, when Mosquitto 2.0.11 sends a whole Receive Maximum more after each
PUBACK) and once with the default.  Both in the same run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.common import dump, machine, mqtt_link
from hub.config import SCHEMA
from hub.service.broker import PrivateBroker
from tests.helpers import HubProcess, StoredRows, write_config

PAD = b"x" * 200


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {key} for {pid}")


def run(events: int, devices: int, max_pending: int) -> dict[str, float]:
    workdir = Path(tempfile.mkdtemp(prefix="peershop-backlog-"))
    broker = PrivateBroker(workdir / "mosquitto").start()
    db_url = f"sqlite:///{workdir}/peershop.db"
    config = write_config(
        workdir / "peershop.toml",
        data_dir=workdir / "data",
        port=broker.port,
        db_url=db_url,
        client_id="peershop-hub-backlog",
    )
    with config.open("a") as f:
        f.write(f"[ingest]\nmax_pending = {max_pending}\n")
    hub = HubProcess(config, workdir / "hub.log")
    rows = None
    try:
        hub.start(broker.port)
        hub.terminate()  # its persistent session stays at the broker, which queues for it
        links = [mqtt_link(broker.port, f"backlog-{d}") for d in range(devices)]
        for link in links:
            link.start()
            assert link.wait_connected(10)
        last = []
        for d, link in enumerate(links):
            for seq in range(events // devices):
                body = b'{"boot":1,"seq":%d,"type":"power","w":%d.5,"pad":"%s"}' % (
                    seq,
                    seq % 900,
                    PAD,
                )
                info = link.publish(f"peershop/dev/node-{d}/event", body, qos=1)
            last.append(info)
        for info in last:
            info.wait_for_publish(300)
        for link in links:
            link.stop()
        started = time.perf_counter()
        hub.start(broker.port)
        assert hub.proc is not None
        rows = StoredRows(db_url)
        total = events // devices * devices
        while rows.query("SELECT count(*) FROM events")[0][0] < total:
            time.sleep(0.2)
        seconds = time.perf_counter() - started
        return {
            "max_pending": max_pending,
            "events": total,
            "seconds": round(seconds, 1),
            "events_per_s": round(total / seconds),
            "peak_rss_mb": round(status_kb(hub.proc.pid, "VmHWM") / 1024, 1),
            "rss_after_mb": round(status_kb(hub.proc.pid, "VmRSS") / 1024, 1),
        }
    finally:
        if rows is not None:
            rows.close()
        if hub.proc is not None and hub.proc.poll() is None:
            hub.terminate()
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--devices", type=int, default=10)
    args = parser.parse_args()
    default = SCHEMA["ingest"]["max_pending"].default
    result = {
        "machine": machine(),
        "baseline_unbounded": run(args.events, args.devices, 1_000_000),
        "default_bound": run(args.events, args.devices, default),
    }
    print(dump(result))


if __name__ == "__main__":
    main()
