"""Opening hours as a member meets them at the reader: the minute a window opens and
closes, the days it names, and windows that run past midnight.

Times are written in the shop's local time (Berlin), as the shop file writes hours.
"""

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from hub.rules.access import (
    Deny,
    Grant,
    MemberAccess,
    NoReply,
    Reservation,
    ToolAccess,
    WeeklyHours,
    decide,
    reply_payload,
)

BERLIN = ZoneInfo("Europe/Berlin")
ADA = MemberAccess("ada", "Ada L.", trainings={"laser": None})
COORDINATOR = MemberAccess("kim", "Kim K.", trainings={"laser": None}, keyholder=True)


def local(text: str) -> datetime:
    """``"Fri 2026-12-04 17:29"`` as an aware Berlin time (the weekday is for the reader)."""
    day, rest = text.split(" ", 1)
    at = datetime.fromisoformat(rest).replace(tzinfo=BERLIN)
    assert at.strftime("%a") == day, f"{text}: that date is a {at:%a}"
    return at


def badge(hours: str, at: str, member: MemberAccess = ADA) -> str:
    """What the reader shows when ``member`` badges at a laser with ``hours`` at ``at``."""
    laser = ToolAccess(
        "laser-1", training="laser", max_s=3600, hours=WeeklyHours.parse(hours, BERLIN)
    )
    reply = decide(laser, member, local(at)).reply
    if isinstance(reply, Grant):
        return "granted"
    assert isinstance(reply, Deny)
    return reply.reason


@pytest.mark.parametrize(
    ("at", "shown"),
    [
        ("Mon 2026-12-07 08:59", "outside_hours"),
        ("Mon 2026-12-07 09:00", "granted"),
        ("Wed 2026-12-09 12:00", "granted"),
        ("Fri 2026-12-04 16:30", "granted"),  # the half hour is not dropped
        ("Fri 2026-12-04 17:29", "granted"),
        ("Fri 2026-12-04 17:30", "outside_hours"),
        ("Fri 2026-12-04 17:31", "outside_hours"),
        ("Sat 2026-12-05 10:00", "outside_hours"),  # Mon-Fri ends on Friday
        ("Sun 2026-12-06 10:00", "outside_hours"),
        ("Thu 2026-12-10 17:29", "granted"),
    ],
)
def test_weekday_hours_open_at_nine_and_close_at_half_past_five(at, shown):
    assert badge("Mon-Fri 09:00-17:30", at) == shown


@pytest.mark.parametrize(
    ("at", "shown"),
    [
        ("Fri 2026-12-04 19:59", "outside_hours"),
        ("Fri 2026-12-04 20:00", "granted"),
        ("Fri 2026-12-04 23:59", "granted"),
        ("Sat 2026-12-05 00:00", "granted"),
        ("Sat 2026-12-05 01:59", "granted"),
        ("Sat 2026-12-05 02:00", "outside_hours"),
        ("Sat 2026-12-05 20:00", "outside_hours"),  # only Friday's night opens
        ("Fri 2026-12-04 01:00", "outside_hours"),  # Thursday had no night
        ("Sun 2026-12-06 01:00", "outside_hours"),
    ],
)
def test_a_friday_night_window_runs_until_two_on_saturday(at, shown):
    assert badge("Fri 20:00-02:00", at) == shown


@pytest.mark.parametrize(
    ("at", "shown"),
    [
        ("Sun 2026-12-06 23:00", "granted"),
        ("Mon 2026-12-07 00:30", "granted"),  # Sunday's night runs into Monday: the week wraps
        ("Mon 2026-12-07 01:00", "outside_hours"),
        ("Sat 2026-12-05 23:00", "granted"),
        ("Sun 2026-12-06 00:59", "granted"),
        ("Fri 2026-12-04 23:00", "outside_hours"),
    ],
)
def test_a_weekend_night_window_wraps_the_week(at, shown):
    assert badge("Sat-Sun 22:00-01:00", at) == shown


@pytest.mark.parametrize(
    ("hours", "at", "shown"),
    [
        ("Mon 00:00-24:00", "Mon 2026-12-07 23:59", "granted"),
        ("Mon 00:00-24:00", "Tue 2026-12-08 00:00", "outside_hours"),
        ("Mon-Fri 09:00-17:30; Sat 10:00-14:00", "Sat 2026-12-05 13:59", "granted"),
        ("Mon-Fri 09:00-17:30; Sat 10:00-14:00", "Sat 2026-12-05 14:00", "outside_hours"),
        ("Mon-Fri 09:00-17:30; Sat 10:00-14:00", "Sun 2026-12-06 12:00", "outside_hours"),
        ("Tue, Thu 18:00-21:00", "Thu 2026-12-10 18:00", "granted"),
        ("Tue, Thu 18:00-21:00", "Wed 2026-12-09 18:00", "outside_hours"),
        ("Fri-Mon 10:00-11:00", "Sun 2026-12-06 10:30", "granted"),
        ("Fri-Mon 10:00-11:00", "Mon 2026-12-07 10:30", "granted"),
        ("Fri-Mon 10:00-11:00", "Tue 2026-12-08 10:30", "outside_hours"),
        ("Fri-Mon 10:00-11:00", "Thu 2026-12-10 10:30", "outside_hours"),
        ("mon-FRI 9:05-9:45", "Tue 2026-12-08 09:05", "granted"),
        ("mon-FRI 9:05-9:45", "Tue 2026-12-08 09:04", "outside_hours"),
        ("mon-FRI 9:05-9:45", "Tue 2026-12-08 09:45", "outside_hours"),
    ],
)
def test_more_ways_of_writing_hours(hours, at, shown):
    assert badge(hours, at) == shown


