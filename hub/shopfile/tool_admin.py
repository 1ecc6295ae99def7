"""Admin's edits of tools and trainings, recorded as overrides of the shop file.

A coordinator changes a tool's access and session settings, and grants, renews or
revokes a member's training, from the web (web/admin.py).  Each function here runs in
the caller's transaction, bumps the shop version (a running hub reloads within
seconds, or at once when the caller calls ``Hub.reload``) and returns what changed as
the shop file's diff lines, which the caller writes to the audit log.

A tool edit is checked by the shop file's own parser (hub/shopfile/parse.py), so Admin accepts
exactly what a file may say, with the same messages; each problem is reported under the
setting's name (``power.idle_timeout``).  What an edit changes becomes an override that
a later ``peershop load`` keeps (hub/store/overrides.py).

>>> EDITABLE[0], EDITABLE[4]
('policy', 'power.busy_w')
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.config import DEFAULT_SITE
from hub.errors import ToolEditError
from hub.plugs import KINDS as PLUG_KINDS
from hub.shopfile.apply import TOOL_SETTINGS, _Apply, _Stored
from hub.shopfile.entries import _Mapping, _Sequence
from hub.shopfile.parse import _Parser
from hub.shopfile.spec import Shop, _fmt, _fmt_duration
from hub.store.models import Member, Tool, Training, TrainingGrant
from hub.store.overrides import (
    grant_overrides,
    mark_grant,
    set_tool_overrides,
    tool_overrides,
    unmark_grants,
)
from hub.store.shop_store import bump_shop_version

EDITABLE = (
    "policy",
    "training",
    "power.off_w",
    "power.idle_w",
    "power.busy_w",
    "power.hysteresis_w",
    "power.idle_timeout",
    "power.max_duration",
    "hours",
    "scarce.enforce",
    "no_cut_while_busy",
    "end_on_stop",
)
"""The tool settings Admin edits, named as in the shop file.  A tool's name, project,
devices, scarce slots and units stay with the file: they describe the shop's inventory."""

FLAGS = ("scarce.enforce", "no_cut_while_busy", "end_on_stop")
NUMBERS = ("power.off_w", "power.idle_w", "power.busy_w", "power.hysteresis_w")
DURATIONS = ("power.idle_timeout", "power.max_duration")
_WHERE = {shown: (column, key) for shown, column, key, _ in TOOL_SETTINGS}
_WHERE |= {"policy": ("", "policy"), "training": ("", "training_id")}


def stored(tool: Tool, setting: str) -> Any:
    """A tool setting's stored value (seconds for durations, watts, text, flags)."""
    column, key = _WHERE[setting]
    if not column:
        return getattr(tool, key)
    return (getattr(tool, column) or {}).get(key)


def shown(setting: str, value: Any) -> str:
    """A stored value as the shop file writes it (``20m``, ``tap``, ``none``)."""
    return _fmt_duration(value) if setting in DURATIONS else _fmt(value)


def form_values(tool: Tool) -> dict[str, Any]:
    """The tool's settings as an edit form shows them: text, with flags as booleans."""
    out: dict[str, Any] = {}
    for setting in EDITABLE:
        value = stored(tool, setting)
        if setting in FLAGS:
            out[setting] = bool(value)
        elif value is None:
            out[setting] = ""
        elif setting in DURATIONS:
            out[setting] = _fmt_duration(value)
        elif isinstance(value, int | float):
            out[setting] = _fmt(value)  # 8.0 W is shown as 8
        else:
            out[setting] = str(value)
    return out


def _number(text: str) -> Any:
    """A form's number as the YAML parser would give it; text it is not stays text, so
    the parser names the problem (``power.off_w must be a number, not 'ten'``)."""
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() else value


