"""The shop engine: badges at tools, the door and task stations; plugs; the seen index."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.contract.messages import DeviceEvent, DeviceStatus
from hub.plugs.decode import parse_plug, plug_subscriptions
from hub.rules.access import MemberAccess, WeeklyHours
from hub.rules.engine import ShopEngine
from hub.rules.records import (
    DecisionRec,
    EffortRec,
    PresenceRec,
    SessionCloseRec,
    SessionOpenRec,
    ShopData,
    TaskInfo,
    ToolConfig,
    TrainingRec,
    UsageRec,
)
from hub.rules.seen import SeenIndex
from hub.rules.sessions import ToolRules

T0 = datetime(2026, 11, 26, 17, 0, tzinfo=UTC)
BERLIN = ZoneInfo("Europe/Berlin")
ADA, BOB, CY, DEE = "04A1B2C3", "04B1B2C3", "04C1B2C3", "04D1B2C3"


def shop(**tool_overrides) -> ShopData:
    laser = dict(
        id="laser-1",
        name="Laser cutter",
        rules=ToolRules("tap", off_w=5, busy_w=200, idle_timeout=timedelta(minutes=15)),
        training="laser",
        devices=("laser-node",),
        plugs=(("tasmota", "laser_plug"),),
    )
    laser.update(tool_overrides)
    return ShopData(
        tz=BERLIN,
        members={
            "ada": MemberAccess(
                "ada", "Ada L.", trainings={"laser": None}, trains=frozenset({"laser"})
            ),
            "bob": MemberAccess("bob", "Bob B."),
            "cy": MemberAccess("cy", "Cy", suspended=True, trainings={"laser": None}),
            "dee": MemberAccess(
                "dee",
                "Dee",
                trainings={"laser": T0 - timedelta(days=1)},  # expired
            ),
        },
        badges={ADA: "ada", BOB: "bob", CY: "cy", DEE: "dee"},
        tools={
            "laser-1": ToolConfig(**laser),
            "saw": ToolConfig(
                "saw", "Saw", ToolRules("card_present", off_w=5, busy_w=100), devices=("saw-node",)
            ),
        },
        stations={"door": "sign_in", "desk": "task_station"},
        tasks={"empty-dust": TaskInfo("empty-dust", Decimal("1.1"), Decimal("0.5"), "commons")},
        auto_signout=time(4, 0),
    )


class Reader:
    """A device's events, numbered as a real device numbers them."""

    def __init__(self, device: str, boot: int = 1):
        self.device, self.boot, self.seq = device, boot, 0

    def __call__(self, type: str, ts: datetime | None = None, replay=False, **data):
        ev = DeviceEvent(self.device, self.boot, self.seq, type, data, ts, replay)
        self.seq += 1
        return ev


def reply(out) -> dict | None:
    return None if out.reply is None else json.loads(out.reply.payload)


def of(out, kind):
    return [r for r in out.records if isinstance(r, kind)]


@pytest.fixture
def engine():
    keys = iter(range(1000))
    return ShopEngine(shop(), key_factory=lambda: f"k{next(keys)}")


def test_a_trained_member_is_granted_and_a_session_opens_until_tap_out(engine):
    laser = Reader("laser-node")
    out = engine.on_event(laser("badge", uid=ADA), T0)
    assert reply(out) == {"re": 0, "action": "grant", "member": "Ada L."}
    assert out.reply.topic == "peershop/dev/laser-node/cmd"
    assert of(out, SessionOpenRec)[0].member == "ada"
    [decision] = of(out, DecisionRec)
    assert (decision.member, decision.tool_id, decision.action) == ("ada", "laser-1", "grant")
    # the plug is switched on with the grant, the tool shows in use
    topics = {m.topic: m.payload for m in out.messages}
    assert topics["cmnd/laser_plug/POWER"] == b"ON"
    assert json.loads(topics["peershop/tool/laser-1/state"])["member"] == "Ada L."
    engine.on_event(laser("power", w=900.0), T0 + timedelta(minutes=1))
    out = engine.on_event(laser("badge", uid=ADA), T0 + timedelta(minutes=31))
    assert reply(out)["action"] == "release"
    [closed] = of(out, SessionCloseRec)
    assert (closed.close_reason, closed.busy_s, closed.wh) == ("badge_out", 1800.0, 450.0)
    assert {m.topic: m.payload for m in out.messages}["cmnd/laser_plug/POWER"] == b"OFF"


