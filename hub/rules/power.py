"""Power samples into off / idle / busy, busy and idle seconds, and energy.

The events and plug messages it reads are those of docs/device-protocol.md.

Pure: samples and their times go in, levels and accounted time segments come out.

Thresholds, with ``h`` the hysteresis band (``hysteresis_w``):

* **busy** is entered at ``w >= busy_w`` and left only when ``w < busy_w - h``;
* **off** is entered at ``w < off_w`` and left only when ``w >= off_w + h``;
* anything else is **idle**.

So each level is entered exactly at the contract's threshold and it takes the band to
leave it: a plug that hovers around a threshold does not flap.

Integration is a **step** (zero-order hold): a sample's power and level hold until the next
sample, as for a device that reports on change.  Energy comes from the cumulative counter
(``wh_total``) whenever two readings of it are available, so a lost sample loses no energy;
otherwise it is the step estimate ``w * dt``.  A counter that goes down is a device reset:
that interval falls back to the step estimate and the new reading is the new baseline, so
energy is never negative.  Negative power (a miswired clamp, a plug's calibration) counts
as 0 W and the outcome says ``negative_power``.  NaN never arrives here: the contract
parser rejects it.

>>> from datetime import UTC, datetime, timedelta
>>> meter = PowerMeter(PowerThresholds(off_w=5, busy_w=200))
>>> t0 = datetime(2026, 11, 26, 10, tzinfo=UTC)
>>> meter.sample(t0, 800.0).level
'busy'
>>> out = meter.sample(t0 + timedelta(hours=1), 3.0)
>>> out.segment.level, out.segment.seconds, out.segment.wh, out.level
('busy', 3600.0, 800.0, 'off')
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from hub.errors import ContractError

Level = Literal["off", "idle", "busy"]
LEVELS: tuple[Level, ...] = ("off", "idle", "busy")


@dataclass(frozen=True, slots=True)
class PowerThresholds:
    """Per-tool thresholds in watts; a device builder tunes them per tool."""

    off_w: float = 5.0
    busy_w: float = 50.0
    hysteresis_w: float = 0.0

    def __post_init__(self) -> None:
        for name in ("off_w", "busy_w", "hysteresis_w"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        if self.off_w > self.busy_w:
            raise ValueError(f"off_w ({self.off_w}) must not be above busy_w ({self.busy_w})")


def classify(w: float, previous: Level, thresholds: PowerThresholds) -> Level:
    """The level of a sample of ``w`` watts, given the level before it (hysteresis)."""
    t = thresholds
    if w >= t.busy_w:
        return "busy"
    if w < t.off_w:
        return "off"
    if previous == "busy" and w >= t.busy_w - t.hysteresis_w:
        return "busy"
    if previous == "off" and w < t.off_w + t.hysteresis_w:
        return "off"
    return "idle"


@dataclass(frozen=True, slots=True)
class Segment:
    """An accounted stretch of time: the level and power that held over it, and its energy."""

    start: datetime
    end: datetime
    level: Level
    w: float
    wh: float

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


@dataclass(frozen=True, slots=True)
class SampleOutcome:
    """What one sample did: the segment it closed (None if late or first) and the new level.

    ``note`` is ``None``, ``"late"`` (older than what was already accounted: ignored,
    counters are cumulative so no energy is lost) or ``"negative_power"`` (counted as 0 W).
    """

    segment: Segment | None
    level: Level
    w: float
    note: str | None = None


class PowerMeter:
    """One tool's power level and energy over time; feed it samples in time order.

    ``sample()`` accounts the time since the previous sample at the previous level;
    ``advance()`` does the same without a new reading (a session boundary).
    """

    def __init__(self, thresholds: PowerThresholds):
        self.thresholds = thresholds
        self.level: Level = "off"
        self.w = 0.0
        self.at: datetime | None = None
        # the last counter reading and the energy attributed by estimate since it
        self._wh_total: float | None = None
        self._estimated_since_counter = 0.0

    def advance(self, at: datetime) -> Segment | None:
        """Account up to ``at`` at the current level; None if ``at`` is not after the cursor."""
        if self.at is None:
            self.at = at
            return None
        if at <= self.at:
            return None
        seg = self._segment(at, self._estimate(at))
        if self._wh_total is not None:
            self._estimated_since_counter += seg.wh
        self.at = at
        return seg

    def sample(self, at: datetime, w: float, wh_total: float | None = None) -> SampleOutcome:
        """A reading at ``at``: ``w`` watts and, if the device has one, its Wh counter."""
        if self.at is not None and at < self.at:
            return SampleOutcome(None, self.level, self.w, "late")
        note = None
        if w < 0:
            w, note = 0.0, "negative_power"
        segment = None
        if self.at is not None:
            if wh_total is not None and self._wh_total is not None and wh_total >= self._wh_total:
                delta = wh_total - self._wh_total
                wh = max(0.0, delta - self._estimated_since_counter)
            else:
                # no counter pair, or the counter went down (device reset): step estimate
                wh = self._estimate(at)
            segment = self._segment(at, wh)
        if wh_total is not None:
            self._wh_total = wh_total
            self._estimated_since_counter = 0.0
        elif self._wh_total is not None and segment is not None:
            self._estimated_since_counter += segment.wh
        self.at = at
        self.level = classify(w, self.level, self.thresholds)
        self.w = w
        return SampleOutcome(segment, self.level, w, note)

    def forget_reading(self) -> None:
        """The device went away: assume 0 W until its next sample (a counter covers the gap)."""
        self.level = "off"
        self.w = 0.0

    def _estimate(self, at: datetime) -> float:
        assert self.at is not None
        return self.w * (at - self.at).total_seconds() / 3600.0

    def _segment(self, at: datetime, wh: float) -> Segment:
        assert self.at is not None
        return Segment(self.at, at, self.level, self.w, wh)


# --- third-party plugs (docs/device-protocol.md, "Smart plugs") -------------------------


@dataclass(frozen=True, slots=True)
class PlugReading:
    """A plug's report mapped to the contract's units: watts and a Wh counter.

    Any field may be None when the payload does not carry it (Shelly's NotifyStatus sends
    partial updates).  ``output`` is the relay state where the plug reports it.
    """

    w: float | None
    wh_total: float | None
    output: bool | None = None


def _decode(payload: bytes | str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(payload, dict):
        return payload
    if isinstance(payload, bytes):
        try:
            payload = payload.decode("utf-8")
        except UnicodeDecodeError:
            raise ContractError("plug payload is not UTF-8") from None
    try:
        obj = json.loads(payload, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ContractError(f"plug payload is not JSON ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise ContractError("plug payload is not a JSON object")
    return obj


def _reject_constant(name: str) -> Any:
    raise ContractError(f"plug payload contains {name}, which is not JSON")


def _finite(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ContractError(f"{what} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ContractError(f"{what} must be finite, got {value}")
    return value


def tasmota_sensor(payload: bytes | str | dict[str, Any], channel: int = 0) -> PlugReading:
    """``tele/{topic}/SENSOR`` (or ``stat/{topic}/STATUS10``, the same under
    ``StatusSNS``): ``ENERGY.Power`` in W, ``ENERGY.Total`` in **kWh** → Wh.

    A plug with several channels (a Shelly 2.5 on Tasmota) sends arrays, one value per
    channel: ``channel`` (from 1, as ``POWER<n>``) picks one; 0 is a plug of one channel.
    Its ``Total`` is one sum over every channel unless the plug sends one per channel
    (``SetOption129 1``): a sum is no channel's counter, so that channel has none.

    >>> tasmota_sensor(b'{"ENERGY":{"Total":1.234,"Power":812}}')
    PlugReading(w=812.0, wh_total=1234.0, output=None)
    >>> tasmota_sensor(b'{"ENERGY":{"Total":0.105,"Power":[23.63,67.17]}}', channel=2)
    PlugReading(w=67.17, wh_total=None, output=None)
    """
    obj = _decode(payload)
    status = obj.get("StatusSNS")
    energy = (status if isinstance(status, dict) else obj).get("ENERGY")
    if not isinstance(energy, dict):
        raise ContractError("Tasmota SENSOR payload has no ENERGY object")
    power = energy.get("Power")
    channels = len(power) if isinstance(power, list) else None
    if channels is None and channel > 1 and power is not None:
        raise ContractError(
            f"ENERGY.Power is one value: the plug has no channel {channel} (bind it whole)"
        )
    w = _finite(_channel_value(power, channel, "ENERGY.Power"), "ENERGY.Power")
    total = energy.get("Total")
    if isinstance(total, list) or channels is None:
        total = _finite(_channel_value(total, channel, "ENERGY.Total"), "ENERGY.Total")
    else:
        total = None  # one sum over the channels: no channel's own counter
    if w is None and total is None:
        raise ContractError("Tasmota SENSOR payload has neither ENERGY.Power nor ENERGY.Total")
    if total is not None and total < 0:
        raise ContractError(f"ENERGY.Total must not be negative, got {total}")
    return PlugReading(w, None if total is None else total * 1000.0)


def _channel_value(value: Any, channel: int, what: str) -> Any:
    """``value`` itself, or its element for ``channel`` (from 1) when it is an array."""
    if not isinstance(value, list):
        return value
    if channel == 0:
        raise ContractError(
            f"{what} has {len(value)} channels: bind one ({{tasmota: TOPIC, channel: N}})"
        )
    if channel > len(value):
        raise ContractError(f"{what} has {len(value)} channels, so no channel {channel}")
    return value[channel - 1]


def tasmota_relay(payload: bytes | str) -> bool:
    """``stat/{topic}/POWER`` or ``POWER<n>``: ``ON`` or ``OFF``, the relay's state."""
    text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload
    text = text.strip()
    if text not in ("ON", "OFF"):
        raise ContractError(f"Tasmota POWER must be ON or OFF, got {text[:40]!r}")
    return text == "ON"


