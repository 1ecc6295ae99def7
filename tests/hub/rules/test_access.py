import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from hub.contract.messages import DENY_REASONS
from hub.rules.access import (
    DENY_ORDER,
    AccessOutcome,
    Deny,
    Grant,
    MemberAccess,
    NoReply,
    PendingInduction,
    Reservation,
    TapOut,
    ToolAccess,
    TrainingRecorded,
    WeeklyHours,
    decide,
    reply_payload,
)

BERLIN = ZoneInfo("Europe/Berlin")
# Thursday 26 Nov 2026, 18:00 UTC = 19:00 in Berlin
NOW = datetime(2026, 11, 26, 18, 0, tzinfo=UTC)
EVENINGS = WeeklyHours.parse("Mon-Fri 17:00-22:00", BERLIN)
ALWAYS = WeeklyHours.parse("Mon-Sun 00:00-24:00", BERLIN)
ADA = MemberAccess("ada", "Ada L.", trainings={"laser": None})
LASER = ToolAccess("laser-1", training="laser", max_s=14400)


def reason(tool, member, now=NOW, **kw) -> str:
    reply = decide(tool, member, now, **kw).reply
    assert isinstance(reply, Deny), reply
    return reply.reason


def s(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


def test_a_trained_member_is_granted_with_name_and_max_s():
    assert decide(LASER, ADA, NOW) == AccessOutcome(Grant("ada", "Ada L.", 14400))


def test_the_order_covers_exactly_the_contract_reasons():
    assert sorted(DENY_ORDER) == sorted(DENY_REASONS)
    assert len(DENY_ORDER) == len(set(DENY_ORDER))


def test_precedence_fixing_the_first_reason_reveals_the_next():
    """A badge that fails every check; each step fixes the reason the reader just showed."""
    member: MemberAccess | None = None
    tool = ToolAccess(
        "laser-1",
        training="laser",
        locked=True,
        in_use_by="ada",
        hours=WeeklyHours.parse("Sat 10:00-18:00", BERLIN),
        scarce=ALWAYS,
    )
    bob = MemberAccess("bob", "Bob", suspended=True)
    fixes = [
        lambda t, m: (t, bob),
        lambda t, m: (t, replace(m, suspended=False)),
        lambda t, m: (t, replace(m, trainings={"laser": None})),
        lambda t, m: (replace(t, locked=False), m),
        lambda t, m: (replace(t, hours=EVENINGS), m),
        lambda t, m: (replace(t, in_use_by=None), m),
    ]
    seen = [reason(tool, member)]
    for fix in fixes:
        tool, member = fix(tool, member)
        seen.append(reason(tool, member))
    assert seen == [
        "unknown_badge",
        "suspended",
        "not_trained",
        "locked_out",
        "outside_hours",
        "tool_in_use",
        "no_reservation",
    ]
    assert seen == list(DENY_ORDER)
    booked = [Reservation("bob", NOW - s(60), NOW + s(3600))]
    assert isinstance(decide(tool, member, NOW, reservations=booked).reply, Grant)


def test_an_expired_training_is_no_training():
    member = MemberAccess("ada", "Ada L.", trainings={"laser": NOW})
    assert reason(LASER, member) == "not_trained"
    assert isinstance(decide(LASER, member, NOW - s(1)).reply, Grant)


def test_a_tool_without_training_needs_none():
    drill = ToolAccess("drill", training=None)
    assert decide(drill, MemberAccess("bob", "Bob"), NOW).reply == Grant("bob", "Bob", None)


def test_keyholders_may_work_outside_hours():
    tool = replace(LASER, hours=WeeklyHours.parse("Sat 10:00-18:00", BERLIN))
    assert reason(tool, ADA) == "outside_hours"
    assert isinstance(decide(tool, replace(ADA, keyholder=True), NOW).reply, Grant)


def test_the_holder_tapping_again_at_a_tap_tool_ends_their_session():
    tool = replace(LASER, in_use_by="ada")
    assert decide(tool, ADA, NOW).reply == TapOut("ada", "Ada L.")
    # even suspended meanwhile, a member can always end their own session
    assert decide(tool, replace(ADA, suspended=True), NOW).reply == TapOut("ada", "Ada L.")
    assert reason(tool, MemberAccess("bob", "Bob", trainings={"laser": None})) == "tool_in_use"


def test_the_holder_badging_again_at_a_card_present_tool_is_granted_again():
    tool = replace(LASER, policy="card_present", in_use_by="ada")
    assert isinstance(decide(tool, ADA, NOW).reply, Grant)


def test_a_scarce_slot_needs_a_reservation_and_the_grant_ends_with_it():
    tool = replace(LASER, scarce=EVENINGS)
    assert reason(tool, ADA) == "no_reservation"
    others = [Reservation("bob", NOW - s(600), NOW + s(3000))]
    assert reason(tool, ADA, reservations=others) == "no_reservation"
    mine = [Reservation("ada", NOW - s(600), NOW + s(3000))]
    assert decide(tool, ADA, NOW, reservations=mine).reply == Grant("ada", "Ada L.", 3000)
    ended = [Reservation("ada", NOW - s(3600), NOW)]
    assert reason(tool, ADA, reservations=ended) == "no_reservation"
    morning = datetime(2026, 11, 26, 9, tzinfo=UTC)  # outside the scarce slots
    assert decide(tool, ADA, morning).reply == Grant("ada", "Ada L.", 14400)


# --- opening hours ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("utc", "open_"),
    [
        ("2026-11-26T15:59:00", False),  # Thu 16:59 CET
        ("2026-11-26T16:00:00", True),  # Thu 17:00 CET
        ("2026-11-26T20:59:00", True),
        ("2026-11-26T21:00:00", False),  # 22:00: closed
        ("2026-07-02T15:00:00", True),  # Thu 17:00 CEST: the hours are local, DST or not
        ("2026-07-02T14:59:00", False),
        ("2026-11-28T17:00:00", False),  # Saturday
    ],
)
def test_opening_hours_are_local_wall_time(utc, open_):
    assert EVENINGS.contains(datetime.fromisoformat(utc).replace(tzinfo=UTC)) is open_