@pytest.mark.parametrize(
    ("uid", "reason"),
    [("0EEEEEEE", "unknown_badge"), (BOB, "not_trained"), (CY, "suspended"), (DEE, "not_trained")],
)
def test_deny_reasons_reach_the_reader_and_are_recorded(engine, uid, reason):
    out = engine.on_event(Reader("laser-node")("badge", uid=uid), T0)
    assert reply(out) == {"re": 0, "action": "deny", "reason": reason}
    assert of(out, DecisionRec)[0].reason == reason
    assert of(out, SessionOpenRec) == []


def test_tool_in_use_locked_and_outside_hours():
    engine = ShopEngine(shop(hours=WeeklyHours.parse("Mon-Fri 17:00-22:00", BERLIN)))
    laser = Reader("laser-node")
    assert reply(engine.on_event(laser("badge", uid=ADA), T0))["action"] == "grant"
    data = shop()
    data.members["eve"] = MemberAccess("eve", "Eve", trainings={"laser": None})
    data.badges["04E1B2C3"] = "eve"
    engine.set_data(data)
    assert reply(engine.on_event(laser("badge", uid="04E1B2C3"), T0))["reason"] == "tool_in_use"
    night = ShopEngine(shop(hours=WeeklyHours.parse("Mon-Fri 17:00-22:00", BERLIN)))
    late = T0.replace(hour=23)
    assert reply(night.on_event(laser("badge", uid=ADA), late))["reason"] == "outside_hours"
    locked = ShopEngine(shop(locked=True))
    assert reply(locked.on_event(laser("badge", uid=ADA), T0))["reason"] == "locked_out"


def test_two_card_induction_records_the_training_and_grants_the_trainee(engine):
    laser = Reader("laser-node")
    engine.on_event(laser("badge", uid=ADA), T0)
    out = engine.on_event(laser("badge", uid=BOB), T0 + timedelta(seconds=20))
    [training] = of(out, TrainingRec)
    assert (training.trainee, training.trainer, training.training) == ("bob", "ada", "laser")
    assert reply(out)["action"] == "grant"
    # the trainer's session was handed over to the trainee
    assert [c.close_reason for c in of(out, SessionCloseRec)] == ["handover"]
    assert engine.data.members["bob"].trained("laser", T0)


def test_a_replayed_badge_is_recorded_and_its_session_rebuilt_but_never_answered(engine):
    laser = Reader("laser-node")
    offline_tap = T0 - timedelta(hours=1)
    out = engine.on_event(laser("badge", uid=ADA, ts=offline_tap, replay=True), T0)
    assert out.reply is None
    assert of(out, DecisionRec)[0].replay is True
    assert of(out, SessionOpenRec)[0].start == offline_tap


def test_card_present_session_ends_when_the_card_leaves(engine):
    data = shop()
    data.badges["04F1B2C3"] = "bob"
    engine.set_data(data)
    saw = Reader("saw-node")
    assert reply(engine.on_event(saw("badge", uid=BOB), T0))["action"] == "grant"
    out = engine.on_event(saw("badge_removed", uid=BOB), T0 + timedelta(minutes=5))
    assert [c.close_reason for c in of(out, SessionCloseRec)] == ["card_removed"]


def test_device_offline_and_hub_restart_close_sessions_by_rule(engine):
    laser = Reader("laser-node")
    engine.on_event(laser("badge", uid=ADA), T0)
    out = engine.on_status(DeviceStatus("laser-node", "offline", 1), T0 + timedelta(minutes=3))
    assert [c.close_reason for c in of(out, SessionCloseRec)] == ["device_offline"]
    engine.on_status(DeviceStatus("laser-node", "online", 2), T0 + timedelta(minutes=4))
    engine.on_event(Reader("laser-node", boot=2)("badge", uid=ADA), T0 + timedelta(minutes=5))
    out = engine.restart(T0 + timedelta(minutes=9))
    assert [c.close_reason for c in of(out, SessionCloseRec)] == ["hub_restart"]


