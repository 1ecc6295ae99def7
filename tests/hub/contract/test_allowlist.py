import base64
import hashlib
import json
import os
import stat
from datetime import UTC, datetime, timedelta

import pytest
from nacl.signing import SigningKey

from hub.contract.allowlist import (
    allowlist_payload,
    build_allowlist,
    canonical_json,
    load_or_create_key,
    load_public_key,
    public_key_b64,
    uid_allowed,
    uid_hash,
    verify_allowlist,
)

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
WEEK = timedelta(days=7)


@pytest.fixture
def key(tmp_path) -> SigningKey:
    return load_or_create_key(tmp_path / "hub.key")


@pytest.fixture
def signed(key) -> dict:
    return build_allowlist("laser-1", 12, ["04a1b2c3d4e5f6", "DEADBEEF"], NOW, NOW + WEEK, key)


def test_the_key_file_is_private_and_the_same_key_comes_back(tmp_path):
    path = tmp_path / "hub.key"
    old = os.umask(0o000)  # even a careless umask gives a private file
    try:
        first = load_or_create_key(path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert bytes(load_or_create_key(path)) == bytes(first)


def test_a_key_file_others_can_read_is_refused(tmp_path):
    path = tmp_path / "hub.key"
    load_or_create_key(path)
    path.chmod(0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        load_or_create_key(path)


def test_a_file_that_is_no_key_is_refused(tmp_path):
    path = tmp_path / "hub.key"
    path.write_text("not a key\n")
    path.chmod(0o600)
    with pytest.raises(ValueError, match="Ed25519"):
        load_or_create_key(path)


def test_the_list_has_the_contract_shape(signed):
    assert set(signed) == {"version", "tool", "issued", "expires", "uids", "sig"}
    assert signed["issued"] == "2026-11-26T10:00:00Z"
    assert signed["expires"] == "2026-12-03T10:00:00Z"
    expected = hashlib.sha256(b"04A1B2C3D4E5F6").hexdigest()
    assert expected in signed["uids"] and signed["uids"] == sorted(signed["uids"])
    assert len(base64.b64decode(signed["sig"])) == 64


def test_sig_signs_the_canonical_json_without_sig(signed, key):
    body = {k: v for k, v in signed.items() if k != "sig"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    assert canonical_json(signed) == text.encode()
    assert " " not in text
    key.verify_key.verify(text.encode(), base64.b64decode(signed["sig"]))


def test_a_valid_list_verifies_from_the_wire(signed, key):
    payload = allowlist_payload(signed)
    check = verify_allowlist(payload, public_key_b64(key), NOW + timedelta(days=1))
    assert check.ok and check.status == "valid"
    # key order on the wire does not matter: the verifier re-canonicalises
    reordered = json.dumps(dict(reversed(list(signed.items()))))
    assert verify_allowlist(reordered, key.verify_key, NOW).ok


def test_one_byte_changed_is_forged(signed, key):
    payload = bytearray(allowlist_payload(signed))
    i = payload.index(b'"version":12') + len(b'"version":1')
    payload[i : i + 1] = b"3"  # version 12 -> 13
    assert verify_allowlist(bytes(payload), public_key_b64(key), NOW).status == "forged"
    tampered = dict(signed, uids=[*signed["uids"], uid_hash("CAFEBABE")])
    assert verify_allowlist(tampered, public_key_b64(key), NOW).status == "forged"


def test_a_list_from_another_key_is_forged(signed):
    other = public_key_b64(SigningKey.generate())
    assert verify_allowlist(signed, other, NOW).status == "forged"


def test_an_expired_list_is_refused_and_a_forged_one_stays_forged(signed, key):
    assert verify_allowlist(signed, key.verify_key, NOW + WEEK - timedelta(seconds=1)).ok
    assert verify_allowlist(signed, key.verify_key, NOW + WEEK).status == "expired"
    forged = dict(signed, expires="2027-01-01T00:00:00Z")
    assert verify_allowlist(forged, key.verify_key, NOW + WEEK).status == "forged"


def test_a_list_for_another_tool_or_an_older_version_is_refused(signed, key):
    assert verify_allowlist(signed, key.verify_key, NOW, tool="lathe").status == "wrong_tool"
    assert verify_allowlist(signed, key.verify_key, NOW, tool="laser-1").ok
    assert verify_allowlist(signed, key.verify_key, NOW, newer_than=12).status == "stale"
    assert verify_allowlist(signed, key.verify_key, NOW, newer_than=11).ok


@pytest.mark.parametrize(
    "change",
    [
        lambda o: {k: v for k, v in o.items() if k != "sig"},
        lambda o: dict(o, uids=["04A1B2C3"]),
        lambda o: dict(o, version="12"),
        lambda o: dict(o, expires="soon"),
        lambda o: dict(o, sig="***"),
        lambda o: dict(o, extra=1),
    ],
)
def test_malformed_lists_are_refused(signed, key, change):
    assert verify_allowlist(change(signed), key.verify_key, NOW).status == "malformed"


def test_garbage_on_the_wire_is_malformed(key):
    assert verify_allowlist(b"\xff\x00", key.verify_key, NOW).status == "malformed"
    assert verify_allowlist(b"[1,2]", key.verify_key, NOW).status == "malformed"


def test_uid_lookup_is_case_insensitive_and_safe(signed):
    assert uid_allowed(signed, "04A1B2C3D4E5F6")
    assert uid_allowed(signed, "deadbeef")
    assert not uid_allowed(signed, "CAFEBABE")
    assert not uid_allowed(signed, "not hex")


def test_public_keys_round_trip_and_bad_ones_are_refused(key):
    assert bytes(load_public_key(public_key_b64(key))) == bytes(key.verify_key)
    with pytest.raises(ValueError):
        load_public_key("c2hvcnQ=")


def test_bad_inputs_to_build_are_refused(key):
    with pytest.raises(ValueError):
        build_allowlist("Laser 1", 1, [], NOW, NOW + WEEK, key)
    with pytest.raises(ValueError):
        build_allowlist("laser-1", 1, [], NOW, NOW, key)
    with pytest.raises(ValueError):
        build_allowlist("laser-1", -1, [], NOW, NOW + WEEK, key)
