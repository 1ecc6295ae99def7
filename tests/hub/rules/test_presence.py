from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from hub.rules.presence import Presence, SignedIn, SignedOut, auto_close_time

BERLIN = ZoneInfo("Europe/Berlin")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_a_badge_toggles_the_member_in_and_out():
    p = Presence(BERLIN)
    assert p.badge("ada", utc("2026-11-26T17:00")) == [SignedIn("ada", utc("2026-11-26T17:00"))]
    assert "ada" in p.present
    out = p.badge("ada", utc("2026-11-26T20:00"))
    assert out == [SignedOut("ada", utc("2026-11-26T17:00"), utc("2026-11-26T20:00"), "badge")]
    assert p.present == {}


def test_a_reader_repeating_the_same_tap_is_ignored():
    p = Presence(BERLIN)
    p.badge("ada", utc("2026-11-26T17:00:00"))
    assert p.badge("ada", utc("2026-11-26T17:00:04")) == []
    assert "ada" in p.present
    assert p.badge("ada", utc("2026-11-26T17:00:05"))[0].reason == "badge"


def test_members_toggle_independently():
    p = Presence(BERLIN)
    p.badge("ada", utc("2026-11-26T17:00"))
    p.badge("bob", utc("2026-11-26T17:00:01"))
    p.badge("ada", utc("2026-11-26T18:00"))
    assert list(p.present) == ["bob"]


def test_a_forgotten_sign_out_closes_at_the_local_hour():
    p = Presence(BERLIN, auto_close_at=time(4))
    p.badge("ada", utc("2026-11-26T17:00"))
    assert p.auto_close(utc("2026-11-27T02:59")) == []  # 03:59 in Berlin
    out = p.auto_close(utc("2026-11-27T09:00"))  # the job ran late: the cutoff still counts
    assert out == [SignedOut("ada", utc("2026-11-26T17:00"), utc("2026-11-27T03:00"), "auto")]
    assert p.present == {}


def test_badging_the_next_day_after_forgetting_signs_in_not_out():
    p = Presence(BERLIN)
    p.badge("ada", utc("2026-11-26T17:00"))
    records = p.badge("ada", utc("2026-11-27T17:00"))
    assert records == [
        SignedOut("ada", utc("2026-11-26T17:00"), utc("2026-11-27T03:00"), "auto"),
        SignedIn("ada", utc("2026-11-27T17:00")),
    ]


def test_signing_in_exactly_at_the_hour_closes_the_next_day():
    assert auto_close_time(utc("2026-11-27T03:00"), time(4), BERLIN) == utc("2026-11-28T03:00")


@pytest.mark.parametrize(
    ("since", "close_at", "expected"),
    [
        # autumn: 25 Oct 2026 03:00 CEST -> 02:00 CET; 04:00 CET is 03:00 UTC
        ("2026-10-24T18:00", time(4), "2026-10-25T03:00"),
        # spring: 29 Mar 2026 02:00 CET -> 03:00 CEST; 04:00 CEST is 02:00 UTC
        ("2026-03-28T19:00", time(4), "2026-03-29T02:00"),
        # 02:30 does not exist that night: close when the clock jumps to 03:00 CEST
        ("2026-03-28T19:00", time(2, 30), "2026-03-29T01:00"),
        # 02:30 happens twice: the first pass (CEST) after an evening sign-in
        ("2026-10-24T18:00", time(2, 30), "2026-10-25T00:30"),
        # signed in between the two passes: the second pass (CET)
        ("2026-10-25T00:45", time(2, 30), "2026-10-25T01:30"),
    ],
)
def test_auto_close_is_dst_safe(since, close_at, expected):
    p = Presence(BERLIN, auto_close_at=close_at)
    p.badge("ada", utc(since))
    assert p.auto_close(utc(expected) - timedelta(seconds=1)) == []
    (out,) = p.auto_close(utc(since) + timedelta(days=2))
    assert out.at == utc(expected)


def test_an_out_never_lies_before_the_in():
    p = Presence(BERLIN)
    p.badge("ada", utc("2026-11-26T17:00"))
    (out,) = p.badge("ada", utc("2026-11-26T16:00"))  # the hub's clock stepped back
    assert out.at == out.since == utc("2026-11-26T17:00")


def test_presence_survives_a_restart_from_stored_sign_ins():
    p = Presence(BERLIN, present={"ada": utc("2026-11-26T17:00")}, repeat=timedelta(0))
    assert p.badge("ada", utc("2026-11-26T18:00"))[0].reason == "badge"
