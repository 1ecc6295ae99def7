"""Small charts as server-rendered inline SVG: no script, no inline style (the CSP
forbids both), only SVG attributes and classes from ``peershop.css``.

Every text that reaches the SVG goes through :func:`markupsafe.escape`, so a task title
or a tool name cannot inject markup.

>>> str(sparkline([1, 1.2, 0.9], label="weight"))[:4]
'<svg'
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from functools import lru_cache

from markupsafe import Markup, escape

Number = float | int | Decimal


def _f(value: Number) -> float:
    return float(value)


def sparkline(
    values: Sequence[Number], *, label: str, width: int = 120, height: int = 28
) -> Markup:
    """A line through ``values`` (oldest first), with a dot on the last one."""
    return _sparkline(tuple(map(float, values)), label, width, height)


@lru_cache(maxsize=4096)
def _sparkline(nums: tuple[float, ...], label: str, width: int, height: int) -> Markup:
    # Remembered: the task board draws one per task on every view, and a task's closed
    # weights never change, so the same charts come back until a period closes.
    title = escape(label)
    if not nums:
        return Markup("")
    lo, hi = min(nums), max(nums)
    span = (hi - lo) or 1.0
    pad = 3
    step = (width - 2 * pad) / max(len(nums) - 1, 1)
    points = [
        (pad + i * step, height - pad - (v - lo) / span * (height - 2 * pad))
        for i, v in enumerate(nums)
    ]
    if len(points) == 1:
        points = [(pad, points[0][1]), (width - pad, points[0][1])]
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    x, y = points[-1]
    return Markup(
        f'<svg class="chart spark" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}"><title>{title}</title>'
        f'<polyline class="line" fill="none" points="{path}"/>'
        f'<circle class="dot" cx="{x:.1f}" cy="{y:.1f}" r="2.5"/></svg>'
    )


def bars(
    rows: Sequence[tuple[str, Number]],
    *,
    label: str,
    unit: str = "",
    width: int = 420,
    bar_height: int = 16,
    label_width: int = 140,
) -> Markup:
    """Horizontal bars, one per ``(name, value)``; negative values go left of a zero line."""
    if not rows:
        return Markup("")
    nums = [_f(v) for _, v in rows]
    lo, hi = min(0.0, *nums), max(0.0, *nums)
    span = (hi - lo) or 1.0
    plot = width - label_width - 70
    zero = label_width + (-lo) / span * plot
    gap = 4
    height = len(rows) * (bar_height + gap) + gap
    parts = [
        f'<svg class="chart bars" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}"><title>{escape(label)}</title>'
    ]
    for i, ((name, _), v) in enumerate(zip(rows, nums, strict=True)):
        y = gap + i * (bar_height + gap)
        x = zero if v >= 0 else zero + v / span * plot
        w = max(abs(v) / span * plot, 0.5)
        cls = "bar neg" if v < 0 else "bar"
        ty = y + bar_height - 4
        parts.append(
            f'<text class="label" x="0" y="{ty}">{escape(str(name)[:22])}</text>'
            f'<rect class="{cls}" x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar_height}"/>'
            f'<text class="value" x="{max(zero, x + w) + 4:.1f}" y="{ty}">'
            f"{v:.2f}{escape(unit)}</text>"
        )
    parts.append(f'<line class="axis" x1="{zero:.1f}" y1="0" x2="{zero:.1f}" y2="{height}"/>')
    parts.append("</svg>")
    return Markup("".join(parts))


def columns(
    rows: Sequence[tuple[str, Number]],
    *,
    label: str,
    unit: str = "",
    width: int = 420,
    height: int = 90,
) -> Markup:
    """Vertical bars over time, one per ``(day, value)``, each titled with its value."""
    if not rows:
        return Markup("")
    nums = [max(_f(v), 0.0) for _, v in rows]
    hi = max(nums) or 1.0
    base = height - 14
    step = width / len(rows)
    parts = [
        f'<svg class="chart columns" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}"><title>{escape(label)}</title>'
    ]
    for i, ((name, _), v) in enumerate(zip(rows, nums, strict=True)):
        h = max(v / hi * (base - 4), 0.5)
        parts.append(
            f'<rect class="bar" x="{i * step + 1:.1f}" y="{base - h:.1f}" '
            f'width="{max(step - 2, 1):.1f}" height="{h:.1f}">'
            f"<title>{escape(name)}: {v:.2f}{escape(unit)}</title></rect>"
        )
    parts.append(f'<line class="axis" x1="0" y1="{base}" x2="{width}" y2="{base}"/>')
    parts.append(f'<text x="0" y="{height - 2}">{escape(rows[0][0])}</text>')
    parts.append(
        f'<text x="{width}" y="{height - 2}" text-anchor="end">{escape(rows[-1][0])}</text>'
    )
    parts.append("</svg>")
    return Markup("".join(parts))
