"""Power samples into off / idle / busy, busy and idle seconds, and energy.

The events it reads are those of docs/device-protocol.md (plugs' payloads become such
events in hub/plugs/).

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

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

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