def test_a_window_past_midnight_runs_into_the_next_day():
    late = WeeklyHours.parse("Fri 20:00-02:00; Sat 10:00-12:00", BERLIN)
    assert late.contains(datetime(2026, 11, 28, 0, 30, tzinfo=UTC))  # Sat 01:30
    assert not late.contains(datetime(2026, 11, 28, 1, 30, tzinfo=UTC))  # Sat 02:30
    assert not late.contains(datetime(2026, 11, 27, 0, 30, tzinfo=UTC))  # Fri 01:30
    assert late.contains(datetime(2026, 11, 28, 10, 0, tzinfo=UTC))  # Sat 11:00


def test_a_day_range_may_wrap_the_week():
    weekend = WeeklyHours.parse("Sat,Sun 10:00-18:00; Mon 10:00-12:00", BERLIN)
    assert weekend.contains(datetime(2026, 11, 29, 12, tzinfo=UTC))  # Sunday 13:00
    assert not weekend.contains(datetime(2026, 11, 30, 12, tzinfo=UTC))  # Monday 13:00
    wrap = WeeklyHours.parse("Sun-Mon 10:00-11:00", BERLIN)
    assert wrap.contains(datetime(2026, 11, 30, 9, 30, tzinfo=UTC))  # Monday 10:30
    assert not wrap.contains(datetime(2026, 12, 1, 9, 30, tzinfo=UTC))  # Tuesday


@pytest.mark.parametrize("text", ["", "Mon-Fri", "Mon-Fry 10:00-12:00", "Mon 25:00-26:00", "x"])
def test_bad_hours_are_refused(text):
    with pytest.raises(ValueError):
        WeeklyHours.parse(text, BERLIN)


# --- two-card induction --------------------------------------------------------------

TRAINER = MemberAccess("tom", "Tom T.", trainings={"laser": None}, trains=frozenset({"laser"}))
TRAINEE = MemberAccess("bea", "Bea B.")


def trainer_tap(tool=LASER, now=NOW) -> AccessOutcome:
    return decide(tool, TRAINER, now)


def test_the_trainers_tap_is_a_grant_that_opens_an_induction_window():
    out = trainer_tap()
    assert out.reply == Grant("tom", "Tom T.", 14400)
    assert out.pending == PendingInduction("laser-1", "tom", "laser", NOW)
    assert decide(LASER, ADA, NOW).pending is None  # not a trainer: no window


@pytest.mark.parametrize(("after", "inducted"), [(29, True), (30, True), (31, False), (-1, False)])
def test_a_trainee_within_30_seconds_is_inducted(after, inducted):
    pending = trainer_tap().pending
    in_use = replace(LASER, in_use_by="tom")  # the hub started the trainer's session
    out = decide(in_use, TRAINEE, NOW + s(after), pending=pending)
    if inducted:
        assert out.training == TrainingRecorded("bea", "tom", "laser", NOW + s(after))
        assert out.reply == Grant("bea", "Bea B.", 14400)
        assert out.handover_from == "tom"
        assert out.pending is None
    else:
        assert out.training is None
        assert out.reply == Deny("not_trained", "bea")


