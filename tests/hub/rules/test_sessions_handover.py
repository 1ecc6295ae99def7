"""A two-card handover as the floor shows it; a tool's events through ``feed()``, the
path the hub's engine takes for every device event (the done button, the running input,
a card leaving the reader, power); and a session across a hub restart, a lock and a
device coming back, with the live state the floor shows between changes."""

from datetime import UTC, datetime, timedelta

import pytest

from hub.contract.messages import DeviceEvent
from hub.rules.sessions import (
    ReleaseTool,
    SessionEnded,
    SessionStarted,
    ToolRules,
    ToolSessionState,
    ToolStateChanged,
)

T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def tool(policy="tap", **kw) -> ToolSessionState:
    return ToolSessionState("laser-1", ToolRules(policy=policy, off_w=5, busy_w=200, **kw))


def shown(effects) -> list[dict]:
    """The ``peershop/tool/laser-1/state`` payloads the effects publish."""
    return [e.payload() for e in effects if isinstance(e, ToolStateChanged)]


def event(kind: str, minutes: float, seq: int = 1, replay: bool = False, **data) -> DeviceEvent:
    return DeviceEvent("laser-node", 1, seq, kind, data, at(minutes), replay)


def only_end(effects) -> SessionEnded:
    ends = [e for e in effects if isinstance(e, SessionEnded)]
    assert len(ends) == 1, effects
    return ends[0]


# --- handover ------------------------------------------------------------------------


def test_a_handover_shows_the_trainee_on_the_floor():
    t = tool()
    assert shown(t.start("tom", at(0), name="Tom T.")) == [
        {"state": "in_use", "member": "Tom T.", "since": "2026-11-26T10:00:00.000Z", "w": None}
    ]
    effects = t.start("bea", at(1), name="Bea B.")
    assert shown(effects) == [
        {"state": "in_use", "member": "Bea B.", "since": "2026-11-26T10:01:00.000Z", "w": None}
    ]
    end = only_end(effects)
    assert (end.member, end.close_reason, end.start, end.end) == ("tom", "handover", at(0), at(1))
    assert SessionStarted("laser-1", "bea", at(1)) in effects
    assert not any(isinstance(e, ReleaseTool) for e in effects)  # the laser stays on
    assert t.snapshot(at(2)).member == "bea"


def test_a_handover_while_cutting_keeps_the_tool_busy_and_names_the_trainee():
    t = tool()
    t.start("tom", at(0), name="Tom T.")
    assert [s["state"] for s in shown(t.power(800.0, at(1)))] == ["busy"]
    effects = t.start("bea", at(31), name="Bea B.")
    assert shown(effects) == [
        {
            "state": "busy",
            "member": "Bea B.",
            "since": "2026-11-26T10:31:00.000Z",
            "w": 800.0,
            "wh_total": 400.0,  # Tom's half hour at 800 W, metered since the hub started
        }
    ]
    assert (only_end(effects).busy_s, only_end(effects).wh) == (1800.0, 400.0)
    end = only_end(t.tap_out("bea", at(61)))
    assert (end.member, end.busy_s, end.wh) == ("bea", 1800.0, 400.0)


def test_the_same_member_badging_again_publishes_nothing_new():
    t = tool("card_present")
    t.start("ada", at(0), name="Ada L.")
    effects = t.start("ada", at(1), name="Ada L.")
    assert effects == []
    assert t.session is not None and t.session.start == at(0)


# --- feed(): the engine's path -------------------------------------------------------


@pytest.mark.parametrize("button", ["done", "stop"])
def test_the_done_button_through_feed_ends_the_session_and_frees_the_tool(button):
    t = tool()
    t.start("ada", at(0), name="Ada L.")
    t.feed(event("power", 1, seq=1, w=600.0), at(1))
    effects = t.feed(event("button", 21, seq=2, name=button), at(21))
    end = only_end(effects)
    assert (end.member, end.close_reason, end.start, end.end) == ("ada", "tool_done", at(0), at(21))
    assert (end.busy_s, end.wh) == (1200.0, 200.0)
    # the member pressed it: the tool already knows, the hub sends no release
    assert not any(isinstance(e, ReleaseTool) for e in effects)
    assert [s["state"] for s in shown(effects)] == ["busy"]  # still drawing 600 W, no one
    assert shown(effects)[0]["member"] is None
    assert t.session is None


