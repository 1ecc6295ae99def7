"""The checks every input file shares: one vocabulary for the config, the agent config,
the shop file and the scenario file.

Each check takes a value as TOML or YAML gives it (or as text, from an environment
variable) and returns it parsed, or raises ``ValueError`` whose message is the reason
alone: ``must be one of tap, card_present, not 'x'``.  The caller names the key and the
place the way its file does (``config key mqtt.port: ...``, ``shop.yaml:12: tools[0]
(laser-1): units must be one of ...``, ``effort[2]: ...``), so the reasons read the same
everywhere.

This is a base module: the standard library only, importable by devices/.

>>> duration("1h30m").total_seconds(), port("1884"), choice(("tap", "card_present"))("tap")
(5400.0, 1884, 'tap')
>>> [(problem.key, str(problem)) for problem in unknown_keys({"prot": 1}, ("host", "port"))]
[('prot', 'unknown key (known: host, port)')]
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from datetime import date, timedelta
from typing import Any

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def show(value: Any) -> str:
    """A value as a reason quotes it: text in quotes, ``true``, ``nothing``, ``a list``."""
    if isinstance(value, str):
        return repr(value)
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value) if not isinstance(value, date) else value.isoformat()


def duration(value: Any) -> timedelta:
    """``"7d"``, ``"15m"``, ``"1h30m"``, ``"500ms"`` or a number of seconds; positive."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 15m or 7d")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        s = str(value).strip().lower()
        pos, seconds = 0, 0.0
        for m in _DURATION.finditer(s):
            if s[pos : m.start()].strip():
                break
            seconds += float(m.group(1)) * _UNITS[m.group(2)]
            pos = m.end()
        if pos == 0 or s[pos:].strip():
            raise ValueError(f"{value!r} is not a duration such as 15m, 1h30m or 7d")
    if not math.isfinite(seconds):
        raise ValueError(f"{value!r} is not a duration such as 15m, 1h30m or 7d")
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return timedelta(seconds=seconds)


def seconds(value: Any) -> float:
    """A :func:`duration` in seconds."""
    return duration(value).total_seconds()


def text(value: Any) -> str:
    """Non-empty text."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"must be non-empty text, not {show(value)}")
    return value


def host(value: Any) -> str:
    """A host name or address: non-empty text without spaces."""
    if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value):
        raise ValueError(f"must be a host name or address, not {show(value)}")
    return value


def integer(lo: int, hi: int | None = None) -> Callable[[Any], int]:
    """A whole number from ``lo`` to ``hi`` (no cap when None; text of one too, as
    environment variables give it)."""

    def parse(value: Any) -> int:
        number: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str):
            try:
                number = int(value.strip())
            except ValueError:
                pass
        if number is None:
            raise ValueError(f"must be a whole number, not {show(value)}")
        if hi is None and number < lo:
            raise ValueError(_below(lo, value))
        if hi is not None and not lo <= number <= hi:
            raise ValueError(f"must be between {lo} and {hi}, got {show(value)}")
        return number

    return parse


def port(value: Any) -> int:
    """A TCP port, 1 to 65535."""
    try:
        return integer(1, 65535)(value)
    except ValueError:
        raise ValueError(f"must be a port between 1 and 65535, got {show(value)}") from None


def _below(lo: float, value: Any) -> str:
    if lo == 0:
        return f"must not be negative, got {show(value)}"
    return f"must be at least {lo:g}, got {show(value)}"


def number(lo: float = -math.inf, hi: float = math.inf) -> Callable[[Any], float]:
    """A finite number from ``lo`` to ``hi`` (text of one too); NaN and infinities never."""

    def parse(value: Any) -> float:
        result: float | None = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            result = float(value)
        elif isinstance(value, str):
            try:
                result = float(value.strip())
            except ValueError:
                pass
        if result is None or not math.isfinite(result):
            raise ValueError(f"must be a number, not {show(value)}")
        if not lo <= result <= hi:
            if hi == math.inf:
                raise ValueError(_below(lo, value))
            raise ValueError(f"must be between {lo:g} and {hi:g}, got {show(value)}")
        return result

    return parse


non_negative = number(0)


def positive(value: Any) -> float:
    """A finite number above zero."""
    result = number()(value)
    if result <= 0:
        raise ValueError(f"must be positive, got {show(value)}")
    return result


def flag(value: Any) -> bool:
    """``true`` or ``false`` (as text too: ``yes``/``no``, ``on``/``off``, ``1``/``0``)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in (*_TRUE, *_FALSE):
        return value.strip().lower() in _TRUE
    raise ValueError(f"must be true or false, not {show(value)}")


def choice(choices: Iterable[str]) -> Callable[[Any], str]:
    """One of ``choices``."""
    listed = tuple(choices)

    def parse(value: Any) -> str:
        if not isinstance(value, str) or value not in listed:
            raise ValueError(f"must be one of {', '.join(listed)}, not {show(value)}")
        return value

    return parse


def matches(pattern: re.Pattern[str], what: str, rule: str) -> Callable[[Any], str]:
    """Text that ``pattern`` matches whole: an id.  ``what`` names the kind of id and
    ``rule`` says the pattern in words (``lowercase letters, digits and '-', at most 63``)."""

    def parse(value: Any) -> str:
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise ValueError(f"{show(value)} is not a valid {what} ({rule})")
        return value

    return parse


class UnknownKey(ValueError):
    """A key the table does not have; the message lists the ones it has."""

    def __init__(self, key: Any, known: Iterable[str]):
        self.key = key
        super().__init__(f"unknown key (known: {', '.join(known)})")


def unknown_keys(data: Iterable[Any], known: Iterable[str]) -> list[UnknownKey]:
    """Every key of ``data`` not in ``known``, in the file's order."""
    listed = tuple(known)
    return [UnknownKey(key, listed) for key in data if key not in listed]


def check_keys(data: Iterable[Any], known: Iterable[str]) -> None:
    """Raise :class:`UnknownKey` for the first key of ``data`` not in ``known``."""
    for problem in unknown_keys(data, known):
        raise problem
