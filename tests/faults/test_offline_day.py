"""A tool's node offline for a simulated day, then its buffer replayed: issue 9's fault suite.

Real processes: a private Mosquitto, ``peershop run`` on the test pass's database, and
simulated MQTT devices.  The laser's node lost the broker for a day.  Meanwhile members
badged in and out at it (it decided alone from its signed allow-list) and the laser drew
power in several sessions; an untrained member's badge was refused.  Its clock was six
hours fast all along (an RTC set to a local time taken for UTC).  After the reconnect it
sends its birth, with its clock (docs/device-protocol.md ``ts``), and replays its buffer of
several thousand events, ``replay: true``, the way a node that resends unacked events
does: out of order within the serial protocol's window of 8 unacked, and some of them
twice.  While the replay goes on, members badge live at the door, at the drill and at
the laser itself.  In one run the hub is SIGKILLed in the middle of the replay and
started again.

What a coordinator would check afterwards: every event stored once and none
dead-lettered; no replayed badge answered; one session per visit, in order, with the
right member, at the hours of the visits, close to the real durations, not overlapping,
none left open; the live badges decided as the shop is now; and the same records
rebuilt from the log.
"""

from __future__ import annotations

import itertools
import json
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.cli import main
from hub.contract.messages import cmd_topic, format_timestamp, status_topic, tool_state_topic
from hub.service.broker import PrivateBroker
from hub.shopfile.apply import apply_shop
from hub.shopfile.parse import parse_shop
from hub.store.db import make_engine, migrate, session_factory
from hub.store.models import UsageSession
from tests.conftest import fresh_database
from tests.helpers import (
    Device,
    HubProcess,
    Listener,
    StoredRows,
    event_payload,
    wait_for,
    write_config,
)

SHOP = """
projects:
  - {id: commons, name: Shop commons, model: production_effort}
members:
  - {handle: ada, name: Ada L., roles: [member, trainer], badges: ["04A1B2C3D4E5F6"]}
  - {handle: bob, name: Bob B., badges: ["5E2A9C11"]}
  - {handle: cy, name: Cy C., badges: ["77001122"]}
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
stations:
  - {device: door, kind: sign_in}
"""
UID = {"ada": "04A1B2C3D4E5F6", "bob": "5E2A9C11", "cy": "77001122"}
BOOT = 7
SKEW = timedelta(hours=6)  # the node's clock: six hours fast
WINDOW = 8  # docs/serial-protocol.md: at most 8 unacked events, each resent on its own timer
SAMPLE = timedelta(seconds=10)  # power while the laser is in use
QUIET = timedelta(seconds=30)  # power while it stands off
# (member, minutes after the day's start, minutes long); bob is not trained for the laser
VISITS = (
    ("ada", 60, 90),
    ("cy", 180, 45),
    ("ada", 300, 150),
    ("cy", 480, 70),
    ("ada", 600, 60),
    ("cy", 1300, 80),
)
REFUSED = (("bob", 170),)
# A replayed start or end that arrives after later samples is moved forward to the last
# accounted time (docs/shop-rules.md), so each end of a session may move by the reorder
# window's worth of samples: in use at its start, standing off at its end.
DURATION_TOLERANCE = WINDOW * SAMPLE + WINDOW * QUIET


def watts(minute_in_visit: float) -> float:
    """The laser's draw: 5 minutes idle (60 W) in every 30, cutting (900 W) otherwise."""
    return 60.0 if minute_in_visit % 30 < 5 else 900.0


@dataclass
class Day:
    """The node's buffer: what happened, and the events it replays for it."""

    start: datetime
    events: list[dict] = field(default_factory=list)  # in seq order, seq = index
    badge_seqs: set[int] = field(default_factory=set)
    visit_seqs: list[tuple[int, int]] = field(default_factory=list)  # tap on, tap off
    # per visit: member, true start, true end, busy seconds, Wh
    truth: list[tuple[str, datetime, datetime, float, float]] = field(default_factory=list)

    def add(self, at: datetime, type: str, **fields) -> int:
        seq = len(self.events)
        ts = (at + SKEW).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        self.events.append({"boot": BOOT, "seq": seq, "ts": ts, "type": type, **fields})
        if type == "badge":
            self.badge_seqs.add(seq)
        return seq