def test_a_stale_will_from_an_older_boot_closes_nothing(engine):
    engine.on_status(DeviceStatus("laser-node", "online", 8), T0)
    engine.on_event(Reader("laser-node", boot=8)("badge", uid=ADA), T0)
    out = engine.on_status(DeviceStatus("laser-node", "offline", 7), T0 + timedelta(seconds=1))
    assert of(out, SessionCloseRec) == []


def test_forgotten_tap_off_closes_at_the_idle_timeout(engine):
    laser = Reader("laser-node")
    engine.on_event(laser("badge", uid=ADA), T0)
    engine.on_event(laser("power", w=800.0), T0 + timedelta(minutes=1))
    engine.on_event(laser("power", w=1.0), T0 + timedelta(minutes=10))
    out = engine.tick(T0 + timedelta(minutes=26))
    [closed] = of(out, SessionCloseRec)
    assert closed.close_reason == "timeout"
    assert closed.end == T0 + timedelta(minutes=10)  # not charged for the wait
    assert closed.busy_s == 540.0
    release = [m for m in out.messages if m.topic == "peershop/dev/laser-node/cmd"]
    assert json.loads(release[0].payload)["action"] == "release"


def test_sign_in_toggles_and_a_forgotten_sign_out_closes_at_four_local(engine):
    door = Reader("door")
    out = engine.on_event(door("badge", uid=BOB), T0)
    assert reply(out)["action"] == "grant"
    assert of(out, PresenceRec) == [PresenceRec("bob", T0, "in", "badge")]
    out = engine.on_event(door("badge", uid=BOB), T0 + timedelta(hours=2))
    assert reply(out)["action"] == "release"
    assert of(out, PresenceRec)[0].state == "out"
    engine.on_event(door("badge", uid=ADA), T0)
    out = engine.tick(T0 + timedelta(hours=12))
    # 04:00 in Berlin on 27 November is 03:00 UTC
    assert of(out, PresenceRec) == [
        PresenceRec("ada", datetime(2026, 11, 27, 3, 0, tzinfo=UTC), "out", "auto")
    ]


def test_unknown_badge_at_the_door_is_denied_and_kept_for_enrolment(engine):
    out = engine.on_event(Reader("door")("badge", uid="0A0B0C0D"), T0)
    assert reply(out) == {"re": 0, "action": "deny", "reason": "unknown_badge"}
    [decision] = of(out, DecisionRec)
    assert (decision.uid, decision.member, decision.station) == ("0A0B0C0D", None, "sign_in")


def test_task_station_effort_at_the_weight_posted_when_started(engine):
    desk = Reader("desk")
    engine.on_event(desk("button", name="empty-dust"), T0)
    out = engine.on_event(desk("badge", uid=BOB), T0 + timedelta(seconds=30))
    assert reply(out)["action"] == "grant"
    started = of(out, EffortRec)[0]
    assert (started.task_id, started.weight, started.end) == ("empty-dust", Decimal("1.1"), None)
    out = engine.on_event(desk("badge", uid=BOB), T0 + timedelta(minutes=45, seconds=30))
    [done] = of(out, EffortRec)
    assert done.key == started.key
    assert done.hours == Decimal("0.75")
    assert done.weight == Decimal("1.1")


def test_a_task_button_after_the_badge_sets_the_task(engine):
    desk = Reader("desk")
    out = engine.on_event(desk("badge", uid=BOB), T0)
    assert of(out, EffortRec)[0].task_id is None
    out = engine.on_event(desk("button", name="task:empty-dust"), T0 + timedelta(seconds=5))
    assert of(out, EffortRec)[0].task_id == "empty-dust"