def test_another_button_through_feed_changes_nothing():
    t = tool()
    t.start("ada", at(0))
    assert t.feed(event("button", 5, name="help"), at(5)) == []
    assert t.session is not None


def test_the_done_button_with_no_session_changes_nothing():
    t = tool()
    assert t.feed(event("button", 5, name="done"), at(5)) == []


def test_a_replayed_done_button_ends_the_session_at_its_own_time():
    t = tool()
    t.start("ada", at(0), device_ts=at(0), replay=True)
    end = only_end(t.feed(event("button", 25, replay=True, name="done"), at(90)))
    assert (end.close_reason, end.end) == ("tool_done", at(25))


def test_a_live_done_button_from_a_clock_far_off_ends_at_the_hubs_time():
    t = tool()
    t.start("ada", at(0))
    late = DeviceEvent("laser-node", 1, 2, "button", {"name": "done"}, at(-600))
    assert only_end(t.feed(late, at(30))).end == at(30)


def test_the_running_input_through_feed_ends_a_printer_job():
    printer = tool("card_present", end_on_stop=True)
    printer.start("ada", at(0))
    assert [s["state"] for s in shown(printer.feed(event("running", 1, on=True), at(1)))] == [
        "busy"
    ]
    end = only_end(printer.feed(event("running", 61, seq=2, on=False), at(61)))
    assert (end.close_reason, end.busy_s) == ("tool_stopped", 3600.0)


def test_a_card_leaving_the_reader_through_feed_ends_only_its_holders_session():
    t = tool("card_present")
    t.start("ada", at(0))
    assert t.feed(event("badge_removed", 3, uid="04B0B0B0"), at(3), member="bob") == []
    end = only_end(t.feed(event("badge_removed", 4, seq=2, uid="04A1B2C3"), at(4), member="ada"))
    assert (end.close_reason, end.end) == ("card_removed", at(4))


def test_power_through_feed_uses_the_plugs_counter():
    t = tool()
    t.start("ada", at(0))
    t.feed(event("power", 0, w=900.0, wh_total=1000.0), at(0))
    t.feed(event("power", 60, seq=2, w=900.0, wh_total=1700.0), at(60))
    assert only_end(t.tap_out("ada", at(60))).wh == 700.0


def test_a_fault_through_feed_still_runs_the_timers():
    t = tool("tap", max_duration=timedelta(hours=1))
    t.start("ada", at(0))
    effects = t.feed(event("fault", 61, code="overheat"), at(61))
    assert only_end(effects).close_reason == "max_duration"
    assert ReleaseTool("laser-1", "max_duration") in effects


# --- replayed and device-timed events through feed() -----------------------------------


def replayed_session(policy="tap", **kw) -> ToolSessionState:
    """A session its device opened at 10:00 while the hub was away, replayed at 12:00."""
    t = tool(policy, **kw)
    t.start("ada", at(120), device_ts=at(0), replay=True)
    return t


def test_a_replayed_power_reading_counts_at_its_own_time_and_with_its_counter():
    t = replayed_session()
    t.feed(event("power", 5, seq=2, replay=True, w=600.0, wh_total=100.0), at(120))
    t.feed(event("power", 35, seq=3, replay=True, w=0.0, wh_total=420.0), at(120))
    end = only_end(t.feed(event("button", 40, seq=4, replay=True, name="done"), at(121)))
    assert (end.start, end.end, end.busy_s, end.wh) == (at(0), at(40), 1800.0, 320.0)


def test_a_replayed_running_input_counts_at_its_own_time():
    t = replayed_session("card_present", end_on_stop=True)
    t.feed(event("running", 10, seq=2, replay=True, on=True), at(120))
    end = only_end(t.feed(event("running", 70, seq=3, replay=True, on=False), at(120)))
    assert (end.close_reason, end.end, end.busy_s) == ("tool_stopped", at(70), 3600.0)


def test_a_replayed_card_removal_ends_the_session_at_its_own_time():
    t = replayed_session("card_present")
    removed = event("badge_removed", 30, seq=2, replay=True, uid="04A1B2C3")
    effects = t.feed(removed, at(120), member="ada")
    end = only_end(effects)
    assert (end.close_reason, end.end) == ("card_removed", at(30))
    assert shown(effects) == [
        {"state": "free", "member": None, "since": "2026-11-26T10:30:00.000Z", "w": None}
    ]