def simulated_day(now: datetime) -> Day:
    """A day of the laser's node ending three hours before ``now``, on its fast clock."""
    day = Day(now.replace(second=0, microsecond=0) - timedelta(hours=26))
    marks = []  # (time, kind, member, minutes long)
    for member, at, length in VISITS:
        marks.append((day.start + timedelta(minutes=at), "visit", member, length))
    for member, at in REFUSED:
        marks.append((day.start + timedelta(minutes=at), "refused", member, 0))
    marks.sort()
    wh_total = 0.0
    t = day.start
    end_of_day = day.start + timedelta(hours=24)
    for at, kind, member, length in [*marks, (end_of_day, "end", "", 0)]:
        while t < at:  # the laser stands off: a 0 W sample every QUIET
            day.add(t, "power", w=0.0, wh_total=round(wh_total, 3))
            t += QUIET
        if kind == "end":
            break
        if kind == "refused":
            day.add(at, "badge", uid=UID[member])
            continue
        end = at + timedelta(minutes=length)
        tap_on = day.add(at, "badge", uid=UID[member])
        busy_s = wh = 0.0
        s = at + SAMPLE / 2
        while s < end:
            w = watts((s - at).total_seconds() / 60)
            day.add(s, "power", w=w, wh_total=round(wh_total, 3))
            step = min(SAMPLE, end - s).total_seconds()
            wh_total += w * step / 3600
            wh += w * step / 3600
            busy_s += step if w >= 200 else 0.0
            s += SAMPLE
        tap_off = day.add(end, "badge", uid=UID[member])  # tap again: the session ends
        day.visit_seqs.append((tap_on, tap_off))
        day.truth.append((member, at, end, busy_s, wh))
        t = end + QUIET
    return day


def replay_order(day: Day, rng: random.Random) -> list[dict]:
    """The buffer as the node sends it: each event at most a window's length out of
    place, and about one in thirty sent a second time a little later."""
    keyed = [(i + rng.uniform(0, WINDOW), i) for i in range(len(day.events))]
    order = [i for _, i in sorted(keyed)]
    placed = [(float(p), i) for p, i in enumerate(order)]
    placed += [
        (p + rng.randrange(WINDOW, 200) + 0.5, i)
        for p, i in enumerate(order)
        if rng.random() < 1 / 30
    ]
    return [{**day.events[i], "replay": True} for _, i in sorted(placed)]