def _entry(tool: Tool, values: Mapping[str, Any]) -> tuple[_Mapping, dict[int, str]]:
    """The tool as one shop-file entry: stored values for what Admin does not edit, the
    form's values for the rest.  Each key gets its own "line", so a problem the parser
    reports at a line is the problem of that setting."""
    lines: dict[int, str] = {}

    def mapping(data: dict[str, Any], names: dict[str, str], first: int) -> _Mapping:
        m = _Mapping(data)
        m.line, m.key_lines = first, {}
        for i, key in enumerate(data):
            m.key_lines[key] = first + 1 + i
            lines[first + 1 + i] = names.get(key, key)
        return m

    item: dict[str, Any] = {"id": tool.id, "name": tool.name}
    if tool.project_id:
        item["project"] = tool.project_id
    if tool.site != DEFAULT_SITE:
        item["site"] = tool.site
    devices = _Sequence(_binding_item(b) for b in tool.bindings)
    if devices:
        devices.line, devices.item_lines = 300, [300] * len(devices)
        item["devices"] = devices
    units = (tool.options or {}).get("units")
    if units:
        item["units"] = units
    item["policy"] = values.get("policy") or tool.policy
    if values.get("training"):
        item["training"] = values["training"]
    power: dict[str, Any] = {}
    for setting in (*NUMBERS, *DURATIONS):
        text = str(values.get(setting) or "").strip()
        if text:
            key = setting.removeprefix("power.")
            power[key] = _number(text)  # a duration may be a number of seconds too
    if power:
        item["power"] = mapping(power, {k: f"power.{k}" for k in power}, 100)
    hours = str(values.get("hours") or "").strip()
    if hours:
        item["hours"] = hours
    if tool.scarce:
        scarce = {k: tool.scarce[k] for k in ("slots", "per_slot") if tool.scarce.get(k)}
        scarce["enforce"] = bool(values.get("scarce.enforce"))
        item["scarce"] = mapping(scarce, {k: f"scarce.{k}" for k in scarce}, 200)
    for flag in ("no_cut_while_busy", "end_on_stop"):
        item[flag] = bool(values.get(flag))
    root = mapping(item, {}, 1)
    return root, lines


def edit_tool(session: Session, tool_id: str, values: Mapping[str, Any], by: str) -> list[str]:
    """Set a tool's editable settings from ``values`` (setting name -> form text).

    Raises :class:`ToolEditError` naming each bad setting, or :class:`LookupError` for an
    unknown tool.  Returns the diff lines (empty when nothing changed)."""
    tool = session.get(Tool, tool_id)
    if tool is None:
        raise LookupError(f"no tool {tool_id}")
    problems: dict[str, str] = {}
    training = values.get("training") or None
    if training and session.get(Training, training) is None:
        problems["training"] = f"unknown training {training!r}"
    root, lines = _entry(tool, values)
    parser = _Parser("Admin")
    root_list = _Mapping({"tools": [root]})
    root_list.line, root_list.key_lines = 0, {}
    specs = parser.tools(root_list)
    for line, text in parser.problems.items:
        reason = text.split(": ", 1)[1] if ": " in text else text
        problems.setdefault(lines.get(line, "tool"), reason)
    if problems:
        raise ToolEditError(problems)
    # _Apply.tools reads only the tool's own row; loading every stored row would cost
    # more than the edit (bench/admin.py)
    db = _Stored(**{f.name: {} for f in fields(_Stored)})
    db.tools[tool.id] = tool
    apply = _Apply(session, Shop("Admin", tools=(specs[0],)), db, by=by)
    apply.tools()
    if apply.changes:
        bump_shop_version(session)
    session.flush()
    return apply.changes


def end_override(session: Session, tool_id: str, setting: str) -> list[str]:
    """Give a tool setting back to the shop file: its value goes back to what the file
    said at the override (or the last load), and later loads set it again."""
    tool = session.get(Tool, tool_id)
    if tool is None:
        raise LookupError(f"no tool {tool_id}")
    overrides = tool_overrides(tool)
    found = overrides.pop(setting, None)
    if found is None:
        raise ToolEditError({setting: f"{setting} of {tool_id} is not overridden"})
    changes = [f"= tool {tool_id}: {setting} given back to the shop file"]
    set_tool_overrides(tool, overrides)
    if "file" in found and found["file"] != stored(tool, setting):
        column, key = _WHERE[setting]
        old = stored(tool, setting)
        if column:
            setattr(tool, column, {**(getattr(tool, column) or {}), key: found["file"]})
        else:
            setattr(tool, key, found["file"])
        changes.append(
            f"~ tool {tool_id}: {setting} {shown(setting, old)} -> {shown(setting, found['file'])}"
        )
        bump_shop_version(session)
    session.flush()
    return changes


def find_tool(session: Session, tool_id: str) -> Tool | None:
    """The tool Admin's tool page edits (:func:`form_values`, :func:`edit_tool`), or None."""
    return session.get(Tool, tool_id)


def set_lock(session: Session, tool_id: str, locked: bool) -> str:
    """Lock a tool for maintenance, or unlock it (``peershop tool lock``, Admin's Lock
    button); returns the tool's name.  A running hub ends its session and tells its
    devices at the shop version's next check."""
    tool = session.get(Tool, tool_id)
    if tool is None:
        raise ToolEditError({"tool": f"no tool with id {tool_id!r}"})
    tool.locked = locked
    bump_shop_version(session)
    return tool.name


# --- trainings --------------------------------------------------------------------------