def test_a_forgotten_station_badge_out_credits_the_posted_hours_at_most(engine):
    desk, door = Reader("desk"), Reader("door")
    engine.on_event(door("badge", uid=BOB), T0)
    engine.on_event(desk("button", name="empty-dust"), T0)
    engine.on_event(desk("badge", uid=BOB), T0)
    out = engine.tick(T0 + timedelta(hours=12))
    [effort] = of(out, EffortRec)
    assert effort.hours == Decimal("0.5")  # the task's posted hours, not all night


def test_consumables_are_charged_to_whoever_holds_the_tool(engine):
    laser = Reader("laser-node")
    engine.on_event(laser("badge", uid=ADA), T0)
    out = engine.on_event(laser("consume", item="acrylic", qty=1.0, unit="sheet"), T0)
    [use] = of(out, UsageRec)
    assert (use.member, use.tool_id, use.item, use.qty) == ("ada", "laser-1", "acrylic", 1.0)


def test_a_badge_at_a_reader_bound_to_nothing_is_recorded_and_not_answered(engine):
    out = engine.on_event(Reader("mystery")("badge", uid=ADA), T0)
    assert out.reply is None
    assert of(out, DecisionRec)[0].reason == "unbound_device"


def test_a_stored_decision_is_applied_as_it_was_in_a_rebuild():
    decided = DecisionRec("laser-node", 1, 0, T0, ADA, "ada", "laser-1", None, "grant", None, False)
    data = shop()
    del data.badges[ADA]  # the badge was revoked since: the past stays as it was
    engine = ShopEngine(data)
    out = engine.on_event(Reader("laser-node")("badge", uid=ADA), T0, decided=decided)
    assert of(out, SessionOpenRec)[0].member == "ada"
    assert of(out, DecisionRec) == [decided]


def test_allowlist_uids_follow_trainings_suspensions_and_locks():
    data = shop()
    assert data.allowed_uids("laser-1", T0) == [ADA]  # bob untrained, cy suspended, dee expired
    assert data.allowed_uids("saw", T0) == sorted([ADA, BOB, DEE])
    assert shop(locked=True).allowed_uids("laser-1", T0) == []


def test_tasmota_and_shelly_plugs_become_power_events_of_their_tool():
    data = shop(plugs=(("tasmota", "laser_plug"), ("shelly", "shellies/saw-plug")))
    assert "tele/+/SENSOR" in plug_subscriptions(data)
    assert "shellies/saw-plug/status/switch:0" in plug_subscriptions(data)
    [ev] = parse_plug("tele/laser_plug/SENSOR", b'{"ENERGY":{"Total":1.5,"Power":812}}', data)
    assert (ev.device_id, ev.type, ev.data) == (
        "tasmota/laser_plug",
        "power",
        {"w": 812.0, "wh_total": 1500.0},
    )
    [again] = parse_plug("tele/laser_plug/SENSOR", b'{"ENERGY":{"Total":1.5,"Power":812}}', data)
    assert again.identity == ev.identity  # a redelivery is the same reading
    [status] = parse_plug("tele/laser_plug/LWT", b"Offline", data)
    assert (status.device_id, status.state) == ("tasmota/laser_plug", "offline")
    [shelly] = parse_plug(
        "shellies/saw-plug/status/switch:0", b'{"apower":40.5,"aenergy":{"total":12.5}}', data
    )
    assert shelly.data == {"w": 40.5, "wh_total": 12.5}
    assert parse_plug("tele/someone_elses_plug/SENSOR", b"{}", data) == []
    engine = ShopEngine(data)
    engine.on_event(Reader("laser-node")("badge", uid=ADA), T0)
    engine.on_event(ev, T0 + timedelta(minutes=1))
    out = engine.on_status(status, T0 + timedelta(minutes=2))
    assert [c.close_reason for c in of(out, SessionCloseRec)] == ["device_offline"]


