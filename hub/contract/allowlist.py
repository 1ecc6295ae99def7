"""The signed offline allow-list of docs/device-protocol.md, shared by the hub and the device agent.

The hub signs, with its Ed25519 key; a device verifies with the hub's public key (from
``GET /api/v1/hub``) and decides alone from the list while the hub is unreachable::

    {"version":12,"tool":"laser-1","issued":"2026-11-26T10:00:00Z",
     "expires":"2026-12-03T10:00:00Z","uids":["<sha256 hex>",...],"sig":"<base64>"}

Canonical JSON, the bytes ``sig`` signs, is the object without ``sig`` written as
``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` in UTF-8.
:func:`build_allowlist` only puts ASCII into a list (tool ids of ``[a-z0-9-]``, ISO times,
hex), so any JSON writer that sorts keys and adds no spaces rebuilds the same bytes, also
on a microcontroller.  ``uids`` are the lowercase sha256 hex digests of the uppercase hex
uid's ASCII bytes, sorted and without duplicates, so the list shows neither the badges nor
the members' order.  ``issued`` and ``expires`` are UTC, to the second, with a ``Z``.

The key file holds the 32-byte Ed25519 seed in base64 and a newline, mode 0600; a key file
that others may read is refused rather than used.

>>> import tempfile, pathlib
>>> from datetime import UTC, datetime, timedelta
>>> key = load_or_create_key(pathlib.Path(tempfile.mkdtemp()) / "hub.key")
>>> now = datetime(2026, 11, 26, 10, tzinfo=UTC)
>>> signed = build_allowlist("laser-1", 12, ["04a1b2c3d4e5f6"], now, now + timedelta(days=7), key)
>>> verify_allowlist(signed, public_key_b64(key), now).status
'valid'
>>> uid_allowed(signed, "04A1B2C3D4E5F6"), uid_allowed(signed, "DEADBEEF")
(True, False)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from hub.contract.messages import DEVICE_ID, normalize_uid, parse_timestamp
from hub.errors import ContractError
from hub.private_files import private_folder

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_KEYS = {"version", "tool", "issued", "expires", "uids", "sig"}


# --- keys -------------------------------------------------------------------------------


def load_or_create_key(path: str | os.PathLike[str]) -> SigningKey:
    """The hub's signing key at ``path``, created (mode 0600) if the file does not exist.

    Raises :class:`PermissionError` if the file is readable by group or others and
    :class:`ValueError` if it does not hold a key.
    """
    path = Path(path)
    private_folder(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _load_key(path)
    key = SigningKey.generate()
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(base64.b64encode(bytes(key)).decode("ascii") + "\n")
    os.chmod(path, 0o600)  # whatever the umask did
    return key


def _load_key(path: Path) -> SigningKey:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise PermissionError(
            f"{path} is readable by others (mode {mode:04o}); the hub's private key must be "
            f"mode 0600: chmod 600 {path}, or replace the key if it may have leaked"
        )
    text = path.read_text(encoding="ascii", errors="replace").strip()
    try:
        seed = base64.b64decode(text, validate=True)
    except ValueError:  # binascii.Error, or text that is not ASCII
        seed = b""
    if len(seed) != 32:
        raise ValueError(f"{path} does not hold an Ed25519 key (32 bytes in base64)")
    return SigningKey(seed)


def public_key_b64(key: SigningKey) -> str:
    """The public key as ``GET /api/v1/hub`` shows it: 32 bytes in base64."""
    return base64.b64encode(bytes(key.verify_key)).decode("ascii")


def load_public_key(text: str | bytes | VerifyKey) -> VerifyKey:
    """A public key from its base64 text (as :func:`public_key_b64` writes it)."""
    if isinstance(text, VerifyKey):
        return text
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:  # binascii.Error, or text that is not ASCII
        raw = b""
    if len(raw) != 32:
        raise ValueError("a public key is 32 bytes in base64")
    return VerifyKey(raw)


# --- building and checking ---------------------------------------------------------------


def uid_hash(uid: str) -> str:
    """sha256 hex of the uppercase hex uid; raises ContractError for a malformed uid."""
    return hashlib.sha256(normalize_uid(uid).encode("ascii")).hexdigest()


def canonical_json(obj: dict[str, Any]) -> bytes:
    """The bytes that are signed: keys sorted, no spaces, UTF-8; ``sig`` left out."""
    body = {k: v for k, v in obj.items() if k != "sig"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _iso(when: datetime) -> str:
    if when.tzinfo is None:
        raise ValueError("allow-list times must be timezone aware")
    return when.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def next_version(previous: int | None, now: datetime) -> int:
    """The version of a tool's next list: the milliseconds since 1970 at ``now``, or one
    above ``previous`` when that is higher (two lists in one millisecond, a clock set back).

    Counting from the clock, not from the last stored list, keeps versions growing across
    a restore: a restored database knows only the versions of its backup, while devices
    hold newer ones and refuse anything not newer (``newer_than``); a device would then
    ignore every list, revocations included, until its own expired.

    >>> next_version(12, datetime(2026, 11, 26, 10, tzinfo=UTC))
    1795687200000
    >>> next_version(1795687200000, datetime(2026, 11, 26, 10, tzinfo=UTC))
    1795687200001
    """
    clock = int(now.timestamp() * 1000)
    return clock if previous is None else max(previous + 1, clock)


def build_allowlist(
    tool: str,
    version: int,
    uids: Iterable[str],
    issued: datetime,
    expires: datetime,
    key: SigningKey,
) -> dict[str, Any]:
    """A signed allow-list for ``tool`` holding the given badge uids (any case).

    ``version`` must grow with every list for a tool, so a device can refuse an older one.
    """
    if not DEVICE_ID.fullmatch(tool):
        raise ValueError(f"tool id {tool!r} does not match [a-z0-9][a-z0-9-]{{0,62}}")
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ValueError(f"version must be an integer >= 0, got {version!r}")
    if expires <= issued:
        raise ValueError("an allow-list must expire after it is issued")
    obj: dict[str, Any] = {
        "version": version,
        "tool": tool,
        "issued": _iso(issued),
        "expires": _iso(expires),
        "uids": sorted({uid_hash(uid) for uid in uids}),
    }
    obj["sig"] = base64.b64encode(key.sign(canonical_json(obj)).signature).decode("ascii")
    return obj


def allowlist_payload(obj: dict[str, Any]) -> bytes:
    """The retained message for ``peershop/dev/{id}/allowlist``."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True, slots=True)