def test_live_events_with_a_device_clock_two_minutes_behind_keep_that_clock():
    t = tool("card_present", end_on_stop=True)
    t.start("ada", at(10), device_ts=at(8))
    t.feed(event("running", 9, seq=2, on=True), at(11))
    end = only_end(t.feed(event("running", 39, seq=3, on=False), at(41)))
    assert (end.start, end.end, end.busy_s) == (at(8), at(39), 1800.0)
    lathe = tool("card_present")
    lathe.start("ada", at(10), device_ts=at(8))
    lathe.feed(event("power", 9, seq=2, w=900.0), at(11))
    end = only_end(lathe.feed(event("badge_removed", 29, seq=3, uid="04A1"), at(31), "ada"))
    assert (end.end, end.busy_s, end.wh) == (at(29), 1200.0, 300.0)


def test_after_a_done_button_the_next_untimed_reading_stays_on_the_devices_clock():
    t = tool()
    t.start("ada", at(10), device_ts=at(8))
    t.feed(event("button", 18, seq=2, name="done"), at(20))
    # no device time: placed at the last record time plus the hub time since (18 + 5)
    t.start("bob", at(25))
    assert t.session is not None and t.session.start == at(23)


# --- a replayed session still going on -----------------------------------------------


def test_a_session_opened_offline_and_still_going_on_carries_on_live():
    past = replayed_session()
    past.feed(event("power", 5, seq=2, replay=True, w=800.0, wh_total=100.0), at(120))
    live = tool()
    effects = live.carry_on(past, at(121))
    assert past.session is None
    assert live.session is not None and live.session.member == "ada"
    assert [s["state"] for s in shown(effects)] == ["busy"]  # the replay's power came along
    assert not any(isinstance(e, SessionEnded) for e in effects)
    live.feed(event("power", 125, seq=3, w=0.0, wh_total=1700.0), at(125))
    end = only_end(live.tap_out("ada", at(126)))
    assert (end.start, end.wh) == (at(0), 1600.0)


def test_carrying_on_keeps_the_live_power_state_when_it_is_newer():
    past = replayed_session()
    past.feed(event("power", 5, seq=2, replay=True, w=800.0), at(120))
    live = tool()
    live.power(3.0, at(119))  # the plug's live reading, later than the replay's
    effects = live.carry_on(past, at(121))
    assert [s["state"] for s in shown(effects)] == ["in_use"]
    assert live.meter.w == 3.0


def test_carrying_on_a_session_past_its_maximum_closes_it():
    past = replayed_session(max_duration=timedelta(hours=1))
    live = tool(max_duration=timedelta(hours=1))
    effects = live.carry_on(past, at(190))
    assert only_end(effects).close_reason == "max_duration"
    assert live.session is None


def live_states(effects) -> list[tuple[str, str | None, datetime]]:
    return [(e.state, e.member, e.since) for e in effects if isinstance(e, ToolStateChanged)]


# --- what the floor shows between changes -------------------------------------------


def test_the_snapshot_shows_the_member_the_level_and_the_watts_since_the_last_change():
    t = tool()
    t.start("ada", at(0), name="Ada L.")
    t.power(812.5, at(1))
    t.power(790.0, at(2))  # still busy: no new state, but the watts moved
    snap = t.snapshot(at(3))
    # the meter's energy so far: a minute at 812.5 W
    assert snap == ToolStateChanged("laser-1", "busy", "ada", "Ada L.", at(1), 790.0, 13.542)
    assert snap.payload() == {
        "state": "busy",
        "member": "Ada L.",
        "since": "2026-11-26T10:01:00.000Z",
        "w": 790.0,
        "wh_total": 13.542,
    }


def test_a_fresh_tool_shows_free_since_now_with_no_watts():
    assert tool().snapshot(at(5)) == ToolStateChanged("laser-1", "free", None, None, at(5), None)


# --- a hub restart -------------------------------------------------------------------


