"""Presence rebuilt from its stored changes, and who met whom.

* A restarted hub resumes who is in, and each member's last badge toggle, from the
  presence changes it stored (:func:`state_from_changes`): a member signed in before the
  restart is still in, and a reader repeating a tap across the restart is still a repeat.
* A big claim's confirmer must have been in the space with the claimant some time between
  the claim and the done (:func:`stays`, :func:`met`).
"""

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from hub.rules.presence import (
    Presence,
    SignedIn,
    SignedOut,
    auto_close_time,
    met,
    state_from_changes,
    stays,
)

BERLIN = ZoneInfo("Europe/Berlin")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def t(hour: float) -> datetime:
    return utc("2026-11-26T00:00") + timedelta(hours=hour)


# --- resuming after a restart --------------------------------------------------------


def resumed(changes, **kw) -> Presence:
    present, last_toggle = state_from_changes(changes)
    return Presence(BERLIN, present=present, last_toggle=last_toggle, **kw)


def test_who_is_in_comes_back_after_a_restart():
    changes = [
        ("ada", t(17), "in", "badge"),
        ("bob", t(17.5), "in", "badge"),
        ("ada", t(18), "out", "badge"),
        ("cy", t(18.5), "in", "badge"),
        ("ada", t(19), "in", "badge"),
    ]
    present, last_toggle = state_from_changes(changes)
    assert present == {"ada": t(19), "bob": t(17.5), "cy": t(18.5)}
    assert last_toggle == {"ada": t(19), "bob": t(17.5), "cy": t(18.5)}
    p = resumed(changes)
    assert p.badge("bob", t(20)) == [SignedOut("bob", t(17.5), t(20), "badge")]
    assert p.badge("dan", t(20)) == [SignedIn("dan", t(20))]


def test_a_reader_repeating_a_tap_across_the_restart_is_still_a_repeat():
    p = resumed([("ada", t(17), "in", "badge")])
    assert p.badge("ada", t(17) + timedelta(seconds=3)) == []
    assert "ada" in p.present
    assert p.badge("ada", t(17) + timedelta(seconds=5))[0] == SignedOut(
        "ada", t(17), t(17) + timedelta(seconds=5), "badge"
    )


def test_an_automatic_sign_out_is_not_a_badge_toggle():
    changes = [
        ("ada", t(17), "in", "badge"),
        ("ada", t(27), "out", "auto"),  # 04:00 the next morning in Berlin
    ]
    present, last_toggle = state_from_changes(changes)
    assert present == {}
    assert last_toggle == {"ada": t(17)}
    # a coordinator's sign-in (not a badge) neither: the member's next tap is no repeat
    present, last_toggle = state_from_changes([("bob", t(9), "in", "coordinator")])
    assert (present, last_toggle) == ({"bob": t(9)}, {})
    p = resumed([("bob", t(9), "in", "coordinator")])
    assert p.badge("bob", t(9) + timedelta(seconds=1)) == [
        SignedOut("bob", t(9), t(9) + timedelta(seconds=1), "badge")
    ]


def test_an_out_without_an_in_and_no_changes_leave_nobody_in():
    assert state_from_changes([]) == ({}, {})
    assert state_from_changes([("ada", t(3), "out", "auto")]) == ({}, {})


def test_the_last_in_wins_when_the_store_holds_two():
    changes = [("ada", t(17), "in", "badge"), ("ada", t(18), "in", "coordinator")]
    assert state_from_changes(changes) == ({"ada": t(18)}, {"ada": t(17)})


# --- stays and meetings --------------------------------------------------------------


def test_stays_pair_each_in_with_the_next_out():
    changes = [(t(9), "in"), (t(10), "out"), (t(11), "in"), (t(12), "out"), (t(13), "in")]
    assert stays(changes) == [(t(9), t(10)), (t(11), t(12)), (t(13), None)]


