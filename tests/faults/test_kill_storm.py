"""The hub SIGKILLed at random moments, 20 times in a row, during a mixed shop load.

A shop (tools with readers, a door, a task station) is loaded from a shop file; five
devices keep publishing badges, power samples and task-station buttons while
``peershop run`` is killed with SIGKILL at a random moment (sometimes while it is still
starting), and restarted, 20 times.  Afterwards the log holds every identity sent exactly
once, nothing is dead-lettered, and ``peershop rebuild --check`` rebuilds the same
sessions, presence and effort from the log as the live hub stored.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from hub.cli import main
from hub.service.broker import PrivateBroker
from hub.shopfile.apply import apply_shop
from hub.shopfile.parse import parse_shop
from hub.store.db import make_engine, migrate, session_factory
from tests.conftest import fresh_database
from tests.fleet import BOOT, SimulatedDevice
from tests.helpers import HubProcess, StoredRows, event_payload, wait_for, write_config

pytestmark = pytest.mark.slow

KILLS = 20
RATE_PER_DEVICE = 40.0  # events/s each: a few hundred events per round in all

SHOP = """
projects:
  - {id: commons, name: Shop commons, model: production_effort}
members:
  - {handle: ada, name: Ada L., roles: [member, trainer], badges: ["04A1B2C3D4E5F6"]}
  - {handle: bob, name: Bob B., badges: ["5E2A9C11"]}
  - {handle: cy, name: Cy C., badges: ["77001122"]}
  - {handle: dee, name: Dee D., badges: ["8A11F0C3"]}
trainings:
  - {id: laser, name: Laser, granted: [{member: ada, by: ada}, {member: cy, by: ada}]}
tools:
  - id: laser-1
    name: Laser cutter
    project: commons
    devices: [laser-node]
    policy: tap
    training: laser
    power: {off_w: 5, busy_w: 200, idle_timeout: 20m}
  - id: drill-1
    name: Drill press
    project: commons
    devices: [drill-node]
    policy: tap
    power: {off_w: 5, busy_w: 100, idle_timeout: 20m}
tasks:
  - {id: empty-dust, title: Empty the dust collector, project: commons, slots: 4, hours: 0.5}
  - {id: sweep, title: Sweep the floor, project: commons, slots: 4, hours: 0.25}
stations:
  - {device: desk, kind: task_station}
  - {device: door, kind: sign_in}
"""
UIDS = ("04A1B2C3D4E5F6", "5E2A9C11", "77001122", "8A11F0C3", "DEADBEEF")  # the last: nobody's


def tool_load(rng: random.Random) -> Callable[[int], bytes]:
    """A reader at a tool: mostly power samples, a badge now and then."""

    def payload(seq: int) -> bytes:
        if seq % 7 == 3:
            return event_payload(BOOT, seq, type="badge", uid=rng.choice(UIDS))
        watts = rng.choice((0.0, 2.0, 40.0, 150.0, 900.0))
        return event_payload(BOOT, seq, type="power", w=watts)

    return payload


def door_load(rng: random.Random) -> Callable[[int], bytes]:
    return lambda seq: event_payload(BOOT, seq, type="badge", uid=rng.choice(UIDS))


def desk_load(rng: random.Random) -> Callable[[int], bytes]:
    """A task station: a task's button, then badges that start and end the effort."""

    def payload(seq: int) -> bytes:
        if seq % 3 == 0:
            return event_payload(BOOT, seq, type="button", name=rng.choice(("empty-dust", "sweep")))
        return event_payload(BOOT, seq, type="badge", uid=rng.choice(UIDS))

    return payload


def plug_power(rng: random.Random) -> Callable[[int], bytes]:
    return lambda seq: event_payload(BOOT, seq, type="power", w=rng.uniform(0, 1200))


class ShopDevice(SimulatedDevice):
    """test_durability's device (outbox tracked by PUBACK) with a payload of our choosing.

    ``SimulatedDevice.publish(seq)`` sends a power sample; the link's ``publish`` is
    wrapped so the same seq carries this device's payload instead (the same one on a
    republish, so a second copy is the same event)."""

    def __init__(self, port: int, device_id: str, make: Callable[[int], bytes]):
        super().__init__(port, device_id)
        self._make = make
        self._payloads: dict[int, bytes] = {}
        inner = self.link.publish

        def publish(topic: str, payload: bytes, *args, **kwargs):
            seq = json.loads(payload)["seq"]
            if seq not in self._payloads:
                self._payloads[seq] = self._make(seq)
            return inner(topic, self._payloads[seq], *args, **kwargs)

        self.link.publish = publish  # type: ignore[method-assign]