def test_a_restart_closes_at_the_last_event_and_the_next_session_starts_at_hub_time():
    t = tool()
    t.start("ada", at(0))
    t.power(900.0, at(1))
    effects = t.hub_restart(at(30))
    end = only_end(effects)
    assert (end.close_reason, end.end, end.busy_s) == ("hub_restart", at(1), 0.0)
    assert live_states(effects) == [("busy", None, at(1))]  # the plug still draws 900 W
    t.start("bob", at(40))
    assert t.session is not None and t.session.start == at(40)


def test_a_resumed_session_is_the_one_that_was_open():
    t = tool("tap", idle_timeout=timedelta(minutes=10))
    t.power(900.0, at(-60))  # before the session: not counted
    t.resume("ada", at(0), name="Ada L.", rx=at(2))
    s = t.session
    assert (s.member, s.name, s.start, s.started_rx, s.replayed) == (
        "ada",
        "Ada L.",
        at(0),
        at(2),
        False,
    )
    t.power(0.0, at(30))  # no device time: 28 minutes of hub time after the badge
    end = only_end(t.tap_out("ada", at(31)))
    assert (end.start, end.busy_s, end.wh) == (at(0), 1680.0, 420.0)


def test_a_resumed_session_is_received_at_its_start_unless_told_otherwise():
    t = tool("tap", max_duration=timedelta(hours=1))
    t.resume("ada", at(0))
    assert t.session.started_rx == at(0)
    assert only_end(t.tick(at(60))).close_reason == "max_duration"


def test_a_resumed_replayed_session_stays_open_over_another_restart():
    t = tool()
    t.resume("ada", at(0), replayed=True)
    assert t.session.replayed is True
    assert t.hub_restart(at(5)) == []


def test_a_resumed_idle_session_times_out_from_its_badges_arrival():
    t = tool("timeout", idle_timeout=timedelta(minutes=10))
    t.resume("ada", at(0), rx=at(3))
    assert t.tick(at(12)) == []
    assert only_end(t.tick(at(13))).end == at(0)


def test_after_a_resume_an_untimed_event_is_placed_by_hub_time_since_the_badge():
    t = tool("card_present")
    t.resume("ada", at(0), rx=at(2))  # the device's clock was 2 minutes behind
    end = only_end(t.badge_removed("ada", at(12)))
    assert end.end == at(10)


# --- lock, unlock, a device coming back ----------------------------------------------


def test_a_lock_shows_locked_from_the_moment_it_was_locked():
    t = tool()
    t.start("ada", at(0))
    effects = t.lock(at(5))
    assert live_states(effects) == [("locked", None, at(5))]
    assert live_states(t.unlock(at(9))) == [("free", None, at(9))]


def test_a_device_coming_back_still_runs_the_timers():
    t = tool("tap", max_duration=timedelta(hours=1))
    t.start("ada", at(0))
    t.device_offline(at(10))
    t.start("ada", at(11))
    effects = t.device_online(at(75))
    assert only_end(effects).close_reason == "max_duration"
    assert live_states(effects)[-1][0] == "free"


def test_a_device_back_online_shows_its_state_from_the_record_clock():
    t = tool()
    t.power(3.0, at(0), device_ts=at(-2))  # this device's clock runs 2 minutes behind
    t.device_offline(at(1))
    assert live_states(t.device_online(at(5))) == [("free", None, at(3))]


# --- the running input ---------------------------------------------------------------


def test_a_late_running_change_is_counted_and_ignored():
    t = tool("card_present", end_on_stop=True)
    t.start("ada", at(0))
    t.running_changed(True, at(10))
    assert t.running_changed(False, at(11), device_ts=at(7)) == []
    assert t.late_events == 1
    t.running_changed(False, at(12), device_ts=at(8))
    assert t.late_events == 2
    assert t.session is not None


def test_a_print_job_ending_shows_the_tool_free_at_the_jobs_end():
    t = tool("card_present", end_on_stop=True)
    t.start("ada", at(0))
    t.running_changed(True, at(1))
    effects = t.running_changed(False, at(31))
    assert live_states(effects) == [("free", None, at(31))]
    t.start("bob", at(40))
    assert t.session.start == at(40)


def test_the_running_input_keeps_a_timeout_session_alive_and_its_end_starts_the_timer():
    t = tool("timeout", idle_timeout=timedelta(minutes=10))
    t.start("ada", at(0))
    t.running_changed(True, at(1))
    assert t.tick(at(30)) == []
    t.running_changed(False, at(31))
    assert t.tick(at(40)) == []
    end = only_end(t.tick(at(41)))
    assert (end.end, end.busy_s) == (at(31), 1800.0)