def shelly_switch(payload: bytes | str | dict[str, Any], switch: str = "switch:0") -> PlugReading:
    """Shelly Gen2+ ``{prefix}/status/switch:0`` or a ``NotifyStatus`` on ``events/rpc``.

    ``apower`` is W and ``aenergy.total`` is already **Wh**.  A NotifyStatus that does not
    mention the switch, or mentions neither field, gives a reading of all None.

    >>> shelly_switch(b'{"id":0,"output":true,"apower":40.5,"aenergy":{"total":1500.25}}')
    PlugReading(w=40.5, wh_total=1500.25, output=True)
    """
    obj = _decode(payload)
    if "method" in obj:
        if obj.get("method") != "NotifyStatus":
            return PlugReading(None, None)
        params = obj.get("params")
        if not isinstance(params, dict):
            raise ContractError("Shelly NotifyStatus has no params object")
        status = params.get(switch)
        if status is None:
            return PlugReading(None, None)
        if not isinstance(status, dict):
            raise ContractError(f"Shelly NotifyStatus {switch} is not an object")
    else:
        status = obj
    w = _finite(status.get("apower"), "apower")
    aenergy = status.get("aenergy")
    total = None
    if aenergy is not None:
        if not isinstance(aenergy, dict):
            raise ContractError("aenergy must be an object")
        total = _finite(aenergy.get("total"), "aenergy.total")
        if total is not None and total < 0:
            raise ContractError(f"aenergy.total must not be negative, got {total}")
    output = status.get("output")
    if output is not None and not isinstance(output, bool):
        raise ContractError(f"output must be true or false, got {output!r}")
    return PlugReading(w, total, output)