class Load:
    """Each device publishes on its own thread at ``RATE_PER_DEVICE`` until stopped."""

    def __init__(self, port: int, seed: int):
        rng = random.Random(seed)
        makers = {
            "laser-node": tool_load(random.Random(rng.random())),
            "drill-node": tool_load(random.Random(rng.random())),
            "door": door_load(random.Random(rng.random())),
            "desk": desk_load(random.Random(rng.random())),
            "meter": plug_power(random.Random(rng.random())),  # unknown: becomes pending
        }
        self.devices = [ShopDevice(port, name, make) for name, make in makers.items()]
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(d,), name=f"pub-{d.device_id}", daemon=True)
            for d in self.devices
        ]
        for thread in self._threads:
            thread.start()

    def _run(self, device: SimulatedDevice) -> None:
        started = time.monotonic()
        seq = 0
        # a rate limiter: devices produce at their own pace, whatever the hub does
        while not self._stop.wait(max(started + seq / RATE_PER_DEVICE - time.monotonic(), 0)):
            device.publish(seq)
            seq += 1

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)

    @property
    def published(self) -> int:
        return sum(len(d.sent) for d in self.devices)

    def expected(self) -> set[tuple[str, int, int]]:
        return {(d.device_id, BOOT, s) for d in self.devices for s in d.sent}

    def finish(self, rounds: int = 4) -> None:
        """Stop, then wait for every PUBACK, republishing what is left (an outbox)."""
        self.stop()
        for _ in range(rounds):
            try:
                wait_for(lambda: not any(d.pending() for d in self.devices), timeout=15)
                return
            except AssertionError:
                for device in self.devices:
                    wait_for(device.link.wait_connected, timeout=30, what="device reconnect")
                    for seq in device.pending():
                        device.publish(seq)
        raise AssertionError(f"never PUBACKed: {[d.pending()[:5] for d in self.devices]}")

    def close(self) -> None:
        self.stop()
        for device in self.devices:
            device.close()


class Site:
    def __init__(self, tmp_path: Path, db_url: str):
        self.broker = PrivateBroker(tmp_path / "mosquitto").start()
        self.data_dir = tmp_path / "data"
        self.db_url = db_url
        self.data_dir.mkdir(exist_ok=True)  # fresh_database may have made it
        self.rows = StoredRows(db_url)
        engine = make_engine(self.db_url)
        migrate(engine)
        with session_factory(engine).begin() as session:
            apply_shop(session, parse_shop(SHOP))
        engine.dispose()
        config = write_config(
            tmp_path / "peershop.toml",
            data_dir=self.data_dir,
            port=self.broker.port,
            db_url=self.db_url,
            client_id=f"peershop-hub-{uuid.uuid4().hex[:8]}",
        )
        self.hub = HubProcess(config, tmp_path / "hub.log")
        self.load: Load | None = None

    def query(self, sql: str) -> list[tuple]:
        return self.rows.query(sql)

    def stored(self) -> int:
        return self.query("SELECT count(*) FROM events")[0][0]

    def close(self) -> None:
        try:
            if self.load is not None:
                self.load.close()
            if self.hub.proc is not None and self.hub.proc.poll() is None:
                self.hub.terminate()
        finally:
            self.rows.close()
            self.broker.stop()


@dataclass
class Storm:
    site: Site
    seed: int
    sent: set[tuple[str, int, int]]
    stored_before_kill: list[int]


@pytest.fixture(scope="module")
def storm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Storm]:
    """One storm for the module: 20 SIGKILLs at random moments, then a clean stop."""
    tmp_path = tmp_path_factory.mktemp("storm")
    with fresh_database(tmp_path / "data") as db_url:
        yield from _storm(Site(tmp_path, db_url))


def _storm(site: Site) -> Iterator[Storm]:
    try:
        # a new storm each run; PEERSHOP_STORM_SEED replays one a failure names
        seed = int(os.environ.get("PEERSHOP_STORM_SEED") or random.randrange(1 << 30))
        rng = random.Random(seed)
        site.hub.start(site.broker.port)
        site.load = load = Load(site.broker.port, seed)
        stored_before_kill = []
        for _ in range(KILLS):
            # a random moment: just after the birth, or well into ingest
            time.sleep(rng.uniform(0.05, 1.5))
            site.hub.kill()
            stored_before_kill.append(site.stored())
            site.hub.start(site.broker.port)
        load.finish()
        sent = load.expected()
        wait_for(
            lambda: site.stored() >= len(sent),
            timeout=300,  # a deadline: PostgreSQL on a busy machine ingests far slower
            what=f"{len(sent)} stored events (seed {seed}, hub log {site.hub.log})",
        )
        assert site.hub.terminate() == 0
        yield Storm(site, seed, sent, stored_before_kill)
    finally:
        site.close()


def test_after_twenty_sigkills_every_event_is_stored_exactly_once(storm: Storm):
    identities = storm.site.query("SELECT device_id, boot, seq FROM events")
    assert len(identities) == len(storm.sent), (
        f"seed {storm.seed}: {len(identities) - len(storm.sent):+d} events against what was sent"
    )
    assert set(identities) == storm.sent, f"seed {storm.seed}"
    assert storm.site.query("SELECT count(*) FROM dead_letters") == [(0,)]
    # the kills fell while events were being stored, not all before or after
    assert len(set(storm.stored_before_kill)) > KILLS // 2, storm.stored_before_kill
    assert len(storm.sent) > 20 * KILLS
    # the load was the shop's: decisions at the tools, the door and the desk
    stations = storm.site.query("SELECT DISTINCT coalesce(tool_id, station) FROM badge_decisions")
    assert {s for (s,) in stations} >= {"laser-1", "drill-1", "sign_in", "task_station"}


def test_after_twenty_sigkills_the_records_rebuilt_from_the_log_equal_the_live_ones(storm: Storm):
    site = storm.site
    env = {"PEERSHOP_DB_URL": site.db_url, "PEERSHOP_SITE_DATA_DIR": str(site.data_dir)}
    result = CliRunner().invoke(main, ["rebuild", "--check"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, f"seed {storm.seed}\n{result.output}"
    assert "DIFFERENT" not in result.output