@given(st.lists(st.integers(0, 60), max_size=80))
def test_seen_index_answers_exactly_like_a_set(seqs):
    index, plain = SeenIndex(), set()
    for seq in seqs:
        assert index.add("d", 1, seq) == (seq not in plain)
        plain.add(seq)
    assert all((("d", 1, s) in index) == (s in plain) for s in range(-1, 62))
    runs = index.intervals("d", 1)
    assert sum(hi - lo + 1 for lo, hi in runs) == len(plain)
    assert all(b[0] > a[1] + 1 for a, b in itertools.pairwise(runs))


def test_an_hour_used_offline_counts_in_full_when_the_device_replays_it(engine):
    """The birth on reconnect comes before the replayed taps; they keep their own times."""
    laser = Reader("laser-node")
    engine.on_status(DeviceStatus("laser-node", "online", 1), T0)
    engine.on_status(DeviceStatus("laser-node", "offline", 1), T0 + timedelta(minutes=1))
    back = T0 + timedelta(hours=2)
    engine.on_status(DeviceStatus("laser-node", "online", 1), back)
    on, off = T0 + timedelta(minutes=10), T0 + timedelta(minutes=70)
    engine.on_event(laser("badge", uid=ADA, ts=on, replay=True), back)
    out = engine.on_event(laser("badge", uid=ADA, ts=off, replay=True), back)
    [closed] = of(out, SessionCloseRec)
    assert (closed.start, closed.end, closed.close_reason) == (on, off, "badge_out")
    assert out.reply is None


def test_an_effort_without_a_door_sign_in_still_ends_at_the_auto_signout(engine):
    desk = Reader("desk")
    engine.on_event(desk("button", name="empty-dust"), T0)
    engine.on_event(desk("badge", uid=BOB), T0)
    assert of(engine.tick(T0 + timedelta(hours=9)), EffortRec) == []  # 03:00 Berlin: not yet
    [effort] = of(engine.tick(T0 + timedelta(hours=11)), EffortRec)
    assert (effort.end, effort.hours) == (T0 + timedelta(minutes=30), Decimal("0.5"))
    assert engine.efforts == {}


def test_a_scarce_slot_needs_a_winning_reservation_and_the_grant_ends_with_it():
    from hub.rules.access import Reservation

    evenings = WeeklyHours.parse("Mon-Sun 17:00-21:00", BERLIN)  # 18:00 Berlin is inside
    engine = ShopEngine(shop(scarce=evenings))
    laser = Reader("laser-node")
    assert reply(engine.on_event(laser("badge", uid=ADA), T0))["reason"] == "no_reservation"
    engine.set_reservations({"laser-1": [Reservation("ada", T0, T0 + timedelta(hours=1))]})
    granted = reply(engine.on_event(laser("badge", uid=ADA), T0 + timedelta(minutes=15)))
    assert granted["action"] == "grant" and granted["max_s"] == 45 * 60


def test_a_shelly_plug_is_switched_with_its_reply_under_its_own_prefix():
    data = shop(plugs=(("shelly", "shellies/laser"),))
    engine = ShopEngine(data)
    out = engine.on_event(Reader("laser-node")("badge", uid=ADA), T0)
    [rpc] = [m for m in out.messages if m.topic == "shellies/laser/rpc"]
    body = json.loads(rpc.payload)
    assert body["method"] == "Switch.Set" and body["params"] == {"id": 0, "on": True}
    assert body["src"].startswith("shellies/laser/")  # the ACL fences a plug to its prefix


# --- a device's replay: the past apart from the present, on the hub's clock ----------------

EVE = "04E1B2C3"
MINUTE = timedelta(minutes=1)
SIX_HOURS = timedelta(hours=6)


def laser_state(out) -> dict | None:
    """The laser's published live state in ``out``, if it published one."""
    payloads = [m.payload for m in out.messages if m.topic == "peershop/tool/laser-1/state"]
    return json.loads(payloads[-1]) if payloads else None