def shelly_reply(payload: bytes | str | dict[str, Any], switch: int) -> PlugReading:
    """A Shelly's answer to the hub's RPC: a ``Switch.GetStatus`` result of switch
    ``switch`` is its whole status; any other answer (``Switch.Set``'s ``was_on``, an
    error, another switch) gives a reading of all None.

    >>> reply = b'{"id":3,"result":{"id":0,"output":true,"apower":8.9,"aenergy":{"total":6.5}}}'
    >>> shelly_reply(reply, 0)
    PlugReading(w=8.9, wh_total=6.5, output=True)
    """
    result = _decode(payload).get("result")
    if not isinstance(result, dict) or result.get("id") != switch or "output" not in result:
        return PlugReading(None, None)
    return shelly_switch(result)


def tasmota_online(payload: bytes | str) -> bool:
    """``tele/{topic}/LWT``: ``Online`` or ``Offline``."""
    text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload
    text = text.strip()
    if text not in ("Online", "Offline"):
        raise ContractError(f"Tasmota LWT must be Online or Offline, got {text[:40]!r}")
    return text == "Online"


def shelly_online(payload: bytes | str) -> bool:
    """Shelly ``{prefix}/online``: ``true`` or ``false``."""
    text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload
    text = text.strip()
    if text not in ("true", "false"):
        raise ContractError(f"Shelly online must be true or false, got {text[:40]!r}")
    return text == "true"
