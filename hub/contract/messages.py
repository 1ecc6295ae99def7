"""The device protocol of docs/device-protocol.md as plain, frozen data.

Everything that turns bytes from a device into something the hub can trust lives here,
so the hub, the agent, the bridge and the simulators share one schema.  Parsing never
raises anything but :class:`~hub.errors.ContractError`, whose message is the reason a
dead letter records.

>>> ev = parse_event("laser-node", b'{"boot":7,"seq":42,"type":"badge","uid":"04a1b2c3"}')
>>> ev.identity, ev.data["uid"]
(('laser-node', 7, 42), '04A1B2C3')
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from hub.errors import ContractError

MAX_PAYLOAD = 4096
DEVICE_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
UID_HEX = re.compile(r"(?:[0-9A-F]{2}){4,10}")

TOPIC_PREFIX = "peershop/dev/"
HUB_STATUS_TOPIC = "peershop/hub/status"

EVENT_TYPES = ("badge", "badge_removed", "power", "running", "button", "consume", "fault")


class DenyReason(StrEnum):
    """Why the hub said no to a badge (a deny's ``reason``; ``badge_decisions.reason``)."""

    UNKNOWN_BADGE = "unknown_badge"
    NOT_TRAINED = "not_trained"
    LOCKED_OUT = "locked_out"
    TOOL_IN_USE = "tool_in_use"
    OUTSIDE_HOURS = "outside_hours"
    SUSPENDED = "suspended"
    NO_RESERVATION = "no_reservation"


DENY_REASONS = tuple(DenyReason)
CMD_ACTIONS = ("grant", "deny", "release", "lock", "unlock", "rebirth")
TOOL_STATES = ("free", "in_use", "idle", "busy", "offline", "locked")

# Topic trees no plug may take (docs/device-protocol.md): peershop's own and Tasmota's.
# Home Assistant's discovery prefix (``homeassistant.prefix``) joins them, and ``$``
# topics are the broker's.
TASMOTA_ROOTS = ("tele", "stat", "cmnd")
RESERVED_ROOTS = ("peershop", *TASMOTA_ROOTS)
DISCOVERY_PREFIX = "homeassistant"


def event_topic(device_id: str) -> str:
    return f"{TOPIC_PREFIX}{device_id}/event"


def status_topic(device_id: str) -> str:
    return f"{TOPIC_PREFIX}{device_id}/status"


def cmd_topic(device_id: str) -> str:
    return f"{TOPIC_PREFIX}{device_id}/cmd"


def allowlist_topic(device_id: str) -> str:
    return f"{TOPIC_PREFIX}{device_id}/allowlist"


def tool_state_topic(tool_id: str) -> str:
    return f"peershop/tool/{tool_id}/state"


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    """One event of docs/device-protocol.md, validated; ``data`` holds the type's own fields."""

    device_id: str
    boot: int
    seq: int
    type: str
    data: dict[str, Any]
    device_ts: datetime | None = None
    replay: bool = False

    @property
    def identity(self) -> tuple[str, int, int]:
        return (self.device_id, self.boot, self.seq)


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """A birth (``online``) or last will (``offline``) of docs/device-protocol.md.

    ``device_ts`` is a birth's ``ts`` (v2): the device's clock when it sent the birth,
    which the hub compares with its own receive time to learn the clock's offset."""

    device_id: str
    state: str
    boot: int | None
    fw: str | None = None
    kind: tuple[str, ...] = field(default_factory=tuple)
    device_ts: datetime | None = None


@dataclass(frozen=True, slots=True)
class PowerRange:
    """The readings a real tool can give; a ``power`` outside them is a dead letter.

    A reading of 1e300 W would otherwise make a session of 1e297 Wh.  The hub sets the
    range from ``ingest.min_power_w``, ``ingest.max_power_w`` and ``ingest.max_wh_total``
    (docs/configuration.md); these defaults are 0 to 100 kW and a counter of at most
    10 GWh (100 kW for over eleven years).

    >>> PowerRange().check(812.4, 1500.0, "w", "wh_total")
    >>> PowerRange().check(1e300, None, "field 'w'", "field 'wh_total'")
    Traceback (most recent call last):
    ...
    hub.errors.ContractError: field 'w' is 1e+300 W, outside the plausible 0 to 100000 W \
(ingest.min_power_w, ingest.max_power_w)
    """

    min_w: float = 0.0
    max_w: float = 100_000.0
    max_wh_total: float = 1e10

    def check(self, w: float | None, wh_total: float | None, w_name: str, wh_name: str) -> None:
        """Raise :class:`ContractError` naming the field if a reading is implausible."""
        if w is not None and not self.min_w <= w <= self.max_w:
            raise ContractError(
                f"{w_name} is {w:g} W, outside the plausible {self.min_w:g} to {self.max_w:g} W "
                "(ingest.min_power_w, ingest.max_power_w)"
            )
        if wh_total is not None and not 0 <= wh_total <= self.max_wh_total:
            raise ContractError(
                f"{wh_name} is {wh_total:g} Wh, outside the plausible 0 to "
                f"{self.max_wh_total:g} Wh (ingest.max_wh_total)"
            )


PLAUSIBLE = PowerRange()


def parse_topic(topic: str) -> tuple[str, str]:
    """Split ``peershop/dev/{id}/{leaf}`` into ``(id, leaf)``; a bad id is a ContractError."""
    if not topic.startswith(TOPIC_PREFIX):
        raise ContractError(f"topic {topic!r} is not under {TOPIC_PREFIX}")
    rest = topic[len(TOPIC_PREFIX) :]
    device_id, sep, leaf = rest.partition("/")
    if not sep or "/" in leaf:
        raise ContractError(f"topic {topic!r} is not {TOPIC_PREFIX}{{id}}/{{leaf}}")
    if not DEVICE_ID.fullmatch(device_id):
        raise ContractError(f"device id {device_id!r} does not match [a-z0-9][a-z0-9-]{{0,62}}")
    return device_id, leaf


def _load_object(payload: bytes) -> dict[str, Any]:
    if len(payload) > MAX_PAYLOAD:
        raise ContractError(f"payload is {len(payload)} bytes, over the {MAX_PAYLOAD} limit")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ContractError(f"payload is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        obj = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise ContractError(f"payload is not JSON ({exc.msg} at char {exc.pos})") from None
    except RecursionError:
        raise ContractError("payload is nested too deeply") from None
    if not isinstance(obj, dict):
        raise ContractError(f"payload is a JSON {type(obj).__name__}, not an object")
    # PostgreSQL's text cannot hold U+0000 (SQLite's can), and one such string would fail
    # the whole batch's commit there.  No field means one, so it is refused on both.
    if "\\u0000" in text and holds_nul(obj):
        raise ContractError("payload holds a NUL character (\\u0000), which no field may")
    return obj


def holds_nul(value: Any) -> bool:
    """Whether a decoded JSON value holds U+0000 in any string, key or value."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(holds_nul(k) or holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(holds_nul(v) for v in value)
    return False


def _reject_constant(name: str) -> Any:
    raise ContractError(f"payload contains {name}, which is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)  # one, not one per message


def _int(obj: dict[str, Any], key: str, *, required: bool = True) -> int | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise ContractError(f"field {key!r} is missing")
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ContractError(f"field {key!r} must be an integer, got {_show(value)}")
    if value < 0 or value > 2**63 - 1:
        raise ContractError(f"field {key!r} must be between 0 and 2^63-1, got {value}")
    return value


def _number(obj: dict[str, Any], key: str, *, required: bool = True) -> float | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise ContractError(f"field {key!r} is missing")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ContractError(f"field {key!r} must be a number, got {_show(value)}")
    value = float(value)
    if not math.isfinite(value):
        raise ContractError(f"field {key!r} must be finite, got {value}")
    return value


def _text(
    obj: dict[str, Any], key: str, *, required: bool = True, max_len: int = 200
) -> str | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise ContractError(f"field {key!r} is missing")
        return None
    if not isinstance(value, str):
        raise ContractError(f"field {key!r} must be a string, got {_show(value)}")
    if required and not value.strip():
        raise ContractError(f"field {key!r} must not be empty")
    if len(value) > max_len:
        raise ContractError(f"field {key!r} is longer than {max_len} characters")
    return value


def _show(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def normalize_uid(value: Any) -> str:
    """A badge uid as stored and compared: uppercase hex, 4 to 10 bytes."""
    if not isinstance(value, str):
        raise ContractError(f"field 'uid' must be a hex string, got {_show(value)}")
    uid = value.strip().upper()
    if not UID_HEX.fullmatch(uid):
        raise ContractError(f"field 'uid' must be 4 to 10 bytes of hex, got {_show(value)}")
    return uid


def parse_timestamp(value: Any) -> datetime:
    """A device clock reading: ISO 8601 (UTC, or with an offset) or Unix seconds."""
    if isinstance(value, bool):
        raise ContractError(f"field 'ts' must be ISO 8601 or Unix seconds, got {_show(value)}")
    if isinstance(value, int | float):
        if not math.isfinite(value) or not 0 <= value < 253402300800:
            raise ContractError(f"field 'ts' is out of range: {value}")
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise ContractError(f"field 'ts' is not ISO 8601: {_show(value)}") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)  # the contract says UTC
        return parsed.astimezone(UTC)
    raise ContractError(f"field 'ts' must be ISO 8601 or Unix seconds, got {_show(value)}")


def _fields_for(kind: str, obj: dict[str, Any], power: PowerRange) -> dict[str, Any]:
    if kind in ("badge", "badge_removed"):
        return {"uid": normalize_uid(obj.get("uid"))}
    if kind == "power":
        data: dict[str, Any] = {"w": _number(obj, "w")}
        wh_total = _number(obj, "wh_total", required=False)
        if wh_total is not None:
            if wh_total < 0:
                raise ContractError(f"field 'wh_total' must not be negative, got {wh_total}")
            data["wh_total"] = wh_total
        power.check(data["w"], wh_total, "field 'w'", "field 'wh_total'")
        return data
    if kind == "running":
        on = obj.get("on")
        if not isinstance(on, bool):
            raise ContractError(f"field 'on' must be true or false, got {_show(on)}")
        return {"on": on}
    if kind == "button":
        return {"name": _text(obj, "name", max_len=64)}
    if kind == "consume":
        qty = _number(obj, "qty")
        if qty <= 0:
            raise ContractError(f"field 'qty' must be positive, got {qty}")
        return {
            "item": _text(obj, "item", max_len=100),
            "qty": qty,
            "unit": _text(obj, "unit", max_len=20),
        }
    if kind == "fault":
        code = obj.get("code")
        if isinstance(code, bool) or not isinstance(code, str | int) or code == "":
            raise ContractError(f"field 'code' must be a string or integer, got {_show(code)}")
        data = {"code": code}
        msg = _text(obj, "msg", required=False, max_len=500)
        if msg is not None:
            data["msg"] = msg
        return data
    raise ContractError(f"unknown event type {kind!r}")


def event_from_object(
    device_id: str, obj: dict[str, Any], power: PowerRange = PLAUSIBLE
) -> DeviceEvent:
    """Validate an already decoded event object (used by the serial bridge, too)."""
    boot = _int(obj, "boot")
    seq = _int(obj, "seq")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ContractError(f"field 'type' must be a string, got {_show(kind)}")
    data = _fields_for(kind, obj, power)
    ts = obj.get("ts")
    device_ts = None if ts is None else parse_timestamp(ts)
    replay = obj.get("replay", False)
    if not isinstance(replay, bool):
        raise ContractError(f"field 'replay' must be true or false, got {_show(replay)}")
    return DeviceEvent(device_id, boot, seq, kind, data, device_ts, replay)


def parse_event(device_id: str, payload: bytes, power: PowerRange = PLAUSIBLE) -> DeviceEvent:
    """Validate the payload of ``peershop/dev/{id}/event``; ``power`` is the plausible
    range of a ``power`` event's readings."""
    return event_from_object(device_id, _load_object(payload), power)


def parse_status(device_id: str, payload: bytes) -> DeviceStatus:
    """Validate the payload of ``peershop/dev/{id}/status`` (birth or will)."""
    obj = _load_object(payload)
    state = obj.get("state")
    if state not in ("online", "offline"):
        raise ContractError(f"field 'state' must be 'online' or 'offline', got {_show(state)}")
    boot = _int(obj, "boot", required=state == "online")
    fw = _text(obj, "fw", required=False, max_len=64)
    kind = obj.get("kind", [])
    if isinstance(kind, str):
        kind = [kind]
    if not isinstance(kind, list) or not all(isinstance(k, str) and k for k in kind):
        raise ContractError(f"field 'kind' must be a list of strings, got {_show(kind)}")
    # v2: a birth may say the device's clock; a will is sent by the broker, not the
    # device, so a clock in it would be the time it was set up, and is not read
    ts = obj.get("ts") if state == "online" else None
    device_ts = None if ts is None else parse_timestamp(ts)
    return DeviceStatus(device_id, state, boot, fw, tuple(kind), device_ts)


def format_timestamp(at: datetime) -> str:
    """A clock reading as devices send it: ISO 8601 UTC to the millisecond, with ``Z``."""
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_to_payload(event: DeviceEvent) -> bytes:
    """The wire form of an event, as a device sends it (simulators, agent, bridge)."""
    obj: dict[str, Any] = {"boot": event.boot, "seq": event.seq, "type": event.type}
    if event.device_ts is not None:
        obj["ts"] = format_timestamp(event.device_ts)
    obj.update(event.data)
    if event.replay:
        obj["replay"] = True
    return json.dumps(obj, separators=(",", ":")).encode()
