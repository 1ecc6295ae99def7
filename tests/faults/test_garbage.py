"""100,000 random and malformed payloads on device topics, mixed with good traffic.

A publisher process (raw MQTT 5 over sockets, bench/common.py's packets, so the
publishers are not the bottleneck) sends 100,000 bad payloads and 20,000 good events on
``peershop/dev/{id}/event`` and ``.../status`` to a ``peershop run`` process.  Every good
event must be stored, every bad payload dead-lettered once, and the hub's resident memory
must stay flat: sampled with the hub idle after 70,000 messages and after all 120,000,
two floods of 50,000 alike (the first 20,000 warm it up); bench/README.md's soak section
has the figures.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import selectors
import socket
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bench.common import _packets, connect_packet, publish_packet
from hub.service.broker import PrivateBroker
from hub.store.ingest import Inbound, parse_inbound
from tests.conftest import fresh_database
from tests.helpers import HubProcess, StoredRows, wait_for, write_config

pytestmark = pytest.mark.slow

DEVICES = 10
GOOD_PER_DEVICE = 2_000
BAD = 100_000
BOOT = 5
WINDOW = 100  # unacked publishes per socket: Mosquitto's receive maximum here
MAX_GROWTH_KB = 15 * 1024
# Where the publisher pauses for the hub to go idle: a warm-up, then two floods of
# 50,000.  Memory is compared after the two floods, which reach the same high-water mark
# (the hub's window of received, unstored messages) and leave the same freed memory
# that glibc keeps for reuse; a short warm-up reaches a lower one on a quiet machine.
PAUSES = (20_000, 70_000)


def bad_payload(rng: random.Random, good: bytes) -> tuple[str, bytes]:
    """A payload the contract rejects, and the leaf it goes to ("event" or "status")."""
    kind = rng.randrange(14)
    if kind == 0:  # noise
        return "event", rng.randbytes(rng.randrange(1, 300))
    if kind == 1:  # cut short: a proper prefix of a JSON object is never one
        return "event", good[: rng.randrange(1, len(good))]
    if kind == 2:  # not UTF-8
        return "event", b'{"boot":1,"seq":1,"type":"power","w":1,"x":"\xff\xfe"}'
    if kind == 3:  # over the 4 KiB limit
        return "event", b'{"pad":"' + b"x" * rng.randrange(4100, 20000) + b'"}'
    if kind == 4:
        return "event", rng.choice([b"[]", b"42", b'"badge"', b"null", b"true", b"{}"])
    if kind == 5:
        return "event", b'{"boot":1,"seq":2,"type":"power","w":NaN}'
    if kind == 6:
        n = rng.choice([-1, 2**63, 10**40])
        return "event", b'{"boot":%d,"seq":1,"type":"power","w":1}' % n
    if kind == 7:
        return "event", b'{"boot":1,"seq":"7","type":"power","w":1}'
    if kind == 8:
        return "event", b'{"boot":1,"seq":%d,"type":"teleport"}' % rng.randrange(1000)
    if kind == 9:
        uid = rng.choice(['"zz"', '"12"', "12345678", '"' + "AB" * 20 + '"', "null"])
        return "event", b'{"boot":1,"seq":3,"type":"badge","uid":%s}' % uid.encode()
    if kind == 10:
        return "event", b'{"boot":1,"seq":4,"type":"consume","item":"x","qty":-2,"unit":"u"}'
    if kind == 11:
        return "event", b'{"boot":1,"seq":5,"type":"power","w":1,"ts":"yesterday"}'
    if kind == 12:
        return "status", rng.choice([b'{"state":"maybe"}', b'{"state":"online"}', b"\x00\x01"])
    return "event", json.dumps({"boot": 1, "seq": 6, "type": "button", "name": "n" * 65}).encode()


def publish_mix(port: int, seed: int, pauses: tuple[int, ...], go_on: Any, results: Any) -> None:
    """Process target: every device's good events, with its share of garbage between.

    At each of ``pauses`` (counts of messages acknowledged) it reports and waits for
    ``go_on`` (a semaphore) before going on."""
    rng = random.Random(seed)
    sel = selectors.DefaultSelector()
    plans: list[list[bytes]] = []
    socks = []
    bad_per_device = BAD // DEVICES
    for i in range(DEVICES):
        device = f"junk-{i:02d}"
        good = [
            b'{"boot":%d,"seq":%d,"type":"power","w":%d.5}' % (BOOT, s, s % 900)
            for s in range(GOOD_PER_DEVICE)
        ]
        messages = [(f"peershop/dev/{device}/event", p) for p in good]
        for _ in range(bad_per_device):
            leaf, payload = bad_payload(rng, rng.choice(good))
            messages.append((f"peershop/dev/{device}/{leaf}", payload))
        rng.shuffle(messages)  # good and bad interleaved (and the good ones out of order)
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(connect_packet(f"{device}-{os.getpid()}"))
        buf = bytearray()
        while not (pkts := _packets(buf)):
            buf += sock.recv(4096)
        assert pkts[0][0] >> 4 == 2 and pkts[0][1][1] == 0, "CONNACK refused"
        packets = [
            publish_packet(topic.encode(), n % 65535 + 1, payload)
            for n, (topic, payload) in enumerate(messages)
        ]
        plans.append(packets)
        socks.append(sock)
        sel.register(sock, selectors.EVENT_READ, [i, 0, 0, bytearray()])  # next, inflight
    total = sum(len(p) for p in plans)
    acked = 0
    stops = list(pauses)
    limit = stops[0] // DEVICES  # per device, up to the next pause
    while acked < total:
        if stops and acked == stops[0]:
            results.put(stops.pop(0))
            go_on.acquire()
            limit = stops[0] // DEVICES if stops else max(len(p) for p in plans)
        for key in list(sel.get_map().values()):
            state = key.data
            i, nxt, inflight, _ = state
            take = min(WINDOW - inflight, min(len(plans[i]), limit) - nxt)
            if take > 0:
                socks[i].sendall(b"".join(plans[i][nxt : nxt + take]))
                state[1], state[2] = nxt + take, inflight + take
        for key, _ in sel.select(0.05):
            state = key.data
            data = socks[state[0]].recv(65536)
            if not data:
                raise RuntimeError("the broker closed a publisher's connection")
            state[3] += data
            for kind, _body in _packets(state[3]):
                if kind >> 4 == 4:  # PUBACK
                    state[2] -= 1
                    acked += 1
    for sock in socks:
        sock.sendall(b"\xe0\x00")
        sel.unregister(sock)
        sock.close()
    sel.close()
    results.put(total)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@dataclass
class Run:
    identities: set[tuple[str, int, int]]
    dead_letters: int
    rss_mid_kb: int
    rss_late_kb: int
    total: int


@pytest.fixture(scope="module")
def garbage_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """One run for the module: 20,000 messages, a memory sample, the rest, a sample."""
    tmp_path = tmp_path_factory.mktemp("garbage")
    with fresh_database(tmp_path / "data") as db_url:
        rows = StoredRows(db_url)
        try:
            return _run(tmp_path, db_url, rows)
        finally:
            rows.close()


def _run(tmp_path: Path, db_url: str, rows: StoredRows) -> Run:
    broker = PrivateBroker(tmp_path / "mosquitto").start()
    config = write_config(
        tmp_path / "peershop.toml",
        data_dir=tmp_path / "data",
        port=broker.port,
        db_url=db_url,
        client_id=f"peershop-hub-{uuid.uuid4().hex[:8]}",
    )
    hub = HubProcess(config, tmp_path / "hub.log")
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    go_on = ctx.Semaphore(0)
    publisher = ctx.Process(
        target=publish_mix, args=(broker.port, 1234, PAUSES, go_on, results), daemon=True
    )

    def counts() -> tuple[int, int]:
        return (
            rows.query("SELECT count(*) FROM events")[0][0],
            rows.query("SELECT count(*) FROM dead_letters")[0][0],
        )

    try:
        hub.start(broker.port)
        assert hub.proc is not None
        publisher.start()
        # Both samples are taken with the hub idle after a flood of 50,000, so they
        # compare like with like (see PAUSES).  Deadlines, not speed: a shared 2-core
        # machine can take minutes for a flood.
        for pause in PAUSES:
            assert results.get(timeout=600) == pause
            wait_for(lambda p=pause: sum(counts()) >= p, timeout=300, what=f"{pause} messages")
            mid = rss_kb(hub.proc.pid)
            go_on.release()
        total = results.get(timeout=600)
        assert total == BAD + DEVICES * GOOD_PER_DEVICE
        wait_for(lambda: sum(counts()) >= total, timeout=300, what=f"{total} messages handled")
        late = rss_kb(hub.proc.pid)
        assert hub.proc.poll() is None, "the hub died"
        assert hub.terminate() == 0
    finally:
        publisher.join(30)
        if publisher.is_alive():
            publisher.kill()
            publisher.join()
        results.close()
        results.join_thread()
        if hub.proc is not None and hub.proc.poll() is None:
            hub.terminate()
        broker.stop()
    identities = set(rows.query("SELECT device_id, boot, seq FROM events"))
    dead = rows.query("SELECT count(*) FROM dead_letters")[0][0]
    return Run(identities, dead, mid, late, total)


def test_garbage_among_good_traffic_every_good_event_stored_every_bad_one_dead_lettered(
    garbage_run: Run,
):
    good = {(f"junk-{i:02d}", BOOT, s) for i in range(DEVICES) for s in range(GOOD_PER_DEVICE)}
    assert garbage_run.identities == good  # every good event, and nothing the garbage made up
    assert garbage_run.dead_letters == BAD


def test_garbage_among_good_traffic_leaves_the_hub_memory_flat(garbage_run: Run):
    mid, late = garbage_run.rss_mid_kb, garbage_run.rss_late_kb
    growth = late - mid
    print(
        f"hub RSS idle after {PAUSES[-1]} messages {mid} kB, after {garbage_run.total}: {late} kB"
    )
    assert growth < MAX_GROWTH_KB, f"hub RSS grew {growth} kB: {mid} -> {late} kB"


@pytest.mark.parametrize(
    "payload", [b"[" * 2000 + b"]" * 2000, b'[{"":' * 550 + b"1" + b"}]" * 550]
)
def test_deeply_nested_json_is_a_dead_letter(payload: bytes):
    assert len(payload) <= 4096  # under the size limit: only the nesting is wrong
    parsed = parse_inbound(Inbound("peershop/dev/junk/event", payload, datetime.now(UTC)))
    assert parsed.error is not None
