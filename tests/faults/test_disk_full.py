"""A disk that fills up under the hub: it stops acking, says why, and resumes without loss.

The database lives on a small tmpfs of its own; a filler file takes the rest of the
space, and events keep coming until SQLite says the disk is full.  Then the hub must
ack nothing (the events wait at the broker), ``Hub.health()`` (what ``/healthz``
serves) and the log must name the database error, and once the filler is deleted it
must store every event exactly once.
"""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from hub.service.service import Hub
from tests.conftest import make_config
from tests.fleet import BOOT, SimulatedDevice
from tests.helpers import add_member, wait_for

pytestmark = pytest.mark.slow

ROUND = 1_000  # events per burst, until the disk is full


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mountpoint = tmp_path / "disk"
    mountpoint.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"mount -t tmpfs is not permitted here: {done.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)


def fill(path: Path) -> int:
    """Write ``path`` until the file system is full; return the bytes written."""
    written = 0
    chunk = b"\0" * 65536
    with path.open("wb", buffering=0) as out:
        while True:
            try:
                written += out.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                chunk = chunk[: len(chunk) // 2]
                if not chunk:
                    return written


@pytest.mark.sqlite_only(
    "fills the SQLite file's own disk; a PostgreSQL server's disk is the server's to watch"
)
def test_a_full_disk_stops_acks_says_why_and_resumes_without_loss(
    small_disk: Path, broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO, logger="hub.service.service")
    cfg = make_config(
        tmp_path,
        broker,
        db_url=f"sqlite:///{small_disk / 'peershop.db'}",
        mqtt={"client_id": f"peershop-hub-{uuid.uuid4().hex[:8]}"},
    )
    add_member(cfg.db.url)  # a shop, so that health speaks of the disk alone
    hub = Hub(cfg)
    device = SimulatedDevice(broker.port, "disk-full")

    def stored() -> int:
        with hub.engine.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM events")).scalar_one()

    try:
        hub.start()
        assert hub.wait_ready(10)
        filler = small_disk / "filler"
        assert fill(filler) > 0
        sent = 0
        # WAL space left from earlier writes is reused first: send until a write fails
        while hub.db_error is None:
            assert sent < 30 * ROUND, "the disk never filled up"
            for seq in range(sent, sent + ROUND):
                device.publish(seq)
            sent += ROUND
            wait_for(
                lambda n=sent: hub.db_error is not None or stored() >= n,
                what="the burst stored, or a database error",
            )
        ok, why = hub.health()
        assert not ok and why.startswith("database: "), why
        assert "full" in why, why
        assert any(
            "database write failed" in r.getMessage() and "not acking" in r.getMessage()
            for r in caplog.records
        ), [r.getMessage() for r in caplog.records]
        # nothing acked while the disk is full: it keeps retrying, the count stands still
        acked, errors, before = hub.link.counters.acked, hub.counters.db_errors, stored()
        wait_for(lambda: hub.counters.db_errors >= errors + 2, what="two more retries")
        assert hub.link.counters.acked == acked
        assert stored() == before < sent
        assert hub.health()[0] is False

        filler.unlink()  # space is back
        wait_for(lambda: stored() >= sent, timeout=60, what="every event stored")
        wait_for(lambda: hub.health()[0], what="health back to ok")
        wait_for(lambda: not device.pending(), what="every PUBACK")
        with hub.engine.connect() as conn:
            rows = conn.execute(text("SELECT device_id, boot, seq FROM events")).all()
            dead = conn.execute(text("SELECT count(*) FROM dead_letters")).scalar_one()
        assert sorted(tuple(r) for r in rows) == [("disk-full", BOOT, s) for s in range(sent)]
        assert dead == 0
        assert any("database is back" in r.getMessage() for r in caplog.records)
    finally:
        device.close()
        hub.stop()
