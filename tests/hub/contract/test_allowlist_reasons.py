"""What a device (and its builder) is told when an allow-list is refused, and the edges
of building one: each refusal's reason in words, the first version, versions from the
clock, and key files that hold no key."""

import base64
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from nacl.signing import SigningKey

from hub.contract.allowlist import (
    build_allowlist,
    load_or_create_key,
    load_public_key,
    next_version,
    uid_allowed,
    verify_allowlist,
)

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
WEEK = timedelta(days=7)
KEY = SigningKey(bytes(range(32)))


def signed(**kw) -> dict:
    args = dict(tool="laser-1", version=12, uids=["DEADBEEF"], issued=NOW, expires=NOW + WEEK)
    args.update(kw)
    return build_allowlist(key=KEY, **args)


def check(obj, **kw):
    return verify_allowlist(obj, KEY.verify_key, NOW, **kw)


FIELDS = (
    "an allow-list has exactly the fields ['expires', 'issued', 'sig', 'tool', 'uids', 'version']"
)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda o: dict(o, extra=1), FIELDS),
        (lambda o: dict(o, version="12"), "version must be an integer"),
        (lambda o: dict(o, version=True), "version must be an integer"),
        (lambda o: dict(o, uids="DEADBEEF"), "uids must be a list of sha256 hex digests"),
        (lambda o: dict(o, uids=["DEADBEEF"]), "uids must be a list of sha256 hex digests"),
        (lambda o: dict(o, uids=[7]), "uids must be a list of sha256 hex digests"),
        (lambda o: dict(o, tool=7), "tool and sig must be strings"),
        (lambda o: dict(o, sig=7), "tool and sig must be strings"),
    ],
)
def test_a_malformed_list_says_what_is_wrong(change, reason):
    result = check(change(signed()))
    assert (result.status, result.reason, result.ok) == ("malformed", reason, False)


def test_a_list_that_is_no_json_object_is_malformed_with_a_reason():
    result = check(b"[1,2]")
    assert (result.status, result.reason) == ("malformed", FIELDS)
    assert check(b"{").reason.startswith("Expecting property name")


def test_each_refusal_says_why():
    forged = dict(signed(), version=13)
    assert (check(forged).status, check(forged).reason) == (
        "forged",
        "the signature does not match the hub's key",
    )
    assert check(signed(), tool="lathe").reason == "the list is for 'laser-1', not 'lathe'"
    assert check(signed(), newer_than=12).reason == "version 12 is not newer than 12"
    late = verify_allowlist(signed(), KEY.verify_key, NOW + WEEK)
    assert (late.status, late.reason) == ("expired", "the list expired at 2026-12-03T10:00:00Z")
    assert check(signed()).reason == ""


def test_the_first_version_may_be_zero():
    assert signed(version=0)["version"] == 0
    assert check(signed(version=0)).ok


@pytest.mark.parametrize(
    ("kw", "says"),
    [
        ({"tool": "Laser 1"}, "tool id 'Laser 1' does not match [a-z0-9][a-z0-9-]{0,62}"),
        ({"version": -1}, "version must be an integer >= 0, got -1"),
        ({"version": True}, "version must be an integer >= 0, got True"),
        ({"version": 1.5}, "version must be an integer >= 0, got 1.5"),
        ({"expires": NOW}, "an allow-list must expire after it is issued"),
        (
            {"issued": datetime(2026, 11, 26), "expires": datetime(2026, 12, 3)},
            "allow-list times must be timezone aware",
        ),
    ],
)
def test_building_a_bad_list_is_refused_with_what_is_wrong(kw, says):
    with pytest.raises(ValueError) as caught:
        signed(**kw)
    assert str(caught.value) == says


def test_times_in_the_list_are_utc_to_the_second():
    assert signed(issued=NOW + timedelta(microseconds=750000))["issued"] == "2026-11-26T10:00:00Z"
    local = datetime(2026, 11, 26, 12, 30, tzinfo=ZoneInfo("Europe/Berlin"))
    assert signed(issued=local)["issued"] == "2026-11-26T11:30:00Z"


def test_versions_come_from_the_clock_and_always_grow():
    assert next_version(None, NOW) == 1795687200000
    assert next_version(12, NOW) == 1795687200000
    assert next_version(1795687200000, NOW) == 1795687200001  # two lists in one millisecond
    assert next_version(1795687300000, NOW) == 1795687300001  # the clock was set back
    assert next_version(None, NOW + timedelta(milliseconds=1)) == 1795687200001


PUBLIC_KEY = r"^a public key is 32 bytes in base64$"


def test_a_public_key_that_is_not_base64_is_refused():
    with pytest.raises(ValueError, match=PUBLIC_KEY):
        load_public_key("not base64 at all!" + "A" * 30)
    with pytest.raises(ValueError, match=PUBLIC_KEY):
        load_public_key(base64.b64encode(bytes(31)))
    with pytest.raises(ValueError, match=PUBLIC_KEY):
        load_public_key("é" * 44)
    with pytest.raises(ValueError, match=PUBLIC_KEY):
        # 32 bytes of base64 with a stray character: refused, not decoded around it
        load_public_key("!" + base64.b64encode(bytes(32)).decode())
    assert bytes(load_public_key(KEY.verify_key)) == bytes(KEY.verify_key)


def test_a_key_file_with_a_stray_character_is_refused(tmp_path):
    path = tmp_path / "hub.key"
    path.write_text("!" + base64.b64encode(bytes(32)).decode() + "\n")
    path.chmod(0o600)
    with pytest.raises(ValueError, match=r"does not hold an Ed25519 key \(32 bytes in base64\)"):
        load_or_create_key(path)
    path.write_bytes(b"\xff" * 44)
    with pytest.raises(ValueError, match="does not hold an Ed25519 key"):
        load_or_create_key(path)


def test_a_list_without_uids_allows_no_badge():
    assert uid_allowed({}, "DEADBEEF") is False
    assert uid_allowed(signed(), "deadbeef") is True