def test_a_live_badge_during_a_replay_is_decided_as_the_tool_is_now():
    """Ada badged in offline yesterday; her node's replay is half sent when Eve badges
    live: the laser is free now, so Eve gets it, and the replay still ends Ada's session
    at her own tap, saying nothing to the laser, its plug or its live state."""
    data = shop()
    data.members["eve"] = MemberAccess("eve", "Eve", trainings={"laser": None})
    data.badges[EVE] = "eve"
    engine = ShopEngine(data)
    laser, day = Reader("laser-node"), T0 - timedelta(days=1)
    engine.on_status(DeviceStatus("laser-node", "online", 1), T0)
    out = engine.on_event(laser("badge", uid=ADA, ts=day, replay=True), T0)
    assert out.messages == []  # yesterday's session: no plug switched, no state shown
    engine.on_event(laser("power", w=900.0, ts=day + MINUTE, replay=True), T0)
    rest = [
        laser("power", w=900.0, ts=day + 30 * MINUTE, replay=True),
        laser("badge", uid=ADA, ts=day + 31 * MINUTE, replay=True),
    ]
    out = engine.on_event(laser("badge", uid=EVE), T0 + timedelta(seconds=5))  # seq 4, live
    assert reply(out) == {"re": 4, "action": "grant", "member": "Eve"}
    assert {m.topic: m.payload for m in out.messages}["cmnd/laser_plug/POWER"] == b"ON"
    assert laser_state(out)["member"] == "Eve"
    for ev in rest:
        out = engine.on_event(ev, T0 + timedelta(seconds=6))
    [closed] = of(out, SessionCloseRec)
    assert (closed.member, closed.start, closed.end, closed.close_reason, closed.busy_s) == (
        "ada",
        day,
        day + 31 * MINUTE,
        "badge_out",
        1800.0,
    )
    assert out.messages == [] and out.reply is None
    out = engine.on_event(laser("badge", uid=EVE), T0 + 10 * MINUTE)
    assert reply(out)["action"] == "release"
    assert [c.member for c in of(out, SessionCloseRec)] == ["eve"]


def test_an_offline_session_carries_on_live_once_its_replay_has_caught_up(engine):
    """Ada badged in offline and is still cutting when the node is back: once everything
    it buffered has arrived, her session is the laser's live one, and her tap ends it."""
    laser, on = Reader("laser-node"), T0 - 20 * MINUTE
    engine.on_status(DeviceStatus("laser-node", "online", 1), T0)
    engine.on_event(laser("badge", uid=ADA, ts=on, replay=True), T0)
    engine.on_event(laser("power", w=900.0, ts=on + MINUTE, replay=True), T0)
    later = T0 + timedelta(seconds=10)
    out = engine.on_event(laser("power", w=900.0, ts=later), later)  # live
    assert (laser_state(out)["state"], laser_state(out)["member"]) == ("busy", "Ada L.")
    out = engine.on_event(laser("badge", uid=ADA, ts=T0 + 10 * MINUTE), T0 + 10 * MINUTE)
    assert reply(out)["action"] == "release"
    [closed] = of(out, SessionCloseRec)
    assert (closed.start, closed.end, closed.close_reason, closed.busy_s) == (
        on,
        T0 + 10 * MINUTE,
        "badge_out",
        29 * 60.0,
    )


def test_a_replayed_session_stays_in_the_past_until_the_replay_catches_up_in_its_boot(engine):
    laser, on = Reader("laser-node"), T0 - 20 * MINUTE
    engine.on_event(laser("badge", uid=ADA, ts=on, replay=True), T0)  # seq 0
    buffered = [laser("power", w=900.0, ts=on + i * MINUTE, replay=True) for i in (1, 2, 3)]
    # a live sample ahead of the rest of the buffer (seqs 1-3): the laser, now, is nobody's
    out = engine.on_event(laser("power", w=900.0), T0)
    assert (laser_state(out)["state"], laser_state(out)["member"]) == ("busy", None)
    for ev in buffered:
        engine.on_event(ev, T0)
    # the node restarted meanwhile: its new boot is not the offline session's
    out = engine.on_event(Reader("laser-node", boot=2)("power", w=40.0), T0 + MINUTE)
    assert (laser_state(out)["state"], laser_state(out)["member"]) == ("idle", None)
    out = engine.on_event(Reader("laser-node", boot=2)("badge", uid=ADA), T0 + 2 * MINUTE)
    assert reply(out)["action"] == "grant"  # ...and the live laser is free for her