def body(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


REPLAY_ONLY = "replay"
LIVE_AT_LASER = "live taps at the laser"
KILLED = "SIGKILL mid-replay"


@dataclass
class Outcome:
    variant: str
    seed: int
    rows: StoredRows
    day: Day
    sent: list[dict]
    live_laser_seqs: tuple[int, ...]  # cy's live tap on and tap off at the laser
    cmds: dict[str, list[dict]]  # what each device was sent on its cmd topic
    laser_state: dict  # the laser's retained state at the end
    killed_at: int | None  # events stored when the hub was killed
    began: datetime  # the test's own run, by the hub's clock
    ended: datetime
    env: dict[str, str]  # the database and data folder, for `peershop rebuild`

    def query(self, sql: str) -> list[tuple]:
        return self.rows.query(sql)

    def __repr__(self) -> str:  # what a failure shows: enough to run it again
        return f"<{self.variant}, seed {self.seed}, killed at {self.killed_at} events stored>"


@pytest.fixture(scope="module", params=[REPLAY_ONLY, LIVE_AT_LASER, KILLED])
def offline_day(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Outcome]:
    tmp_path = tmp_path_factory.mktemp("offline-day")
    (tmp_path / "data").mkdir()
    with fresh_database(tmp_path / "data") as db_url, PrivateBroker(tmp_path / "mq") as broker:
        engine = make_engine(db_url)
        migrate(engine)
        with session_factory(engine).begin() as session:
            apply_shop(session, parse_shop(SHOP))
        engine.dispose()
        config = write_config(
            tmp_path / "peershop.toml",
            data_dir=tmp_path / "data",
            port=broker.port,
            db_url=db_url,
            client_id=f"peershop-hub-{uuid.uuid4().hex[:8]}",
        )
        hub = HubProcess(config, tmp_path / "hub.log")
        rows = StoredRows(db_url)
        devices = {n: Device(broker.port, n) for n in ("laser-node", "drill-node", "door")}
        listener = Listener(
            broker.port, *(cmd_topic(n) for n in devices), tool_state_topic("laser-1")
        )
        try:
            out = _run(request.param, hub, rows, devices, listener, broker.port)
            out.env = {"PEERSHOP_DB_URL": db_url, "PEERSHOP_SITE_DATA_DIR": str(tmp_path / "data")}
            yield out
        finally:
            listener.close()
            for device in devices.values():
                device.close()
            if hub.proc is not None and hub.proc.poll() is None:
                hub.terminate()
            rows.close()


def _run(
    variant: str,
    hub: HubProcess,
    rows: StoredRows,
    devices: dict[str, Device],
    listener: Listener,
    port: int,
) -> Outcome:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    began = datetime.now(UTC)
    day = simulated_day(began)
    sent = replay_order(day, rng)
    laser, drill, door = devices["laser-node"], devices["drill-node"], devices["door"]
    hub.start(port)

    def stored() -> int:
        return rows.query("SELECT count(*) FROM events")[0][0]

    # back on the network: its birth, on its fast clock, then the buffer
    birth = {"state": "online", "boot": BOOT, "fw": "1.4.2", "kind": ["reader", "power"]}
    laser.send(
        body({**birth, "ts": format_timestamp(datetime.now(UTC) + SKEW)}),
        topic=status_topic("laser-node"),
        retain=True,
    )
    # The live taps and the kill fall inside ada's long visit (the third) in the replay,
    # while the hub holds her session from yesterday open.
    visit = next(p for p, e in enumerate(sent) if e["seq"] == day.visit_seqs[2][0])
    # the node's next seqs, after everything it buffered: cy taps on, then off
    live_seqs = (len(day.events), len(day.events) + 1) if variant == LIVE_AT_LASER else ()
    cy_taps = dict(zip((visit + 150, visit + 450), live_seqs, strict=False))
    killed_at = None
    for i, event in enumerate(sent):
        laser.send(body(event))
        if i == len(sent) // 4:
            # live, while the hub works through the replay: the door and the drill
            door.send(event_payload(1, 0, type="badge", uid=UID["ada"]))
            drill.send(event_payload(1, 0, type="badge", uid=UID["ada"]))
        if i in cy_taps:
            # at the laser itself, live, on the node's fast clock
            ts = format_timestamp(datetime.now(UTC) + SKEW)
            laser.send(event_payload(BOOT, cy_taps[i], type="badge", uid=UID["cy"], ts=ts))
        if variant == KILLED and i == visit + 300:
            # SIGKILL once the hub has stored all the node sent so far
            laser.flush()
            so_far = len({e["seq"] for e in sent[: i + 1]}) + 2  # and the door and drill
            wait_for(lambda n=so_far: stored() >= n, timeout=120, what="the replay so far")
            hub.kill()
            killed_at = stored()
            hub.start(port)
    for device in devices.values():
        device.flush()
    expected = len(day.events) + len(live_seqs) + 2  # and the door's and the drill's badge
    wait_for(
        lambda: stored() >= expected,
        timeout=300,
        what=f"{expected} events stored (seed {seed}, {variant}, hub log {hub.log})",
    )
    # the live badges' replies (a reply goes out before its batch is stored)
    listener.wait(
        lambda _: (
            len(listener.payloads(cmd_topic("door"))) >= 1
            and len(listener.payloads(cmd_topic("drill-node"))) >= 1
            and len(listener.payloads(cmd_topic("laser-node"))) >= len(live_seqs)
        ),
        timeout=60,
    )
    state = listener.payloads(tool_state_topic("laser-1"))[-1]
    cmds = {n: listener.payloads(cmd_topic(n)) for n in devices}
    return Outcome(
        variant,
        seed,
        rows,
        day,
        sent,
        live_seqs,
        cmds,
        state,
        killed_at,
        began,
        datetime.now(UTC),
        {},
    )


# --- what a coordinator would notice ----------------------------------------------------


def laser_sessions(out: Outcome) -> list[tuple]:
    """(member, start, end, busy_s, wh, close_reason) of the laser's sessions, by start."""
    with Session(out.rows.engine) as session:
        rows = session.scalars(
            select(UsageSession)
            .where(UsageSession.tool_id == "laser-1")
            .order_by(UsageSession.start)
        )
        return [(s.member, s.start, s.end, s.busy_s, s.wh, s.close_reason) for s in rows]


def replayed_sessions(out: Outcome) -> list[tuple]:
    """The laser's sessions but cy's live one, which started while the test ran."""
    sessions = laser_sessions(out)
    live = [s for s in sessions if s[0] == "cy" and out.began <= s[1] <= out.ended]
    return [s for s in sessions if s not in live[:1]]


def test_every_event_is_stored_once_and_none_is_dead_lettered(offline_day: Outcome):
    out = offline_day
    assert len(out.sent) > len(out.day.events) > 3000  # thousands, some sent twice
    identities = out.query("SELECT device_id, boot, seq FROM events")
    assert len(identities) == len(set(identities)), out
    laser = {(b, s) for d, b, s in identities if d == "laser-node"}
    assert laser == {(BOOT, s) for s in range(len(out.day.events) + len(out.live_laser_seqs))}
    assert {d for d, _, _ in identities} == {"laser-node", "drill-node", "door"}
    assert out.query("SELECT count(*) FROM dead_letters") == [(0,)], out
    if out.variant == KILLED:  # the kill fell inside the replay
        assert out.killed_at is not None and out.killed_at < len(out.day.events), out


def test_no_replayed_badge_is_answered(offline_day: Outcome):
    out = offline_day
    replies = out.cmds["laser-node"]
    # nothing but the answers to the live badges: no grant, and no release of a session
    # that ended yesterday
    assert sorted(r.get("re", -1) for r in replies) == list(out.live_laser_seqs), (out, replies)
    decisions = out.query("SELECT seq, replay FROM badge_decisions WHERE device_id = 'laser-node'")
    assert {s for s, replay in decisions if replay} == out.day.badge_seqs, out


def test_live_badges_during_the_replay_are_decided_as_the_shop_is_now(offline_day: Outcome):
    out = offline_day
    assert [r["action"] for r in out.cmds["door"]] == ["grant"], out  # ada signs in
    assert [r["action"] for r in out.cmds["drill-node"]] == ["grant"], out
    replies = {r["re"]: r["action"] for r in out.cmds["laser-node"] if "re" in r}
    # the laser is free now (yesterday's sessions are over): cy may use it, then stops
    assert replies == dict(zip(out.live_laser_seqs, ("grant", "release"), strict=False)), out


def test_each_visit_is_one_session_in_order_with_the_right_member(offline_day: Outcome):
    out = offline_day
    sessions = replayed_sessions(out)
    assert [s[0] for s in sessions] == [member for member, *_ in out.day.truth], (out, sessions)
    assert all(s[5] == "badge_out" for s in sessions), (out, sessions)


def test_the_sessions_last_as_long_as_the_visits(offline_day: Outcome):
    out = offline_day
    sessions = replayed_sessions(out)
    assert len(sessions) == len(out.day.truth), (out, sessions)
    for (member, start, end, busy_s, wh, _), (_, t0, t1, true_busy, true_wh) in zip(
        sessions, out.day.truth, strict=True
    ):
        assert end is not None, (out, member, start)
        assert abs((end - start) - (t1 - t0)) <= DURATION_TOLERANCE, (out, member, start, end)
        assert abs(busy_s - true_busy) <= DURATION_TOLERANCE.total_seconds(), (out, member)
        assert wh == pytest.approx(true_wh, rel=0.05), (out, member)


def test_the_sessions_do_not_overlap_and_none_is_left_open(offline_day: Outcome):
    out = offline_day
    sessions = laser_sessions(out)
    assert all(s[2] is not None for s in sessions), (out, sessions)
    for before, after in itertools.pairwise(sessions):
        assert before[2] <= after[1], (out, before, after)
    assert out.laser_state["state"] == "free", (out, out.laser_state)


def test_the_sessions_are_at_the_hours_of_the_visits(offline_day: Outcome):
    """The node's clock was six hours fast: its day must not land six hours later, part of
    it in the future.  The hub learns the offset from the birth's clock, and a restart
    keeps it."""
    out = offline_day
    sessions = replayed_sessions(out)
    for (member, start, *_), (_, t0, *_) in zip(sessions, out.day.truth, strict=True):
        assert abs(start - t0) <= DURATION_TOLERANCE, (out, member, start, t0)


def test_the_records_rebuild_from_the_log_alike(offline_day: Outcome):
    """`peershop rebuild --check` feeds the log through the rules again, restarting where
    the hub restarted: the same sessions as the live hub stored."""
    result = CliRunner().invoke(
        main, ["rebuild", "--check"], env=offline_day.env, catch_exceptions=False
    )
    assert result.exit_code == 0, (offline_day, result.output)