class AllowlistCheck:
    """The outcome of :func:`verify_allowlist`.

    ``status`` is ``valid``, ``malformed``, ``forged`` (bad signature, or another key),
    ``wrong_tool``, ``stale`` (not newer than the list the device holds) or ``expired``;
    only ``valid`` may be used.  ``reason`` says why in words.
    """

    status: str
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "valid"


def verify_allowlist(
    obj: dict[str, Any] | bytes | str,
    public_key: str | bytes | VerifyKey,
    now: datetime,
    *,
    tool: str | None = None,
    newer_than: int | None = None,
) -> AllowlistCheck:
    """Check a received allow-list: shape, signature, then tool, version and expiry.

    ``tool`` is the device's tool (a list for another tool is refused); ``newer_than`` is
    the version the device already holds (a replayed older list is refused).  A forged
    list is reported as forged even if it has also expired.
    """
    try:
        if not isinstance(obj, dict):
            obj = json.loads(obj)
        if not isinstance(obj, dict) or set(obj) != _KEYS:
            raise ContractError(f"an allow-list has exactly the fields {sorted(_KEYS)}")
        version, uids, sig = obj["version"], obj["uids"], obj["sig"]
        if isinstance(version, bool) or not isinstance(version, int):
            raise ContractError("version must be an integer")
        if not isinstance(uids, list) or not all(
            isinstance(u, str) and _SHA256_HEX.fullmatch(u) for u in uids
        ):
            raise ContractError("uids must be a list of sha256 hex digests")
        if not isinstance(obj["tool"], str) or not isinstance(sig, str):
            raise ContractError("tool and sig must be strings")
        expires = parse_timestamp(obj["expires"])
        parse_timestamp(obj["issued"])
        signature = base64.b64decode(sig, validate=True)
    except (ContractError, ValueError, binascii.Error) as exc:
        return AllowlistCheck("malformed", str(exc))
    try:
        load_public_key(public_key).verify(canonical_json(obj), signature)
    except (BadSignatureError, ValueError):
        return AllowlistCheck("forged", "the signature does not match the hub's key")
    if tool is not None and obj["tool"] != tool:
        return AllowlistCheck("wrong_tool", f"the list is for {obj['tool']!r}, not {tool!r}")
    if newer_than is not None and version <= newer_than:
        return AllowlistCheck("stale", f"version {version} is not newer than {newer_than}")
    if now >= expires:
        return AllowlistCheck("expired", f"the list expired at {obj['expires']}")
    return AllowlistCheck("valid")


def uid_allowed(allowlist: dict[str, Any], uid: str) -> bool:
    """Whether a badge uid is on a (verified) allow-list; a malformed uid is not."""
    try:
        digest = uid_hash(uid)
    except ContractError:
        return False
    return digest in allowlist.get("uids", ())
