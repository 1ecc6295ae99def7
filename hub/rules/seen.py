"""Which event identities the rules have already run on, exactly, in little memory.

The rules run in memory as events arrive, before their batch commits, so they need to
know at once whether an event is new: an MQTT redelivery or a device's replay must not
open a second session.  Per ``(device, boot)`` the seqs seen are kept as sorted, merged
intervals; devices count from 0 without gaps, so this is usually one interval each.

>>> seen = SeenIndex()
>>> [seen.add("d", 1, s) for s in (0, 1, 2, 1, 5)]
[True, True, True, False, True]
>>> seen.intervals("d", 1)
[(0, 2), (5, 5)]
>>> seen.covers("d", 1, 1, 2), seen.covers("d", 1, 1, 4)
(True, False)
"""

from __future__ import annotations

from bisect import bisect_right


class SeenIndex:
    def __init__(self) -> None:
        self._starts: dict[tuple[str, int], list[int]] = {}
        self._ends: dict[tuple[str, int], list[int]] = {}

    def __contains__(self, identity: tuple[str, int, int]) -> bool:
        device, boot, seq = identity
        starts = self._starts.get((device, boot))
        if not starts:
            return False
        i = bisect_right(starts, seq) - 1
        return i >= 0 and self._ends[(device, boot)][i] >= seq

    def covers(self, device: str, boot: int, lo: int, hi: int) -> bool:
        """Whether every seq in ``[lo, hi]`` has been recorded (an empty range has)."""
        if hi < lo:
            return True
        starts = self._starts.get((device, boot))
        if not starts:
            return False
        i = bisect_right(starts, lo) - 1
        return i >= 0 and self._ends[(device, boot)][i] >= hi

    def add(self, device: str, boot: int, seq: int) -> bool:
        """Record ``seq``; True if it was new."""
        if (device, boot, seq) in self:
            return False
        self.add_interval(device, boot, seq, seq)
        return True

    def add_interval(self, device: str, boot: int, lo: int, hi: int) -> None:
        """Record every seq in ``[lo, hi]``, merging with touching or overlapping runs."""
        starts = self._starts.setdefault((device, boot), [])
        ends = self._ends.setdefault((device, boot), [])
        i = bisect_right(starts, hi + 1)  # runs [0, i) start at or before hi + 1
        j = i
        while j > 0 and ends[j - 1] >= lo - 1:
            j -= 1
        if j < i:
            lo, hi = min(lo, starts[j]), max(hi, ends[i - 1])
        starts[j:i] = [lo]
        ends[j:i] = [hi]

    def intervals(self, device: str, boot: int) -> list[tuple[int, int]]:
        return list(
            zip(
                self._starts.get((device, boot), []),
                self._ends.get((device, boot), []),
                strict=True,
            )
        )

    def __len__(self) -> int:
        return sum(len(s) for s in self._starts.values())