@dataclass(frozen=True)
class Holder:
    """A member's grant of a training, as Admin lists it."""

    training: str
    handle: str
    name: str
    granted_by: str | None
    granted_at: datetime
    expires_at: datetime | None
    admin: str | None  # the coordinator whose Admin change a load keeps (an override)

    def valid(self, now: datetime) -> bool:
        return self.expires_at is None or now < self.expires_at


def holders(session: Session) -> list[Holder]:
    """Every training grant, by training and handle."""
    handles = {i: h for i, h in session.execute(select(Member.id, Member.handle))}
    marked = grant_overrides(session)
    rows = session.execute(
        select(TrainingGrant, Member)
        .join(Member, Member.id == TrainingGrant.member_id)
        .order_by(TrainingGrant.training_id, Member.handle)
    )
    return [
        Holder(
            g.training_id,
            m.handle,
            m.name,
            handles.get(g.granted_by_id) if g.granted_by_id else None,
            g.granted_at,
            g.expires_at,
            handles.get(marked[g.id], "?") if g.id in marked else None,
        )
        for g, m in rows
    ]


def granting_member(session: Session, member_id: int | None) -> Member | None:
    """The member who grants or revokes a training in Admin (a coordinator token
    belongs to nobody: None)."""
    return session.get(Member, member_id) if member_id else None


def _grant_row(session: Session, training: str, handle: str) -> tuple[Member, TrainingGrant | None]:
    problems = {}
    if session.get(Training, training) is None:
        problems["training"] = f"unknown training {training!r}"
    member = session.scalar(select(Member).where(Member.handle == handle))
    if member is None:
        problems["member"] = f"unknown member {handle!r}"
    if problems:
        raise ToolEditError(problems)
    assert member is not None
    grant = session.scalar(
        select(TrainingGrant).where(
            TrainingGrant.training_id == training, TrainingGrant.member_id == member.id
        )
    )
    return member, grant


def grant_training(
    session: Session,
    training: str,
    handle: str,
    by: Member,
    expires: datetime | None,
    now: datetime | None = None,
) -> list[str]:
    """Grant ``training`` to ``handle``, or renew it to ``expires`` (None: never)."""
    now = now or datetime.now(UTC)
    if expires is not None and expires <= now:
        raise ToolEditError({"expires": "the expiry must be in the future"})
    member, grant = _grant_row(session, training, handle)
    until = f", until {_fmt(expires)}" if expires else ""
    if grant is None:
        grant = TrainingGrant(
            training_id=training,
            member_id=member.id,
            granted_by_id=by.id,
            granted_at=now,
            expires_at=expires,
        )
        session.add(grant)
        line = f"+ training grant {training}: {handle} (by {by.handle}{until})"
    else:
        old = grant.expires_at
        if old is not None and old <= now:
            line = f"+ training grant {training}: {handle} (by {by.handle}{until}; had ended)"
        else:
            line = f"~ training grant {training}: {handle}: expires {_fmt(old)} -> {_fmt(expires)}"
        grant.granted_by_id, grant.granted_at, grant.expires_at = by.id, now, expires
    session.flush()
    mark_grant(session, grant.id, by.id)
    bump_shop_version(session)
    return [line]


def revoke_training(
    session: Session, training: str, handle: str, by: Member, now: datetime | None = None
) -> list[str]:
    """End ``handle``'s ``training`` now.  The grant's row stays, ended, so Admin shows
    who ended it and a shop-file load does not grant it again (an override)."""
    now = (now or datetime.now(UTC)).replace(microsecond=0)  # whole seconds, ended already
    _member, grant = _grant_row(session, training, handle)
    if grant is None or (grant.expires_at is not None and grant.expires_at <= now):
        raise ToolEditError({"member": f"{handle} does not hold {training}"})
    grant.expires_at = now
    mark_grant(session, grant.id, by.id)
    bump_shop_version(session)
    session.flush()
    return [f"- training grant {training}: {handle} (revoked by {by.handle})"]


def end_grant_override(session: Session, training: str, handle: str) -> list[str]:
    """Give a grant back to the shop file: the next load sets it as the file says."""
    _member, grant = _grant_row(session, training, handle)
    if grant is None or not unmark_grants(session, [grant.id]):
        raise ToolEditError({"member": f"{handle}'s {training} was not set in Admin"})
    return [f"= training grant {training}: {handle} given back to the shop file"]


def _binding_item(b: Any) -> Any:
    """A stored binding as the shop file writes it: a device id, or a plug's mapping."""
    if b.kind not in PLUG_KINDS:
        return b.ref  # a device
    item: dict[str, Any] = {b.kind: b.ref}
    if b.channel:
        item[PLUG_KINDS[b.kind].channel_key] = b.channel
    return item | dict(b.options or {})
