from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.contract.messages import DeviceEvent
from hub.rules.sessions import (
    OpenSession,
    ReleaseTool,
    SessionEnded,
    SessionStarted,
    ToolRules,
    ToolSessionState,
    ToolStateChanged,
)

T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def ended(effects) -> SessionEnded:
    found = [e for e in effects if isinstance(e, SessionEnded)]
    assert len(found) == 1, effects
    return found[0]


def states(effects) -> list[str]:
    return [e.state for e in effects if isinstance(e, ToolStateChanged)]


def tool(policy="tap", **kw) -> ToolSessionState:
    return ToolSessionState("laser-1", ToolRules(policy=policy, off_w=5, busy_w=200, **kw))


# --- policies and close reasons ---------------------------------------------------


def test_card_present_session_lasts_while_the_card_is_on_the_reader():
    t = tool("card_present")
    started = t.start("ada", at(0), name="Ada L.")
    assert SessionStarted("laser-1", "ada", at(0)) in started
    assert t.badge_removed("bob", at(5)) == []  # someone else's card: not this session
    t.power(900, at(10))
    end = ended(t.badge_removed("ada", at(40)))
    assert (end.close_reason, end.start, end.end, end.busy_s) == (
        "card_removed",
        at(0),
        at(40),
        1800,
    )
    assert t.session is None


def test_card_removed_means_nothing_to_a_tap_tool():
    t = tool("tap")
    t.start("ada", at(0))
    assert t.badge_removed("ada", at(1)) == []
    assert t.session is not None


def test_tap_policy_ends_on_a_second_tap_by_the_same_member():
    t = tool("tap")
    t.start("ada", at(0))
    assert t.tap_out("bob", at(2)) == []
    end = ended(t.tap_out("ada", at(3)))
    assert (end.close_reason, end.duration_s) == ("badge_out", 180)


def test_release_from_the_hub_ends_the_session_and_switches_the_tool_off():
    t = tool("tap")
    t.start("ada", at(0))
    effects = t.release(at(7))
    assert ended(effects).close_reason == "release"
    assert ReleaseTool("laser-1", "release") in effects


def test_timeout_policy_needs_an_idle_timeout():
    with pytest.raises(ValueError, match="idle_timeout"):
        ToolRules(policy="timeout")


def test_timeout_ends_when_activity_stopped_not_when_the_timer_ran_out():
    t = tool("timeout", idle_timeout=15 * MIN)
    t.start("ada", at(0))
    t.power(900, at(1))
    t.power(2, at(31))  # switched off after 30 min of cutting
    assert t.tick(at(45)) == []  # 14 minutes idle: still open
    effects = t.tick(at(46))
    end = ended(effects)
    assert (end.close_reason, end.end, end.busy_s) == ("timeout", at(31), 1800)
    assert end.wh == pytest.approx(450)
    assert ReleaseTool("laser-1", "timeout") in effects


def test_power_above_idle_w_keeps_a_timeout_session_open():
    t = tool("timeout", idle_timeout=15 * MIN, idle_w=20)
    t.start("ada", at(0))
    t.power(50, at(1))  # idle level but above idle_w: someone is working
    assert t.tick(at(100)) == []
    t.power(10, at(101))  # below idle_w: the timer starts
    assert ended(t.tick(at(116))).end == at(101)


def test_a_tap_session_nobody_used_closes_at_its_start_on_timeout():
    t = tool("tap", idle_timeout=15 * MIN)
    t.start("ada", at(0))
    end = ended(t.tick(at(15)))
    assert (end.close_reason, end.duration_s, end.busy_s) == ("timeout", 0, 0)


def test_tapping_again_on_a_timeout_tool_restarts_the_idle_timer():
    t = tool("timeout", idle_timeout=15 * MIN)
    t.start("ada", at(0))
    assert [e for e in t.start("ada", at(10)) if isinstance(e, SessionStarted)] == []
    assert t.tick(at(20)) == []
    assert ended(t.tick(at(25))).end == at(10)


def test_max_duration_closes_a_session_nobody_ended():
    t = tool("card_present", max_duration=timedelta(hours=4))
    t.start("ada", at(0))
    t.power(900, at(1))
    assert t.tick(at(239)) == []
    effects = t.tick(at(300))  # the hub only looked an hour late
    end = ended(effects)
    assert (end.close_reason, end.end) == ("max_duration", at(240))
    assert end.busy_s == 239 * 60
    assert ReleaseTool("laser-1", "max_duration") in effects


def test_device_offline_closes_the_session_and_shows_the_tool_offline():
    t = tool("card_present")
    t.start("ada", at(0))
    t.power(900, at(10))
    effects = t.device_offline(at(20))
    end = ended(effects)
    assert (end.close_reason, end.end, end.busy_s) == ("device_offline", at(20), 600)
    assert not any(isinstance(e, ReleaseTool) for e in effects)
    assert states(effects) == ["offline"]
    # the old 900 W reading is not trusted after the outage
    assert states(t.device_online(at(25))) == ["free"]


