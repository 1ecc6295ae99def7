"""Reading a shop file: YAML that knows its line numbers, and the checks of one entry.

:class:`ShopLoader` keeps each mapping's and sequence's line, so every problem names
``FILE:LINE``; :class:`_Entry` checks one entry's keys and values (text, ids, choices,
numbers, durations, hours, decimals) and files each problem with :class:`_Problems`,
which reports them all together.  hub/shopfile/parse.py builds the shop from these.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import yaml

from hub import checks
from hub.checks import show
from hub.errors import ShopFileError
from hub.rules.access import WeeklyHours
from hub.shopfile.spec import (
    _UTC,
    MAX_ERRORS,
    _describe,
)

# ---------------------------------------------------------------------------------------
# YAML that knows its line numbers


class _Mapping(dict):
    """A mapping from the file, with the line it starts on and the line of each key."""

    line: int = 0
    key_lines: dict[Any, int]


class _Sequence(list):
    """A list from the file, with the line of each item."""

    line: int = 0
    item_lines: list[int]


class ShopLoader(yaml.SafeLoader):
    """PyYAML's safe loader that records where each mapping, key and list item starts,
    and every key given twice in one mapping (YAML would silently keep the last)."""

    def __init__(self, stream: Any):
        super().__init__(stream)
        self.duplicates: list[tuple[int, str]] = []


def _construct_mapping(loader: ShopLoader, node: yaml.MappingNode) -> Iterator[_Mapping]:
    data = _Mapping()
    data.line = node.start_mark.line + 1
    data.key_lines = {}
    yield data
    seen: set[str] = set()
    for key_node, _ in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
            if key_node.value in seen:
                loader.duplicates.append((key_node.start_mark.line + 1, key_node.value))
            seen.add(key_node.value)
    data.update(loader.construct_mapping(node))
    for key_node, _ in node.value:  # merged keys first, so the key that wins is last
        key = loader.construct_object(key_node)
        try:
            data.key_lines[key] = key_node.start_mark.line + 1
        except TypeError:  # an unhashable key; construct_mapping has already refused it
            pass


def _construct_sequence(loader: ShopLoader, node: yaml.SequenceNode) -> Iterator[_Sequence]:
    data = _Sequence()
    data.line = node.start_mark.line + 1
    data.item_lines = [item.start_mark.line + 1 for item in node.value]
    yield data
    data.extend(loader.construct_sequence(node))


ShopLoader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)
ShopLoader.add_constructor("tag:yaml.org,2002:seq", _construct_sequence)


# ---------------------------------------------------------------------------------------
# checking


class _Problems:
    """Problems found so far, each at a line; raised together as one ShopFileError."""

    def __init__(self, source: str):
        self.source = source
        self.items: list[tuple[int, str]] = []

    def add(self, line: int, entry: str, reason: str) -> None:
        self.items.append((line, f"{entry}: {reason}" if entry else reason))

    def raise_if_any(self) -> None:
        if not self.items:
            return
        items = sorted(self.items, key=lambda item: item[0])
        count = len(items)
        lines = [f"{self.source}: {count} problem{'s' if count > 1 else ''}, nothing was loaded:"]
        lines += [f"{self.source}:{line}: {text}" for line, text in items[:MAX_ERRORS]]
        if count > MAX_ERRORS:
            lines.append(f"{self.source}: {count - MAX_ERRORS} more not shown")
        raise ShopFileError("\n".join(lines))


class _Entry:
    """One mapping of a section (``tools[0]``), read key by key; problems go to the list.

    A nested mapping (``power:``) is read as a sub-entry under the same label, whose
    keys are named with a ``power.`` prefix; its problems make the parent not ``ok``.
    """

    def __init__(
        self,
        problems: _Problems,
        data: _Mapping,
        label: str,
        required: tuple[str, ...],
        optional: tuple[str, ...],
        *,
        id_key: str | None = None,
        prefix: str = "",
        parent: _Entry | None = None,
    ):
        self.problems = problems
        self.data = data
        ident = data.get(id_key) if id_key else None
        # the id, valid or not, names the entry in every message: ``tools[0] (laser-1)``
        self.label = f"{label} ({ident})" if isinstance(ident, str) and ident else label
        self.prefix = prefix
        self.parent = parent
        self.ok = True
        for problem in checks.unknown_keys(data, (*required, *optional)):
            self.error(f"{prefix}{problem.key}: {problem}", problem.key)
        for key in required:
            if key not in data:
                self.error(f"{prefix}{key} is missing")

    @property
    def line(self) -> int:
        return self.data.line

    def at(self, key: str) -> int:
        return self.data.key_lines.get(key, self.data.line)

    def where(self) -> dict[str, Any]:
        """The location fields of the entry's spec (:class:`_Located`)."""
        key_lines = {k: v for k, v in self.data.key_lines.items() if isinstance(k, str)}
        return {"line": self.line, "key_lines": key_lines, "label": self.label}

    def error(self, reason: str, key: str | None = None, *, line: int | None = None) -> None:
        entry: _Entry | None = self
        while entry is not None:
            entry.ok = False
            entry = entry.parent
        self.problems.add(line or (self.at(key) if key else self.line), self.label, reason)

    def sub(self, key: str, required: tuple[str, ...], optional: tuple[str, ...]) -> _Entry | None:
        """The nested mapping at ``key``, or None when it is missing or not a mapping."""
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, _Mapping):
            self.error(f"{key} must be a mapping such as {{key: value}}, not {show(value)}", key)
            return None
        return _Entry(
            self.problems,
            value,
            self.label,
            required,
            optional,
            prefix=f"{self.prefix}{key}.",
            parent=self,
        )

    def _check(self, key: str, check: Callable[[Any], Any], *, sep: str = " ") -> Any:
        """``check`` (:mod:`hub.checks`) on the key's value; None and a problem if it fails."""
        try:
            return check(self.data.get(key))
        except ValueError as exc:
            self.error(f"{self.prefix}{key}{sep}{exc}", key)
            return None

    # --- typed fields; each returns None (and records a problem) when the value is bad

    def text(self, key: str, default: str | None = None, max_len: int = 200) -> str | None:
        value = self.data.get(key)
        if value is None:
            return default
        if not self._check(key, checks.text):
            return None
        if len(value) > max_len:
            self.error(f"{self.prefix}{key} is longer than {max_len} characters", key)
            return None
        return value.strip()

    def ident(self, key: str, pattern: re.Pattern[str], what: str) -> str | None:
        value = self.data.get(key)
        if value is None:
            return None
        return self._check(key, checks.matches(pattern, what, _describe(pattern)))

    def choice(self, key: str, choices: tuple[str, ...], default: str | None) -> str | None:
        value = self.data.get(key)
        if value is None:
            return default
        return self._check(key, checks.choice(choices))

    def flag(self, key: str, default: bool) -> bool | None:
        value = self.data.get(key)
        if value is None:
            return default
        return self._check(key, checks.flag)

    def items(self, key: str) -> list[tuple[int, Any]]:
        """A list's items with their lines; a missing key is an empty list."""
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, _Sequence):
            self.error(f"{self.prefix}{key} must be a list, not {show(value)}", key)
            return []
        return list(zip(value.item_lines, value, strict=True))

    def number(self, key: str, default: float | None = None) -> float | None:
        value = self.data.get(key)
        if value is None:
            return default
        number = self._check(key, checks.non_negative)
        return value if number is not None and not isinstance(value, str) else number

    def duration(self, key: str, default: timedelta | None = None) -> timedelta | None:
        value = self.data.get(key)
        if value is None:
            return default
        return self._check(key, checks.duration, sep=": ")

    def hours(self, key: str) -> str | None:
        """Opening hours such as ``Mon-Fri 17:00-22:00; Sat 10:00-18:00`` (WeeklyHours)."""
        text = self.text(key)
        if text is None:
            return None
        try:
            WeeklyHours.parse(text, _UTC)
        except ValueError as exc:
            self.error(f"{self.prefix}{key}: {exc}", key)
            return None
        return text

    def decimal(self, key: str, default: Decimal | None) -> Decimal | None:
        value = self.data.get(key)
        if value is None:
            return default
        if self._check(key, checks.number()) is None:
            return None
        return Decimal(
            str(value).strip()
        )  # YAML's 1.1 is a float; its shortest repr is what was written


def _expiry(entry: _Entry, key: str) -> datetime | None:
    """A grant's expiry: a date means valid through that day (UTC), a time is exact."""
    value = entry.data.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = date.fromisoformat(value) if len(value) == 10 else datetime.fromisoformat(value)
        except ValueError:
            value = None
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC) + timedelta(days=1)
    entry.error(f"{key} must be a date (2027-06-30) or a time (2027-06-30T18:00Z)", key)
    return None