@pytest.mark.parametrize(
    ("error", "corrected"),
    [
        (timedelta(hours=6), True),  # an RTC set to local time taken for UTC
        (-timedelta(days=400), True),  # a clock that lost its time
        (timedelta(minutes=4), False),  # close enough: taken as it is, like a live one
    ],
)
def test_replayed_times_are_put_on_the_hub_clock_by_the_birth(engine, error, corrected):
    engine.on_status(DeviceStatus("laser-node", "online", 7, device_ts=T0 + error), T0)
    engine.on_status(DeviceStatus("door", "online", 3, device_ts=T0 + error), T0)
    laser, on, off = Reader("laser-node", boot=7), T0 - timedelta(hours=3), T0 - timedelta(hours=2)
    engine.on_event(laser("badge", uid=ADA, ts=on + error, replay=True), T0 + MINUTE)
    out = engine.on_event(laser("badge", uid=ADA, ts=off + error, replay=True), T0 + MINUTE)
    shift = timedelta(0) if corrected else error
    [closed] = of(out, SessionCloseRec)
    assert (closed.start, closed.end) == (on + shift, off + shift)
    out = engine.on_event(
        Reader("door", boot=3)("badge", uid=ADA, ts=on + error, replay=True), T0 + MINUTE
    )
    assert [p.at for p in of(out, PresenceRec)] == [on + shift]


def test_each_boot_keeps_its_own_clock_and_a_replay_never_lands_after_its_arrival(engine):
    """Boot 7's clock was six hours fast; the node restarted (boot 8) with its clock set
    right, and only then replays what boot 7 buffered: boot 7's own birth corrects it.
    Events of a boot whose clock the hub never heard keep their times, but never later
    than when they arrived."""
    day = T0 - timedelta(days=1)
    engine.on_status(DeviceStatus("laser-node", "online", 7, device_ts=day + SIX_HOURS), day)
    engine.on_status(DeviceStatus("laser-node", "online", 8, device_ts=T0), T0)
    boot7, on, off = Reader("laser-node", boot=7), T0 - timedelta(hours=3), T0 - timedelta(hours=2)
    engine.on_event(boot7("badge", uid=ADA, ts=on + SIX_HOURS, replay=True), T0)
    out = engine.on_event(boot7("badge", uid=ADA, ts=off + SIX_HOURS, replay=True), T0)
    [closed] = of(out, SessionCloseRec)
    assert (closed.start, closed.end) == (on, off)
    boot6 = Reader("laser-node", boot=6)  # no birth heard: its future times are impossible
    engine.on_event(boot6("badge", uid=ADA, ts=T0 + SIX_HOURS, replay=True), T0 + MINUTE)
    out = engine.on_event(
        boot6("badge", uid=ADA, ts=T0 + 2 * SIX_HOURS, replay=True), T0 + 2 * MINUTE
    )
    [closed] = of(out, SessionCloseRec)
    assert (closed.start, closed.end) == (T0 + MINUTE, T0 + 2 * MINUTE)


def test_the_same_birth_heard_again_keeps_its_first_reading(engine):
    """A birth delivered again later (after a reconnect) would seem to show a slower
    clock; the stored readings keep the first, and so does the engine."""
    birth = DeviceStatus("laser-node", "online", 7, device_ts=T0 + SIX_HOURS)
    engine.on_status(birth, T0)
    engine.on_status(birth, T0 + timedelta(hours=2))
    laser = Reader("laser-node", boot=7)
    on = T0 - timedelta(hours=1)
    engine.on_event(laser("badge", uid=ADA, ts=on + SIX_HOURS, replay=True), T0 + 3 * MINUTE)
    out = engine.on_event(laser("badge", uid=ADA, ts=on + SIX_HOURS + MINUTE, replay=True), T0)
    [closed] = of(out, SessionCloseRec)
    assert closed.start == on