def test_hub_restart_closes_at_the_last_known_event():
    persisted = OpenSession(
        "ada", at(0), at(0), name="Ada L.", busy_s=600, wh=150, last_seen=at(12)
    )
    t = ToolSessionState("laser-1", ToolRules(), session=persisted)
    end = ended(t.hub_restart(at(90)))
    assert (end.close_reason, end.end, end.busy_s, end.wh) == ("hub_restart", at(12), 600, 150)
    assert t.hub_restart(at(91)) == []


def test_hub_restart_leaves_a_replayed_session_to_the_rest_of_its_replay():
    t = tool("tap")
    t.start("ada", at(600), device_ts=at(0), replay=True)  # badged offline, 10 h ago
    t.power(900, at(600), device_ts=at(1), replay=True)
    assert t.hub_restart(at(601)) == []  # the hub restarts in the middle of the replay
    end = ended(t.tap_out("ada", at(602), device_ts=at(31), replay=True))
    assert (end.close_reason, end.start, end.end, end.busy_s) == ("badge_out", at(0), at(31), 1800)


def test_a_resumed_session_times_out_from_its_badge_arrival_not_its_start():
    t = tool("tap", idle_timeout=timedelta(minutes=20), max_duration=timedelta(hours=12))
    # granted on a badge replayed at 600 that the node read 10 h before
    t.resume("ada", at(0), rx=at(600), replayed=True)
    assert t.tick(at(601)) == []  # neither 20 min idle nor 12 h since the hub had it
    end = ended(t.tick(at(620)))
    assert (end.close_reason, end.end) == ("timeout", at(0))


def test_done_button_at_the_tool_ends_the_session():
    t = tool("tap")
    t.start("ada", at(0))
    assert t.button("help", at(1)) == []
    assert ended(t.button("done", at(2))).close_reason == "tool_done"


def test_running_off_ends_the_session_only_for_tools_that_say_so():
    printer = tool("card_present", end_on_stop=True)
    printer.start("ada", at(0))
    printer.running_changed(True, at(1))
    end = ended(printer.running_changed(False, at(61)))
    assert (end.close_reason, end.busy_s) == ("tool_stopped", 3600)

    lathe = tool("card_present")
    lathe.start("ada", at(0))
    lathe.running_changed(True, at(1))
    lathe.running_changed(False, at(61))
    assert lathe.session is not None


def test_locking_ends_the_session_and_refuses_new_ones():
    t = tool("tap")
    t.start("ada", at(0))
    effects = t.lock(at(5))
    assert ended(effects).close_reason == "locked"
    assert states(effects) == ["locked"]
    assert t.start("bob", at(6)) == []
    assert t.session is None
    assert states(t.unlock(at(7))) == ["free"]


def test_a_new_member_takes_over_with_handover():
    t = tool("tap")
    t.start("trainer", at(0))
    effects = t.start("trainee", at(1))
    assert ended(effects).close_reason == "handover"
    assert SessionStarted("laser-1", "trainee", at(1)) in effects


def test_tool_state_follows_the_session_and_the_power_level():
    t = tool("tap", hysteresis=20)
    assert states(t.start("ada", at(0), name="Ada L.")) == ["in_use"]
    effects = t.power(812.4, at(1))
    assert states(effects) == ["busy"]
    assert effects[-1].payload() == {
        "state": "busy",
        "member": "Ada L.",
        "since": "2026-11-26T10:01:00.000Z",
        "w": 812.4,
        "wh_total": 0.0,  # the first reading: nothing counted yet
    }
    assert states(t.power(190, at(2))) == []  # inside the band: still busy
    assert states(t.power(50, at(3))) == ["idle"]
    assert states(t.power(1, at(4))) == ["in_use"]
    assert states(t.tap_out("ada", at(5))) == ["free"]
    assert states(t.power(300, at(6))) == ["busy"]  # running with no session is visible
    assert t.snapshot(at(7)).member is None


def test_feed_dispatches_device_events():
    t = tool("card_present")
    t.start("ada", at(0))
    ev = DeviceEvent("laser-node", 1, 5, "power", {"w": 900.0, "wh_total": 10.0}, at(1))
    t.feed(ev, at(1))
    t.feed(DeviceEvent("laser-node", 1, 6, "power", {"w": 0.0, "wh_total": 460.0}, at(31)), at(31))
    removed = DeviceEvent("laser-node", 1, 7, "badge_removed", {"uid": "04A1B2C3"}, at(32))
    end = ended(t.feed(removed, at(32), member="ada"))
    assert (end.busy_s, end.wh) == (1800, 450)


# --- clocks --------------------------------------------------------------------------