def test_stays_ignore_an_out_without_an_in_and_a_second_in():
    assert stays([(t(8), "out"), (t(9), "in"), (t(9.5), "in"), (t(10), "out")]) == [(t(9), t(10))]
    assert stays([]) == []
    assert stays([(t(8), "out")]) == []


@pytest.mark.parametrize(
    ("ada", "bob", "start", "end", "together"),
    [
        ([(t(10), t(12))], [(t(11), None)], t(9), t(20), True),
        ([(t(10), t(12))], [(t(11), None)], t(9), t(9), False),  # neither was in yet
        ([(t(10), t(12))], [(t(11), None)], t(12), t(20), False),  # Ada left at 12
        ([(t(10), t(12))], [(t(12), t(14))], t(9), t(20), False),  # one left as one came
        ([(t(10), t(12))], [(t(11.99), t(14))], t(9), t(20), True),
        ([(t(10), None)], [(t(11), None)], t(15), t(15), True),  # both still in
        ([(t(10), t(11))], [(t(10), t(11))], t(11), t(12), False),
        ([(t(10), t(11))], [(t(10), t(11))], t(10.5), t(10.5), True),
        ([(t(10), t(11))], [(t(10), t(11))], t(8), t(10), True),  # at the very end
        ([(t(10), t(11))], [(t(10), t(11))], t(8), t(9.99), False),
        ([(t(9), t(10)), (t(14), t(15))], [(t(12), t(13)), (t(14.5), None)], t(8), t(20), True),
        ([(t(9), t(10)), (t(14), t(15))], [(t(12), t(13)), (t(14.5), None)], t(8), t(14), False),
        ([], [(t(10), None)], t(0), t(20), False),
    ],
)
def test_two_members_met_when_both_were_in_at_one_instant_of_the_window(
    ada, bob, start, end, together
):
    assert met(ada, bob, start, end) is together
    assert met(bob, ada, start, end) is together
    assert met(iter(ada), iter(bob), start, end) is together  # any iterables, read once


# --- cut-offs and repeats at their exact instants ------------------------------------


def test_a_forgotten_sign_in_closes_at_the_cutoff_instant_not_a_moment_later():
    p = Presence(BERLIN, auto_close_at=time(4))
    p.badge("ada", utc("2026-11-26T17:00"))
    cutoff = utc("2026-11-27T03:00")  # 04:00 in Berlin, 03:00 UTC
    assert p.auto_close(cutoff - timedelta(microseconds=1)) == []
    assert p.auto_close(cutoff) == [SignedOut("ada", utc("2026-11-26T17:00"), cutoff, "auto")]


def test_a_badge_at_the_cutoff_instant_signs_in_anew():
    p = Presence(BERLIN, auto_close_at=time(4))
    p.badge("ada", utc("2026-11-26T17:00"))
    cutoff = utc("2026-11-27T03:00")
    assert p.badge("ada", cutoff) == [
        SignedOut("ada", utc("2026-11-26T17:00"), cutoff, "auto"),
        SignedIn("ada", cutoff),
    ]


def test_the_same_tap_delivered_twice_at_one_instant_is_one_tap():
    p = Presence(BERLIN)
    assert p.badge("ada", t(17)) == [SignedIn("ada", t(17))]
    assert p.badge("ada", t(17)) == []


def test_a_cutoff_that_does_not_exist_is_the_instant_the_clock_jumps():
    # 29 Mar 2026: Berlin's clocks jump from 02:00 CET to 03:00 CEST at 01:00 UTC sharp
    for close_at in (time(2, 0), time(2, 30), time(2, 59, 59)):
        got = auto_close_time(utc("2026-03-28T19:00"), close_at, BERLIN)
        assert got == utc("2026-03-29T01:00")
        assert got.microsecond == 0
    # in New York the jump is at 07:00 UTC on 8 Mar 2026
    ny = ZoneInfo("America/New_York")
    assert auto_close_time(utc("2026-03-08T01:00"), time(2, 15), ny) == utc("2026-03-08T07:00")