def test_a_coordinator_may_badge_in_at_night_and_a_member_may_not():
    assert badge("Mon-Fri 09:00-17:30", "Sat 2026-12-05 10:00", COORDINATOR) == "granted"
    assert badge("Mon-Fri 09:00-17:30", "Sat 2026-12-05 10:00") == "outside_hours"


def test_a_tool_without_hours_is_always_open():
    laser = ToolAccess("laser-1", training="laser", max_s=3600)
    assert decide(laser, ADA, local("Sun 2026-12-06 03:00")).reply == Grant("ada", "Ada L.", 3600)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("Mon-Fri 09:00-17:60", "'17:60' is not a time of day"),
        ("Mon-Fri 24:30-25:00", "'24:30' is not a time of day"),
        ("Mon-Fri 09:00-24:01", "'24:01' is not a time of day"),
        ("Mon-Fry 09:00-17:30", "'Mon-Fry' is not a day or a range of days (Mon-Sun)"),
        ("Mox 09:00-17:30", "'Mox' is not a day or a range of days (Mon-Sun)"),
        ("weekdays 9-5", "'weekdays 9-5' is not like 'Mon-Fri 17:00-22:00'"),
        (" ; ", "no opening windows given"),
    ],
)
def test_hours_a_shop_file_gets_wrong_are_refused_with_what_is_wrong(text, says):
    with pytest.raises(ValueError) as caught:
        WeeklyHours.parse(text, BERLIN)
    assert str(caught.value) == says


@pytest.mark.parametrize(
    ("hours", "at", "shown"),
    [
        ("Mon 10:00-10:00", "Mon 2026-12-07 09:59", "outside_hours"),
        ("Mon 10:00-10:00", "Mon 2026-12-07 10:00", "granted"),  # a full day from 10:00
        ("Mon 10:00-10:00", "Tue 2026-12-08 09:59", "granted"),
        ("Mon 10:00-10:00", "Tue 2026-12-08 10:00", "outside_hours"),
        ("; Mon 10:00-12:00", "Mon 2026-12-07 11:00", "granted"),  # an empty part is skipped
        ("Mon 10:00-12:00;; Tue 10:00-12:00", "Tue 2026-12-08 11:00", "granted"),
        ("Mon 09:00-17:59", "Mon 2026-12-07 17:58", "granted"),
    ],
)
def test_a_window_may_last_a_whole_day_and_empty_parts_are_skipped(hours, at, shown):
    assert badge(hours, at) == shown


@pytest.mark.parametrize("text", ["Mon 25:00-26:00", "Mon 09:00-25:00", "Mon 09:60-10:00"])
def test_times_past_the_end_of_the_day_are_refused(text):
    with pytest.raises(ValueError, match="is not a time of day"):
        WeeklyHours.parse(text, BERLIN)


# --- reservations and the grant's length ---------------------------------------------

SLOTS = WeeklyHours.parse("Mon-Sun 18:00-22:00", BERLIN)


def test_a_grant_in_a_reserved_slot_is_cut_to_the_shorter_of_tool_limit_and_reservation():
    laser = ToolAccess("laser-1", training="laser", max_s=3600, scarce=SLOTS)
    at = local("Mon 2026-12-07 18:00")
    long_booking = [Reservation("ada", at, at + timedelta(hours=3))]
    assert decide(laser, ADA, at, reservations=long_booking).reply == Grant("ada", "Ada L.", 3600)
    short_booking = [Reservation("ada", at, at + timedelta(minutes=20))]
    assert decide(laser, ADA, at, reservations=short_booking).reply == Grant("ada", "Ada L.", 1200)


def test_a_reservation_covers_its_first_instant_and_not_its_last():
    laser = ToolAccess("laser-1", training="laser", max_s=3600, scarce=SLOTS)
    at = local("Mon 2026-12-07 19:00")
    booking = [Reservation("ada", at, at + timedelta(hours=1))]
    assert isinstance(decide(laser, ADA, at, reservations=booking).reply, Grant)
    end = at + timedelta(hours=1)
    assert decide(laser, ADA, end, reservations=booking).reply == Deny("no_reservation", "ada")


def test_a_replayed_badge_records_the_decision_with_its_reservation():
    laser = ToolAccess("laser-1", training="laser", max_s=3600, scarce=SLOTS)
    at = local("Mon 2026-12-07 18:00")
    booking = [Reservation("ada", at, at + timedelta(minutes=20))]
    out = decide(laser, ADA, at, reservations=booking, replay=True)
    assert out.reply == NoReply("replay", Grant("ada", "Ada L.", 1200))
    late = decide(laser, ADA, local("Mon 2026-12-07 23:00"), replay=True)
    assert late.reply == NoReply("replay", Grant("ada", "Ada L.", 3600))


def test_a_trainee_badging_the_instant_the_trainer_did_is_inducted():
    trainer = MemberAccess("tom", "Tom T.", trainings={"laser": None}, trains=frozenset({"laser"}))
    laser = ToolAccess("laser-1", training="laser", max_s=3600)
    at = local("Mon 2026-12-07 18:00")
    pending = decide(laser, trainer, at).pending
    out = decide(laser, MemberAccess("bea", "Bea B."), at, pending=pending)
    assert out.training is not None and out.training.trainee == "bea"


def test_the_reply_is_compact_utf8_json_as_a_device_reads_it():
    assert reply_payload(7, Grant("zoe", "Zoë Ø", 60)) == (
        '{"re":7,"action":"grant","member":"Zoë Ø","max_s":60}'.encode()
    )