def test_start_and_end_use_device_time_when_present():
    t = tool("tap")
    t.start("ada", at(0), device_ts=at(0) - timedelta(seconds=2))
    end = ended(t.tap_out("ada", at(10), device_ts=at(10) - timedelta(seconds=2)))
    assert (end.start, end.end) == (at(0) - timedelta(seconds=2), at(10) - timedelta(seconds=2))


def test_a_device_clock_from_1970_falls_back_to_receive_time():
    t = tool("tap")
    t.start("ada", at(0), device_ts=datetime(1970, 1, 1, tzinfo=UTC))
    end = ended(t.tap_out("ada", at(10), device_ts=datetime(1970, 1, 1, 0, 10, tzinfo=UTC)))
    assert (end.start, end.end) == (at(0), at(10))


def test_replayed_events_keep_their_old_device_time():
    t = tool("tap")
    t.start("ada", at(60), device_ts=at(0), replay=True)
    t.power(900, at(60), device_ts=at(1), replay=True)
    end = ended(t.tap_out("ada", at(60), device_ts=at(31), replay=True))
    assert (end.start, end.end, end.busy_s) == (at(0), at(31), 1800)


def test_an_out_of_order_power_sample_is_ignored():
    t = tool("tap")
    t.start("ada", at(0))
    t.power(900, at(1), wh_total=0.0)
    t.power(900, at(11), wh_total=150.0)
    t.power(0, at(12), device_ts=at(10), wh_total=135.0)  # arrived late
    assert t.late_events == 1
    assert t.state == "busy"
    end = ended(t.tap_out("ada", at(21)))
    assert end.busy_s == 1200


def test_an_end_before_the_start_gives_zero_not_negative_duration():
    t = tool("tap")
    t.start("ada", at(10), device_ts=at(10))
    end = ended(t.tap_out("ada", at(10), device_ts=at(8)))  # clock stepped back
    assert end.end == end.start == at(10)
    assert end.duration_s == 0


def test_a_device_clock_running_ahead_cannot_keep_a_session_open():
    t = tool("tap", idle_timeout=15 * MIN, max_clock_skew=timedelta(minutes=5))
    t.start("ada", at(0), device_ts=at(4))  # 4 minutes ahead: trusted
    end = ended(t.tick(at(15)))  # the timer runs on the hub's clock
    assert (end.close_reason, end.start) == ("timeout", at(4))


operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("power"),
            st.floats(min_value=0, max_value=300),  # hub seconds since the previous call
            st.floats(min_value=-400, max_value=400),  # device clock error
            st.floats(min_value=-10, max_value=3000, allow_nan=False),
            st.one_of(st.none(), st.floats(min_value=0, max_value=1e5, allow_nan=False)),
        ),
        st.tuples(
            st.sampled_from(["start", "tap", "tick", "release", "offline"]),
            st.floats(min_value=0, max_value=3000),
            st.floats(min_value=-400, max_value=400),
            st.just(0.0),
            st.none(),
        ),
    ),
    max_size=40,
)


@settings(max_examples=200)
@given(operations, st.booleans())
def test_random_streams_give_sane_sessions_that_always_close(ops, replay):
    rules = ToolRules(
        policy="tap",
        off_w=5,
        busy_w=200,
        hysteresis=10,
        idle_timeout=15 * MIN,
        max_duration=timedelta(hours=2),
    )
    t = ToolSessionState("laser-1", rules)
    now = T0
    effects = []
    for kind, dt, skew, w, wh in ops:
        now += timedelta(seconds=dt)
        ts = now + timedelta(seconds=skew)
        if kind == "power":
            effects += t.power(w, now, ts, wh_total=wh, replay=replay)
        elif kind == "start":
            effects += t.start("ada", now, ts, replay=replay)
        elif kind == "tap":
            effects += t.tap_out("ada", now, ts, replay=replay)
        elif kind == "tick":
            effects += t.tick(now)
        elif kind == "release":
            effects += t.release(now)
        else:
            effects += t.device_offline(now)
    effects += t.tick(now + timedelta(hours=2))
    assert t.session is None
    for e in effects:
        if isinstance(e, SessionEnded):
            assert e.end >= e.start
            assert e.busy_s >= 0 and e.idle_s >= 0 and e.wh >= 0
            assert e.busy_s + e.idle_s <= e.duration_s + 1e-6


def test_idle_time_after_activity_stopped_is_not_charged_on_timeout():
    t = tool("timeout", idle_timeout=15 * MIN, idle_w=100)
    t.start("ada", at(0))
    t.power(900, at(0))
    t.power(50, at(10))  # idle level, below idle_w: the machine idles, nobody works
    t.power(50, at(20))
    end = ended(t.tick(at(25)))
    assert (end.end, end.busy_s, end.idle_s) == (at(10), 600, 0)
    assert end.wh == pytest.approx(150)
