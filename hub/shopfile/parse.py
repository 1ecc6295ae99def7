"""The shop file (docs/shop-file.md): ``peershop load shop.yaml``.

A coordinator keeps the shop's inventory in one YAML file: projects, members and their
badges, trainings and who holds them, tools with their devices and session settings,
tasks and stations.  :func:`parse_shop_file` reads and checks the whole file before
anything is written; :func:`apply_shop` upserts it into the database and returns the
changes as diff lines.  docs/shop-file.md is the reference for every key.

Checking.  Every problem is a :class:`~hub.errors.ShopFileError`; all problems of a file
are reported together (up to :data:`MAX_ERRORS`), one per line, each as
``FILE:LINE: entry (id): reason``, so a coordinator fixes the file in one go.  A typo in
a key is an error, not a silently ignored setting.  References (a tool's project and
training, a grant's members, a task's resource) resolve in the file or, when the file
does not name them, in the database; :func:`apply_shop` checks those before it writes.

Applying.  An upsert, never a delete: rows the file does not mention stay as they are,
so loading twice changes nothing the second time.  A tool listed in the file gets
exactly the settings and devices the file gives it (keys left out take their defaults);
a badge, training grant or device is added or moved, never removed.  A task's ``weight``
is the exception that moves by itself (at period close): when the file leaves it out, an
existing task keeps its current weight.

>>> shop = parse_shop('''
... members:
...   - {handle: ada, name: Ada L., badges: ["04a1b2c3"]}
...   - {handle: bob, name: Bob K., roles: [member, lead]}
... ''', "shop.yaml")
Traceback (most recent call last):
...
hub.errors.ShopFileError: shop.yaml: 1 problem, nothing was loaded:
shop.yaml:4: members[1] (bob): unknown role 'lead' (roles are member, trainer, coordinator)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from hub.checks import show
from hub.config import DEFAULT_SITE, SITE_ID
from hub.contract.messages import DEVICE_ID, normalize_uid
from hub.errors import ContractError, ShopFileError
from hub.peerconomy import economy as pc
from hub.plugs import KINDS as PLUG_KINDS
from hub.rules.access import TRAINERS, Role
from hub.rules.sessions import POLICIES, Policy
from hub.shopfile.entries import (
    ShopLoader,
    _Entry,
    _expiry,
    _Mapping,
    _Problems,
)
from hub.shopfile.spec import (
    _RULES,
    BINDING_KINDS,
    CHANNEL_LAST,
    DEFAULT_MODEL,
    DEFAULT_PER_SLOT,
    PLUG_REF,
    ROLES,
    SLUG,
    STATION_KINDS,
    TOOL_ID,
    TOP_KEYS,
    UNITS,
    BindingSpec,
    GrantSpec,
    MemberSpec,
    ProjectSpec,
    Shop,
    StationSpec,
    TaskSpec,
    ToolSpec,
    TrainingSpec,
    _describe,
    _fmt,
    _seconds,
)


class _Parser:
    def __init__(self, source: str):
        self.source = source
        self.problems = _Problems(source)

    def section(self, data: _Mapping, name: str) -> Iterator[tuple[int, _Mapping]]:
        value = data.get(name)
        if value is None:
            return
        if not isinstance(value, list):
            self.problems.add(data.key_lines.get(name, 1), name, "must be a list of entries")
            return
        for i, item in enumerate(value):
            if not isinstance(item, _Mapping):
                line = value.item_lines[i]
                self.problems.add(line, f"{name}[{i}]", f"must be a mapping, not {show(item)}")
                continue
            yield i, item

    def entry(
        self, data: _Mapping, label: str, required: tuple[str, ...], optional: tuple[str, ...]
    ) -> _Entry:
        """An entry whose first required key is its id (``id``, ``handle``, ``device``)."""
        return _Entry(self.problems, data, label, required, optional, id_key=required[0])

    # --- sections

    def projects(self, data: _Mapping) -> list[ProjectSpec]:
        out = []
        for i, item in self.section(data, "projects"):
            e = self.entry(
                item,
                f"projects[{i}]",
                ("id",),
                ("name", "model", "gain", "weight_min", "weight_max", "weight_mode"),
            )
            ident = e.ident("id", SLUG, "project id")
            name = e.text("name", default=ident)
            model = e.choice("model", pc.MODELS, DEFAULT_MODEL)
            gain = e.decimal("gain", pc.K)
            if gain is not None and not 0 < gain < 1:
                e.error(f"gain must be more than 0 and less than 1, not {_fmt(gain)}", "gain")
            lo = e.decimal("weight_min", pc.LO)
            if lo is not None and lo <= 0:
                e.error(f"weight_min must be more than 0, not {_fmt(lo)}", "weight_min")
            hi = e.decimal("weight_max", pc.HI)
            if lo is not None and hi is not None and hi < lo:
                e.error(
                    f"weight_max {_fmt(hi)} is below weight_min {_fmt(lo)}",
                    "weight_max",
                )
            mode = e.choice("weight_mode", pc.WEIGHT_MODES, pc.WeightMode.CLOSE)
            out.append(
                ProjectSpec(
                    ident,
                    name,
                    pc.Model(model or DEFAULT_MODEL),
                    gain if gain is not None else pc.K,
                    lo if lo is not None else pc.LO,
                    hi if hi is not None else pc.HI,
                    pc.WeightMode(mode or pc.WeightMode.CLOSE),
                    **e.where(),
                )
            )
        return out

    def members(self, data: _Mapping) -> list[MemberSpec]:
        out = []
        for i, item in self.section(data, "members"):
            e = self.entry(item, f"members[{i}]", ("handle", "name"), ("roles", "badges", "factor"))
            handle = e.ident("handle", SLUG, "handle")
            name = e.text("name")
            roles: list[str] = []
            items = e.items("roles") if "roles" in item else [(e.line, Role.MEMBER)]
            for line, role in items:
                if role not in ROLES:
                    e.error(f"unknown role {show(role)} (roles are {', '.join(ROLES)})", line=line)
                elif role in roles:
                    e.error(f"role {role!r} is listed twice", line=line)
                else:
                    roles.append(role)
            if "roles" in item and not items:
                e.error("roles must not be empty (every member has at least 'member')", "roles")
            badges: list[str] = []
            for line, uid in e.items("badges"):
                if not isinstance(uid, str):
                    e.error(
                        f"badge {show(uid)} must be written in quotes, as hex text "
                        f'such as "04A1B2C3D4E5F6"',
                        line=line,
                    )
                    continue
                try:
                    badges.append(normalize_uid(uid))
                except ContractError:
                    e.error(f"badge {uid!r} is not 4 to 10 bytes of hex", line=line)
            factor = e.decimal("factor", Decimal(1))
            if factor is not None and factor <= 0:
                e.error(f"factor must be more than 0, not {_fmt(factor)}", "factor")
            factor = Decimal(1) if factor is None else factor
            out.append(MemberSpec(handle, name, tuple(roles), tuple(badges), factor, **e.where()))
        return out

    def trainings(self, data: _Mapping) -> list[TrainingSpec]:
        out = []
        for i, item in self.section(data, "trainings"):
            e = self.entry(item, f"trainings[{i}]", ("id",), ("name", "granted"))
            ident = e.ident("id", SLUG, "training id")
            name = e.text("name", default=ident)
            grants = []
            for j, (line, g) in enumerate(e.items("granted")):
                label = f"{e.label} granted[{j}]"
                if not isinstance(g, _Mapping):
                    self.problems.add(line, label, "must be {member: HANDLE, by: HANDLE}")
                    continue
                ge = self.entry(g, label, ("member", "by"), ("expires",))
                member = ge.ident("member", SLUG, "handle")
                by = ge.ident("by", SLUG, "handle")
                expires = _expiry(ge, "expires")
                grants.append(GrantSpec(member, by, expires, **ge.where()))
            seen: set[str] = set()
            for g in grants:
                if g.member in seen:
                    self.problems.add(g.line, g.label, f"{g.member} is granted {ident} twice")
                seen.add(g.member)
            out.append(TrainingSpec(ident, name, tuple(grants), **e.where()))
        return out

    def tools(self, data: _Mapping) -> list[ToolSpec]:
        out = []
        optional = (
            "name",
            "project",
            "devices",
            "policy",
            "training",
            "power",
            "scarce",
            "hours",
            "no_cut_while_busy",
            "end_on_stop",
            "units",
            "site",
        )
        for i, item in self.section(data, "tools"):
            e = self.entry(item, f"tools[{i}]", ("id",), optional)
            ident = e.ident("id", TOOL_ID, "tool id")
            name = e.text("name", default=ident)
            project = e.ident("project", SLUG, "project id")
            training = e.ident("training", SLUG, "training id")
            policy = e.choice("policy", POLICIES, "tap")
            bindings = self.bindings(e)
            power, options = self.power(e, policy)
            scarce = self.scarce(e, options)
            options["hours"] = e.hours("hours")
            options["no_cut_while_busy"] = e.flag("no_cut_while_busy", False)
            options["end_on_stop"] = e.flag("end_on_stop", False)
            options["units"] = e.choice("units", UNITS, "hours")
            if options["units"] == "busy_hours" and not bindings:
                e.error(
                    "units busy_hours needs a device that measures the tool's power "
                    "(devices:); without one no hour is ever busy",
                    "units",
                )
            spec = ToolSpec(
                ident,
                name,
                project,
                training,
                policy,
                tuple(bindings),
                power,
                options,
                scarce,
                e.ident("site", SITE_ID, "site id") or DEFAULT_SITE,
                **e.where(),
            )
            if e.ok:  # the engine's own check, so what is stored is what the hub can run
                try:
                    spec.rules()
                except ValueError as exc:
                    e.error(str(exc), "power" if "power" in item else "policy")
            out.append(spec)
        return out

    def bindings(self, e: _Entry) -> list[BindingSpec]:
        out: list[BindingSpec] = []
        for line, item in e.items("devices"):
            if isinstance(item, str):
                if not DEVICE_ID.fullmatch(item):
                    e.error(
                        f"device {item!r} is not a device id ({_describe(DEVICE_ID)})", line=line
                    )
                    continue
                binding = BindingSpec("device", item)
            elif isinstance(item, dict) and len(kinds := set(item) & set(BINDING_KINDS[1:])) == 1:
                kind = kinds.pop()
                ref = item[kind]
                if not isinstance(ref, str) or not PLUG_REF.fullmatch(ref):
                    e.error(f"{kind} {show(ref)} is not a topic ({_describe(PLUG_REF)})", line=line)
                    continue
                channel = self.channel(e, kind, ref, item, line)
                if channel is None:
                    continue
                options = self.plug_options(e, kind, ref, item, line)
                if options is None:
                    continue
                binding = BindingSpec(kind, ref, channel, options)
            else:
                forms = [_plug_form(k) for k in BINDING_KINDS[1:]]
                e.error(
                    f"devices: {show(item)} is neither a device id nor "
                    f"{', '.join(forms[:-1])} or {forms[-1]}",
                    line=line,
                )
                continue
            if binding in out:
                e.error(f"{binding} is listed twice", line=line)
                continue
            out.append(binding)
        return out

    def channel(
        self, e: _Entry, kind: str, ref: str, item: dict[str, Any], line: int
    ) -> int | None:
        """The channel a plug binding names (0 when it names none); None after an error."""
        plug = PLUG_KINDS[kind]
        keys = (kind, *filter(None, (plug.channel_key,)), *plug.options)
        extra = sorted(str(k) for k in item if k not in keys)
        if extra:
            takes = ", ".join(f"{k}:" for k in keys[:-1])
            e.error(
                f"{kind} {ref}: unknown key {', '.join(extra)} (a {kind} binding takes "
                f"{takes} and {keys[-1]}:)",
                line=line,
            )
            return None
        key = plug.channel_key
        if key is None:
            return 0
        value = item.get(key, 0)
        first = plug.channel_first
        if key in item and (
            isinstance(value, bool)
            or not isinstance(value, int)
            or not first <= value <= CHANNEL_LAST
        ):
            e.error(
                f"{kind} {ref}: {key} must be a whole number from {first} to {CHANNEL_LAST} "
                f"(as the plug numbers it), got {show(value)}",
                line=line,
            )
            return None
        return value

    def plug_options(
        self, e: _Entry, kind: str, ref: str, item: dict[str, Any], line: int
    ) -> tuple[tuple[str, str], ...] | None:
        """The kind's own keys of a plug binding, as sorted pairs; None after an error."""
        plug = PLUG_KINDS[kind]
        options: dict[str, str] = {}
        for key in plug.options:
            value = item.get(key)
            if value is None:
                if key in plug.required_options:
                    e.error(f"{kind} {ref}: {key}: is required", line=line)
                    return None
                continue
            if not isinstance(value, str) or not 0 < len(value) <= 200:
                e.error(f"{kind} {ref}: {key} must be text, got {show(value)}", line=line)
                return None
            options[key] = value
        problem = plug.check_options(options)
        if problem is not None:
            e.error(f"{kind} {ref}: {problem}", line=line)
            return None
        return tuple(sorted(options.items()))

    def power(self, e: _Entry, policy: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
        keys = ("off_w", "idle_w", "busy_w", "hysteresis_w", "idle_timeout", "max_duration")
        p = e.sub("power", (), keys)
        off_w = p.number("off_w", _RULES.off_w) if p else _RULES.off_w
        idle_w = p.number("idle_w") if p else None
        busy_w = p.number("busy_w", _RULES.busy_w) if p else _RULES.busy_w
        hysteresis_w = p.number("hysteresis_w", _RULES.hysteresis) if p else _RULES.hysteresis
        idle_timeout = p.duration("idle_timeout") if p else None
        max_duration = p.duration("max_duration", _RULES.max_duration) if p else _RULES.max_duration
        if off_w is not None and busy_w is not None and off_w > busy_w:
            e.error(f"power.off_w ({off_w}) must not be above power.busy_w ({busy_w})", "power")
        if idle_w is not None and busy_w is not None and idle_w > busy_w:
            e.error(f"power.idle_w ({idle_w}) must not be above power.busy_w ({busy_w})", "power")
        if policy == Policy.TIMEOUT and (p is None or "idle_timeout" not in p.data):
            e.error("policy timeout needs power.idle_timeout (such as 15m)", "policy")
        power = {
            "off_w": off_w,
            "idle_w": idle_w,
            "busy_w": busy_w,
            "hysteresis_w": hysteresis_w,
            "idle_timeout": None if idle_timeout is None else _seconds(idle_timeout),
        }
        options = {"max_duration": None if max_duration is None else _seconds(max_duration)}
        return power, options

    def scarce(self, e: _Entry, options: dict[str, Any]) -> dict[str, Any] | None:
        s = e.sub("scarce", ("slots",), ("per_slot", "enforce"))
        if s is None:
            options["enforce_reservations"] = False
            return None
        slots = s.hours("slots")
        per_slot = s.duration("per_slot", DEFAULT_PER_SLOT)
        if per_slot is not None and per_slot > timedelta(days=1):
            s.error("scarce.per_slot must be at most 24h", "per_slot")
        options["enforce_reservations"] = s.flag("enforce", True)
        return {"slots": slots, "per_slot": None if per_slot is None else _seconds(per_slot)}

    def tasks(self, data: _Mapping) -> list[TaskSpec]:
        out = []
        for i, item in self.section(data, "tasks"):
            e = self.entry(
                item,
                f"tasks[{i}]",
                ("id", "title"),
                ("project", "slots", "hours", "weight", "resource"),
            )
            ident = e.ident("id", SLUG, "task id")
            title = e.text("title", max_len=300)
            project = e.ident("project", SLUG, "project id")
            resource = e.ident("resource", TOOL_ID, "tool id")
            slots = item.get("slots", 1)
            if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
                e.error(f"slots must be a whole number of at least 1, not {show(slots)}", "slots")
            hours = e.decimal("hours", Decimal(1))
            if hours is not None and hours <= 0:
                e.error(f"hours must be more than 0, got {hours}", "hours")
            weight = e.decimal("weight", None)
            if weight is not None and not pc.LO <= weight <= pc.HI:
                e.error(f"weight must be between {pc.LO} and {pc.HI}, got {weight}", "weight")
            out.append(
                TaskSpec(
                    ident,
                    title,
                    project,
                    slots,
                    hours,
                    weight,
                    resource,
                    **e.where(),
                )
            )
        return out

    def stations(self, data: _Mapping) -> list[StationSpec]:
        out = []
        for i, item in self.section(data, "stations"):
            e = self.entry(item, f"stations[{i}]", ("device", "kind"), ("site",))
            device = e.ident("device", DEVICE_ID, "device id")
            kind = e.choice("kind", STATION_KINDS, None)
            site = e.ident("site", SITE_ID, "site id") or DEFAULT_SITE
            out.append(StationSpec(device, kind, site, **e.where()))
        return out

    # --- across entries

    def unique(self, specs: Iterable[Any], attr: str, what: str) -> None:
        first: dict[str, Any] = {}
        for spec in specs:
            key = getattr(spec, attr)
            if key is None:
                continue
            if key in first:
                self.problems.add(
                    spec.line, spec.label, f"{what} {key!r} is already {first[key].label}"
                )
            else:
                first[key] = spec

    def across(self, shop: Shop) -> None:
        for specs, attr, what in (
            (shop.projects, "id", "project id"),
            (shop.members, "handle", "handle"),
            (shop.trainings, "id", "training id"),
            (shop.tools, "id", "tool id"),
            (shop.tasks, "id", "task id"),
            (shop.stations, "device", "station device"),
        ):
            self.unique(specs, attr, what)
        owner: dict[str, MemberSpec] = {}
        for m in shop.members:
            for uid in m.badges:
                if uid in owner:
                    where = "twice" if owner[uid] is m else f"on {owner[uid].label} too"
                    self.problems.add(m.at("badges"), m.label, f"badge {uid} is listed {where}")
                else:
                    owner[uid] = m
        bound: dict[BindingSpec, ToolSpec] = {}
        for t in shop.tools:
            for b in t.bindings:
                if b in bound and bound[b] is not t:
                    self.problems.add(
                        t.at("devices"), t.label, f"{b} is already bound to {bound[b].label}"
                    )
                bound.setdefault(b, t)
        whole = {
            (b.kind, b.ref): t
            for b, t in bound.items()
            # a kind that numbers channels from 1 takes channel 0 for the whole plug
            if b.kind in PLUG_KINDS and PLUG_KINDS[b.kind].channel_first > 0 and not b.channel
        }
        for b, t in bound.items():
            if b.channel and (b.kind, b.ref) in whole:
                self.problems.add(
                    t.at("devices"),
                    t.label,
                    f"{b} is a channel of {b.kind} {b.ref}, which {whole[b.kind, b.ref].label} "
                    "has whole; bind every tool to its own channel",
                )
        for s in shop.stations:
            tool = bound.get(BindingSpec("device", s.device))
            if tool is not None:
                self.problems.add(
                    s.line,
                    s.label,
                    f"device {s.device!r} is bound to {tool.label}; a tool's reader "
                    "cannot be a station too",
                )
        roles = {m.handle: m.roles for m in shop.members}
        for t in shop.trainings:
            for g in t.granted:
                if g.by in roles and not TRAINERS & set(roles[g.by]):
                    self.problems.add(
                        g.at("by"),
                        g.label,
                        f"{g.by} is not a trainer or coordinator, so cannot grant {t.id}",
                    )

    def parse(self, data: Any) -> Shop:
        if data is None:
            self.problems.add(1, "", "the file is empty")
        elif not isinstance(data, _Mapping):
            self.problems.add(1, "", f"must be a mapping with {', '.join(TOP_KEYS)}")
        if self.problems.items:
            self.problems.raise_if_any()
        for key in data:
            if key not in TOP_KEYS:
                self.problems.add(
                    data.key_lines.get(key, 1),
                    "",
                    f"unknown section {key!r} (sections are {', '.join(TOP_KEYS)})",
                )
        shop = Shop(
            self.source,
            tuple(self.projects(data)),
            tuple(self.members(data)),
            tuple(self.trainings(data)),
            tuple(self.tools(data)),
            tuple(self.tasks(data)),
            tuple(self.stations(data)),
        )
        self.across(shop)
        self.problems.raise_if_any()
        return shop


def parse_shop(text: str, source: str = "shop.yaml") -> Shop:
    """Check a shop file's text; any problem is a :class:`ShopFileError` naming the line."""
    loader = ShopLoader(text)
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise ShopFileError(f"{source}:{line}: not valid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise ShopFileError(f"{source}: not valid YAML: {exc}") from None
    finally:
        loader.dispose()
    parser = _Parser(source)
    for line, key in loader.duplicates:
        parser.problems.add(line, "", f"key {key!r} is given twice in one mapping")
    return parser.parse(data)


def parse_shop_file(path: str | Path) -> Shop:
    """Read and check a shop file; nothing is written (see :func:`apply_shop`)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ShopFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ShopFileError(f"{path}: not UTF-8 text") from None
    return parse_shop(text, str(path))


def _plug_form(kind: str) -> str:
    """How the shop file binds a plug of ``kind``: ``{tasmota: TOPIC[, channel: N]}``."""
    plug = PLUG_KINDS[kind]
    keys = [f"{kind}: TOPIC"]
    keys += [f"{k}: X" for k in plug.required_options]
    optional = [f"{k}: N" for k in filter(None, (plug.channel_key,))]
    optional += [f"{k}: X" for k in plug.options if k not in plug.required_options]
    return "{" + ", ".join(keys) + "".join(f"[, {k}]" for k in optional) + "}"