def test_an_induction_window_belongs_to_its_tool():
    pending = trainer_tap().pending
    lathe = ToolAccess("lathe", training="laser")
    out = decide(lathe, TRAINEE, NOW + s(5), pending=pending)
    assert out.training is None and out.reply == Deny("not_trained", "bea")


def test_a_card_present_induction_after_the_trainer_took_their_card_away():
    tool = replace(LASER, policy="card_present")
    pending = trainer_tap(tool).pending
    out = decide(tool, TRAINEE, NOW + s(10), pending=pending)
    assert out.training is not None and out.handover_from is None
    assert isinstance(out.reply, Grant)


def test_a_suspended_or_unknown_card_is_not_inducted_and_the_window_stays():
    pending = trainer_tap().pending
    out = decide(LASER, replace(TRAINEE, suspended=True), NOW + s(5), pending=pending)
    assert (out.reply, out.training, out.pending) == (Deny("suspended", "bea"), None, pending)
    out = decide(LASER, None, NOW + s(6), pending=out.pending)
    assert (out.reply, out.pending) == (Deny("unknown_badge"), pending)
    assert decide(LASER, TRAINEE, NOW + s(7), pending=out.pending).training is not None


def test_an_already_trained_member_gets_an_ordinary_decision():
    pending = trainer_tap().pending
    out = decide(replace(LASER, in_use_by="tom"), ADA, NOW + s(5), pending=pending)
    assert (out.reply, out.training) == (Deny("tool_in_use", "ada"), None)


def test_an_expired_training_is_renewed_by_induction():
    lapsed = replace(TRAINEE, trainings={"laser": NOW - s(86400)})
    out = decide(LASER, lapsed, NOW + s(3), pending=trainer_tap().pending)
    assert out.training == TrainingRecorded("bea", "tom", "laser", NOW + s(3))


def test_the_trainer_tapping_again_closes_the_window():
    pending = trainer_tap().pending
    out = decide(replace(LASER, in_use_by="tom"), TRAINER, NOW + s(5), pending=pending)
    assert out.reply == TapOut("tom", "Tom T.")
    assert out.pending is None


def test_a_denied_trainer_opens_no_window():
    out = trainer_tap(replace(LASER, locked=True))
    assert (out.reply, out.pending) == (Deny("locked_out", "tom"), None)


def test_the_trainee_still_meets_the_tools_other_rules():
    tool = replace(LASER, hours=WeeklyHours.parse("Sat 10:00-18:00", BERLIN))
    pending = PendingInduction("laser-1", "tom", "laser", NOW)
    out = decide(tool, TRAINEE, NOW + s(5), pending=pending)
    assert out.training is not None
    assert out.reply == Deny("outside_hours", "bea")


def test_the_trainers_reservation_covers_the_trainee_in_a_scarce_slot():
    tool = replace(LASER, scarce=EVENINGS, in_use_by="tom")
    booked = [Reservation("tom", NOW - s(60), NOW + s(1800))]
    pending = PendingInduction("laser-1", "tom", "laser", NOW)
    out = decide(tool, TRAINEE, NOW + s(5), reservations=booked, pending=pending)
    assert out.reply == Grant("bea", "Bea B.", 1795)


# --- replay and replies ----------------------------------------------------------------


def test_a_replayed_badge_is_never_answered_and_never_inducts():
    out = decide(LASER, ADA, NOW, replay=True)
    assert out.reply == NoReply("replay", Grant("ada", "Ada L.", 14400))
    assert reply_payload(7, out.reply) is None
    pending = trainer_tap().pending
    out = decide(LASER, TRAINEE, NOW + s(5), pending=pending, replay=True)
    assert out.training is None and isinstance(out.reply, NoReply)
    assert out.pending == pending


def test_reply_payloads_are_the_contract_commands():
    assert json.loads(reply_payload(42, Grant("ada", "Ada L.", 14400))) == {
        "re": 42,
        "action": "grant",
        "member": "Ada L.",
        "max_s": 14400,
    }
    assert json.loads(reply_payload(43, Deny("not_trained", "bob"))) == {
        "re": 43,
        "action": "deny",
        "reason": "not_trained",
    }
    assert json.loads(reply_payload(44, TapOut("ada", "Ada L."))) == {"re": 44, "action": "release"}
    assert json.loads(reply_payload(45, Grant("zoë", "Zoë Ø.", None))) == {
        "re": 45,
        "action": "grant",
        "member": "Zoë Ø.",
    }