# --- a tool's rules as the shop file gives them --------------------------------------


@pytest.mark.parametrize(
    ("kw", "says"),
    [
        ({"policy": "badge"}, "policy must be one of card_present, tap, timeout, got 'badge'"),
        ({"policy": "timeout"}, "policy 'timeout' needs an idle_timeout"),
        ({"idle_timeout": timedelta(0)}, "idle_timeout must be positive, got 0:00:00"),
        ({"max_duration": timedelta(0)}, "max_duration must be positive, got 0:00:00"),
        (
            {"max_clock_skew": timedelta(seconds=-1)},
            "max_clock_skew must not be negative, got -1 day, 23:59:59",
        ),
        ({"idle_w": -0.5}, "idle_w must not be negative, got -0.5"),
    ],
)
def test_a_tools_rules_refuse_what_cannot_work_saying_why(kw, says):
    with pytest.raises(ValueError) as caught:
        ToolRules(**kw)
    assert str(caught.value) == says


def test_a_tools_rules_allow_their_edges():
    rules = ToolRules(max_clock_skew=timedelta(0), idle_w=0, off_w=0, busy_w=0)
    assert (rules.activity_w, rules.max_clock_skew) == (0, timedelta(0))
    assert ToolRules(idle_w=0.5).activity_w == 0.5


def test_idle_time_adds_up_over_several_readings():
    t = tool()
    t.start("ada", at(0))
    t.power(50.0, at(0))  # between off_w and busy_w: idle
    t.power(60.0, at(10))
    t.power(55.0, at(20))
    end = only_end(t.tap_out("ada", at(30)))
    assert (end.idle_s, end.busy_s) == (1800.0, 0.0)


def test_a_running_tool_that_went_offline_is_not_busy_when_it_comes_back():
    t = tool("card_present")
    t.running_changed(True, at(0))
    assert [s["state"] for s in shown(t.device_offline(at(5)))] == ["offline"]
    assert [s["state"] for s in shown(t.device_online(at(6)))] == ["free"]


def test_a_running_input_without_power_readings_counts_busy_time():
    t = tool("card_present")
    t.start("ada", at(0))
    t.running_changed(True, at(0))
    t.running_changed(False, at(20))
    end = only_end(t.badge_removed("ada", at(30)))
    assert (end.busy_s, end.idle_s, end.wh) == (1200.0, 0.0, 0.0)


# --- clocks, late events and the record's own fields ----------------------------------


def test_live_events_from_a_clock_an_hour_behind_are_placed_at_hub_time():
    t = tool("card_present", end_on_stop=True)
    t.start("ada", at(0))
    t.power(900.0, at(10), device_ts=at(-50))
    t.running_changed(True, at(11), device_ts=at(-49))
    assert t.meter.at == at(11)
    end = only_end(t.badge_removed("ada", at(20), device_ts=at(-40)))
    assert (end.tool, end.member, end.end) == ("laser-1", "ada", at(20))
    t.start("bob", at(30))
    assert only_end(t.button("done", at(40), device_ts=at(-20))).end == at(40)


def test_a_device_clock_exactly_at_the_allowed_skew_is_believed():
    t = tool()
    t.start("ada", at(10), device_ts=at(5))
    assert t.session.start == at(5)


def test_late_events_are_counted_one_each():
    t = tool()
    t.start("ada", at(10))
    t.power(100.0, at(11), device_ts=at(8))
    t.power(100.0, at(11), device_ts=at(9))
    assert t.late_events == 2
    t.button("done", at(12), device_ts=at(9))  # late: ends at the last accounted time
    assert t.late_events == 3


def test_power_exactly_at_idle_w_is_no_activity():
    t = tool("timeout", idle_timeout=timedelta(minutes=10), idle_w=10)
    t.start("ada", at(0))
    t.power(10.0, at(0))
    assert only_end(t.tick(at(10))).close_reason == "timeout"


def test_a_state_change_names_the_tool_and_the_member():
    t = tool()
    (change,) = [e for e in t.start("ada", at(0), name="Ada L.") if isinstance(e, ToolStateChanged)]
    assert (change.tool, change.member, change.name) == ("laser-1", "ada", "Ada L.")
