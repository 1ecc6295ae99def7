"""Applying a checked shop file (hub/shopfile/parse.py) to the database: ``peershop load``.

An upsert, never a delete: rows the file does not mention stay as they are, so loading
twice changes nothing the second time.  A tool listed in the file gets exactly the
settings and devices the file gives it (keys left out take their defaults); a badge,
training grant or device is added or moved, never removed.  A task's ``weight`` is the
exception that moves by itself (at period close): when the file leaves it out, an
existing task keeps its current weight.  References the file does not resolve itself
resolve in the database; :func:`apply_shop` checks those before it writes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.admin.credentials import plug_conflict, plug_logins
from hub.config import DEFAULT_SITE
from hub.contract.messages import DISCOVERY_PREFIX
from hub.peerconomy import economy as pc
from hub.rules.access import TRAINERS
from hub.rules.sessions import tool_rules
from hub.shopfile.entries import _Problems
from hub.shopfile.spec import (
    BindingSpec,
    Shop,
    ToolSpec,
    _fmt,
    _fmt_duration,
)
from hub.store.models import (
    Badge,
    Device,
    Member,
    ParticipationFactor,
    Project,
    ProjectRules,
    Station,
    Task,
    Tool,
    ToolBinding,
    Training,
    TrainingGrant,
)
from hub.store.overrides import (
    grant_overrides,
    set_tool_overrides,
    stamp,
    tool_overrides,
    unmark_grants,
)
from hub.store.shop_store import bump_shop_version

# ---------------------------------------------------------------------------------------
# applying


@dataclass
class _Stored:
    """The rows a shop file can touch, as the database has them now."""

    projects: dict[str, Project]
    trainings: dict[str, Training]
    members: dict[str, Member]
    handles: dict[int, str]
    badges: dict[str, Badge]
    grants: dict[tuple[str, int], TrainingGrant]
    tools: dict[str, Tool]
    bindings: dict[BindingSpec, ToolBinding]
    tasks: dict[str, Task]
    stations: dict[str, Station]
    devices: dict[str, Device]
    factors: dict[int, ParticipationFactor]
    rules: dict[str, ProjectRules]

    @classmethod
    def load(cls, session: Session) -> _Stored:
        def rows(model: Any) -> list[Any]:
            return list(session.scalars(select(model)))

        members = {m.handle: m for m in rows(Member)}
        return cls(
            projects={p.id: p for p in rows(Project)},
            trainings={t.id: t for t in rows(Training)},
            members=members,
            handles={m.id: h for h, m in members.items()},
            badges={b.uid: b for b in rows(Badge)},
            grants={(g.training_id, g.member_id): g for g in rows(TrainingGrant)},
            tools={t.id: t for t in rows(Tool)},
            bindings={
                BindingSpec(b.kind, b.ref, b.channel, tuple(sorted((b.options or {}).items()))): b
                for b in rows(ToolBinding)
            },
            tasks={t.id: t for t in rows(Task)},
            stations={s.device_id: s for s in rows(Station)},
            devices={d.id: d for d in rows(Device)},
            factors={f.member_id: f for f in rows(ParticipationFactor)},
            rules={r.project_id: r for r in rows(ProjectRules)},
        )


def _check_references(shop: Shop, db: _Stored) -> None:
    """What the file names but does not define must be in the database."""
    problems = _Problems(shop.source)
    projects = {p.id for p in shop.projects} | set(db.projects)
    trainings = {t.id for t in shop.trainings} | set(db.trainings)
    tools = {t.id for t in shop.tools} | set(db.tools)
    roles = {h: tuple(m.roles or ()) for h, m in db.members.items()}
    roles.update({m.handle: m.roles for m in shop.members})

    def need(spec: Any, key: str, value: str | None, known: Iterable[str], what: str) -> bool:
        if value is None or value in known:
            return True
        problems.add(spec.at(key), spec.label, f"unknown {what} {value!r}")
        return False

    for t in shop.tools:
        need(t, "project", t.project, projects, "project")
        need(t, "training", t.training, trainings, "training")
    for task in shop.tasks:
        need(task, "project", task.project, projects, "project")
        need(task, "resource", task.resource, tools, "tool")
    for training in shop.trainings:
        for g in training.granted:
            need(g, "member", g.member, roles, "member")
            if need(g, "by", g.by, roles, "member") and not TRAINERS & set(roles[g.by]):
                problems.add(
                    g.at("by"),
                    g.label,
                    f"{g.by} is not a trainer or coordinator, so cannot grant {training.id}",
                )

    # The same device cannot be a tool's reader and a station, whichever side is stored.
    listed = {t.id for t in shop.tools}
    file_bound = {b.ref: t for t in shop.tools for b in t.bindings if b.kind == "device"}
    file_stations = {s.device for s in shop.stations}
    for s in shop.stations:
        b = db.bindings.get(BindingSpec("device", s.device))
        if b is not None and b.tool_id not in listed:
            problems.add(
                s.line, s.label, f"device {s.device!r} is bound to tool {b.tool_id} (stored)"
            )
    for ref, t in file_bound.items():
        station = db.stations.get(ref)
        if station is not None and ref not in file_stations:
            problems.add(
                t.at("devices"), t.label, f"device {ref!r} is a {station.kind} station (stored)"
            )
    for ident in shop.devices():
        device = db.devices.get(ident)
        if device is not None and device.approval == "revoked":
            station = next((s for s in shop.stations if s.device == ident), None)
            line, label = (
                (station.line, station.label)
                if station is not None
                else (file_bound[ident].at("devices"), file_bound[ident].label)
            )
            problems.add(
                line,
                label,
                f"device {ident!r} was revoked; a file never approves a revoked device again "
                "(remove it here, or approve it on the hub)",
            )
    problems.raise_if_any()


def _check_plugs(
    shop: Shop, db: _Stored, logins: list[tuple[str, str, str]], discovery_prefix: str
) -> None:
    """A plug's topic may not reach a reserved tree or another plug's (docs/device-protocol.md):
    the hub would take that tree's messages for the plug's, and the plug's login (if it
    has the same topic) may write it."""
    problems = _Problems(shop.source)
    listed = {t.id for t in shop.tools}
    bound = [(t.id, b.kind, b.ref) for t in shop.tools for b in t.bindings if b.kind != "device"]
    bound += [
        (row.tool_id, spec.kind, spec.ref)
        for spec, row in db.bindings.items()
        if spec.kind != "device" and row.tool_id not in listed
    ]
    for t in shop.tools:
        for b in t.bindings:
            if b.kind == "device":
                continue
            problem = plug_conflict(b.kind, b.ref, discovery_prefix, logins=logins, bound=bound)
            if problem is not None:
                problems.add(t.at("devices"), t.label, problem)
    problems.raise_if_any()


def _at_site(site: str) -> str:
    """`` at site north`` in a diff line; nothing for the default site (one-site shops)."""
    return "" if site == DEFAULT_SITE else f" at site {site}"


# A tool's settings: (name in the file, column, key in the column's JSON, is a duration).
TOOL_SETTINGS = (
    ("power.off_w", "power", "off_w", False),
    ("power.idle_w", "power", "idle_w", False),
    ("power.busy_w", "power", "busy_w", False),
    ("power.hysteresis_w", "power", "hysteresis_w", False),
    ("power.idle_timeout", "power", "idle_timeout", True),
    ("power.max_duration", "options", "max_duration", True),
    ("hours", "options", "hours", False),
    ("no_cut_while_busy", "options", "no_cut_while_busy", False),
    ("end_on_stop", "options", "end_on_stop", False),
    ("units", "options", "units", False),
    ("scarce.enforce", "options", "enforce_reservations", False),
    ("scarce.slots", "scarce", "slots", False),
    ("scarce.per_slot", "scarce", "per_slot", True),
)

# What a tool's setting was before the shop file stored it (rows from older versions).
SETTING_DEFAULTS = {"units": "hours"}


class _Apply:
    """Writes a checked shop into the rows.  ``by`` is None for a shop-file load, which
    keeps Admin's overrides (hub/store/overrides.py); an Admin edit
    (hub/shopfile/tool_admin.py) passes
    the coordinator's handle, and what it changes becomes an override."""

    def __init__(self, session: Session, shop: Shop, db: _Stored, by: str | None = None):
        self.session = session
        self.shop = shop
        self.db = db
        self.by = by
        self.changes: list[str] = []

    def note(self, line: str) -> None:
        self.changes.append(line)

    def set(self, row: Any, attr: str, value: Any, what: str, shown: str | None = None) -> None:
        old = getattr(row, attr)
        if old != value:
            self.note(f"~ {what}: {shown or attr} {_fmt(old)} -> {_fmt(value)}")
            setattr(row, attr, value)

    def member_id(self, handle: str) -> int:
        return self.db.members[handle].id

    def projects(self) -> None:
        for p in self.shop.projects:
            row = self.db.projects.get(p.id)
            if row is None:
                row = Project(id=p.id, name=p.name, model=p.model)
                self.session.add(row)
                self.db.projects[p.id] = row
                self.note(f"+ project {p.id} ({p.name}, {p.model})")
                continue
            self.set(row, "name", p.name, f"project {p.id}")
            self.set(row, "model", p.model, f"project {p.id}")

    def project_rules(self) -> None:
        """Rule (a)'s settings: a project with all defaults has no row."""
        for p in self.shop.projects:
            row = self.db.rules.get(p.id)
            if row is None:
                if p.has_default_rules():
                    continue
                row = ProjectRules(project_id=p.id, gain=pc.K, weight_min=pc.LO, weight_max=pc.HI)
                row.weight_mode = pc.WeightMode.CLOSE
                self.session.add(row)
                self.db.rules[p.id] = row
            what = f"project {p.id}"
            self.set(row, "gain", p.gain, what)
            self.set(row, "weight_min", p.weight_min, what)
            self.set(row, "weight_max", p.weight_max, what)
            self.set(row, "weight_mode", p.weight_mode, what)

    def trainings(self) -> None:
        for t in self.shop.trainings:
            row = self.db.trainings.get(t.id)
            if row is None:
                row = Training(id=t.id, name=t.name)
                self.session.add(row)
                self.db.trainings[t.id] = row
                self.note(f"+ training {t.id} ({t.name})")
                continue
            self.set(row, "name", t.name, f"training {t.id}")

    def members(self) -> None:
        for m in self.shop.members:
            row = self.db.members.get(m.handle)
            if row is None:
                row = Member(handle=m.handle, name=m.name, roles=list(m.roles))
                self.session.add(row)
                self.db.members[m.handle] = row
                roles = "" if m.roles == ("member",) else f" {_fmt(m.roles)}"
                self.note(f"+ member {m.handle} ({m.name}){roles}")
                continue
            self.set(row, "name", m.name, f"member {m.handle}")
            self.set(row, "roles", list(m.roles), f"member {m.handle}")
        self.session.flush()  # member ids for badges and grants
        self.db.handles = {m.id: h for h, m in self.db.members.items()}

    def factors(self) -> None:
        """A participation factor other than 1 is a row; factor 1 is no row."""
        for m in self.shop.members:
            member_id = self.member_id(m.handle)
            row = self.db.factors.get(member_id)
            old = Decimal(1) if row is None else row.factor
            if old == m.factor:
                continue
            self.note(f"~ member {m.handle}: factor {_fmt(old)} -> {_fmt(m.factor)}")
            if m.factor == 1:
                assert row is not None
                self.session.delete(row)
                del self.db.factors[member_id]
            elif row is None:
                row = ParticipationFactor(member_id=member_id, factor=m.factor)
                self.session.add(row)
                self.db.factors[member_id] = row
            else:
                row.factor = m.factor

    def badges(self) -> None:
        for m in self.shop.members:
            member_id = self.member_id(m.handle)
            for uid in m.badges:
                row = self.db.badges.get(uid)
                if row is None:
                    row = Badge(uid=uid, member_id=member_id)
                    self.session.add(row)
                    self.db.badges[uid] = row
                    self.note(f"+ badge {uid} -> {m.handle}")
                elif row.member_id != member_id:
                    self.note(f"~ badge {uid}: {self.db.handles[row.member_id]} -> {m.handle}")
                    row.member_id = member_id

    def grants(self) -> None:
        marked = grant_overrides(self.session)  # grants set in Admin (hub/store/overrides.py)
        ended: list[int] = []  # overrides the file now agrees with
        for t in self.shop.trainings:
            for g in t.granted:
                member_id, by_id = self.member_id(g.member), self.member_id(g.by)
                row = self.db.grants.get((t.id, member_id))
                if row is not None and row.id in marked:
                    what = f"training grant {t.id}: {g.member}"
                    if row.expires_at != g.expires:
                        admin = self.db.handles.get(marked[row.id], "?")
                        self.note(
                            f"! {what}: expires {_fmt(row.expires_at)} kept (set in Admin by "
                            f"{admin}); the file says {_fmt(g.expires)}"
                        )
                        continue
                    ended.append(row.id)
                    self.note(
                        f"= {what}: expires {_fmt(g.expires)} is in the file now; override ends"
                    )
                if row is None:
                    row = TrainingGrant(
                        training_id=t.id,
                        member_id=member_id,
                        granted_by_id=by_id,
                        expires_at=g.expires,
                    )
                    self.session.add(row)
                    self.db.grants[(t.id, member_id)] = row
                    until = f", until {_fmt(g.expires)}" if g.expires else ""
                    self.note(f"+ training grant {t.id}: {g.member} (by {g.by}{until})")
                    continue
                what = f"training grant {t.id}: {g.member}"
                if row.granted_by_id != by_id:
                    old = self.db.handles.get(row.granted_by_id)  # type: ignore[arg-type]
                    self.note(f"~ {what}: by {_fmt(old)} -> {g.by}")
                    row.granted_by_id = by_id
                self.set(row, "expires_at", g.expires, what, "expires")
        unmark_grants(self.session, ended)

    def devices(self) -> None:
        for ident in self.shop.devices():
            row = self.db.devices.get(ident)
            if row is None:
                row = Device(id=ident, approval="approved")
                self.session.add(row)
                self.db.devices[ident] = row
                self.note(f"+ device {ident} (approved)")
            elif row.approval != "approved":
                self.note(f"~ device {ident}: {row.approval} -> approved")
                row.approval = "approved"

    def tools(self) -> None:
        for t in self.shop.tools:
            row = self.db.tools.get(t.id)
            if row is None:
                row = Tool(
                    id=t.id,
                    name=t.name,
                    project_id=t.project,
                    policy=t.policy,
                    training_id=t.training,
                    power=dict(t.power),
                    options=dict(t.options),
                    scarce=None if t.scarce is None else dict(t.scarce),
                    locked=False,
                    site=t.site,
                )
                self.session.add(row)
                self.db.tools[t.id] = row
                self.note(f"+ tool {t.id} ({t.name}, {t.policy}{_at_site(t.site)})")
                continue
            what = f"tool {t.id}"
            overrides = tool_overrides(row)
            training = self.kept(t.id, overrides, "training", t.training, row.training_id)
            policy = self.kept(t.id, overrides, "policy", t.policy, row.policy)
            self.set(row, "name", t.name, what)
            self.set(row, "project_id", t.project, what, "project")
            self.set(row, "training_id", training, what, "training")
            self.set(row, "policy", policy, what)
            self.set(row, "site", t.site, what)
            self.settings(row, t, overrides)
            set_tool_overrides(row, overrides)
            if self.by is None and any(line.startswith(f"! {what}:") for line in self.changes):
                self.runnable(row, t)

    def kept(
        self,
        tool_id: str,
        overrides: dict[str, dict[str, Any]],
        shown: str,
        value: Any,
        current: Any,
        fmt: Any = _fmt,
    ) -> Any:
        """The value to store for a tool setting the file (or Admin) gives as ``value``.

        A load keeps a setting overridden in Admin and says so (``!``), until the file
        gives the same value (``=``: the override ends).  An Admin edit that changes a
        setting records the override, with the value it replaced as the file's."""
        found = overrides.get(shown)
        if self.by is not None:
            if value != current:
                if found is not None and "file" in found and found["file"] == value:
                    del overrides[shown]  # set back to what the file says: no override
                else:
                    was = found["file"] if found is not None and "file" in found else current
                    overrides[shown] = {**stamp(self.by), "file": was}
            return value
        if found is None:
            return value
        if value == current:
            del overrides[shown]
            self.note(f"= tool {tool_id}: {shown} {fmt(value)} is in the file now; override ends")
            return value
        found["file"] = value
        self.note(
            f"! tool {tool_id}: {shown} {fmt(current)} kept (set in Admin by {found['by']} "
            f"at {found['at']}); the file says {fmt(value)}"
        )
        return current

    def runnable(self, row: Tool, t: ToolSpec) -> None:
        """Kept overrides and the file's new values must still make a tool the hub runs."""
        try:
            tool_rules(row.policy, row.power or {}, row.options or {})
        except ValueError as exc:
            problems = _Problems(self.shop.source)
            problems.add(
                t.line,
                t.label,
                f"with the settings kept from Admin, {exc}: change the file, or end the "
                "override in Admin",
            )
            problems.raise_if_any()

    def settings(self, row: Tool, t: ToolSpec, overrides: dict[str, dict[str, Any]]) -> None:
        """Power, options and scarce as the file gives them; keys the file does not know
        (set by the hub or a later version) are kept, and so are Admin's overrides."""
        new = {
            "power": {**(row.power or {}), **t.power},
            "options": {**(row.options or {}), **t.options},
            "scarce": None if t.scarce is None else {**(row.scarce or {}), **t.scarce},
        }
        old = {"power": row.power or {}, "options": row.options or {}, "scarce": row.scarce}
        if old["scarce"] is None and new["scarce"] is not None:
            s = new["scarce"]
            self.note(
                f"~ tool {t.id}: scarce none -> {_fmt(s['slots'])} "
                f"per {_fmt_duration(s['per_slot'])}"
            )
        elif old["scarce"] is not None and new["scarce"] is None:
            self.note(f"~ tool {t.id}: scarce {_fmt(old['scarce'].get('slots'))} -> none")
        for shown, column, key, duration in TOOL_SETTINGS:
            if old[column] is None or new[column] is None:
                continue  # scarce added or removed, said above
            default = SETTING_DEFAULTS.get(key)  # a key stored before the file had it
            before, after = old[column].get(key, default), new[column].get(key, default)
            f = _fmt_duration if duration else _fmt
            after = self.kept(t.id, overrides, shown, after, before, f)
            new[column][key] = after
            if before != after:
                self.note(f"~ tool {t.id}: {shown} {f(before)} -> {f(after)}")
        for column in ("power", "options", "scarce"):
            if old[column] != new[column]:
                setattr(row, column, new[column])  # a new object, so the change is seen

    def bindings(self) -> None:
        wanted = {b: t for t in self.shop.tools for b in t.bindings}
        listed = {t.id for t in self.shop.tools}
        for b, row in list(self.db.bindings.items()):
            if b in wanted:
                if row.tool_id != wanted[b].id:
                    self.note(f"~ binding {b}: {row.tool_id} -> {wanted[b].id}")
                    row.tool_id = wanted[b].id
                new = next(w for w in wanted if w == b).options
                if (row.options or {}) != dict(new):
                    self.note(f"~ binding {b}: {dict(new) or 'no options'}")
                    row.options = dict(new) or None
            elif row.tool_id in listed:
                self.note(f"- binding {row.tool_id}: {b}")
                self.session.delete(row)
                del self.db.bindings[b]
        for b, t in wanted.items():
            if b not in self.db.bindings:
                row = ToolBinding(
                    tool_id=t.id,
                    kind=b.kind,
                    ref=b.ref,
                    channel=b.channel,
                    options=dict(b.options) or None,
                )
                self.session.add(row)
                self.db.bindings[b] = row
                self.note(f"+ binding {t.id}: {b}")

    def tasks(self) -> None:
        for t in self.shop.tasks:
            row = self.db.tasks.get(t.id)
            if row is None:
                weight = pc.START_WEIGHT if t.weight is None else t.weight
                row = Task(
                    id=t.id,
                    title=t.title,
                    project_id=t.project,
                    slots=t.slots,
                    hours=t.hours,
                    weight=weight,
                    resource=t.resource,
                )
                self.session.add(row)
                self.db.tasks[t.id] = row
                self.note(
                    f"+ task {t.id} ({t.title}, {t.slots} x {_fmt(t.hours)} h at {_fmt(weight)})"
                )
                continue
            what = f"task {t.id}"
            self.set(row, "title", t.title, what)
            self.set(row, "project_id", t.project, what, "project")
            self.set(row, "slots", t.slots, what)
            self.set(row, "hours", t.hours, what)
            if t.weight is not None:
                self.set(row, "weight", t.weight, what)
            self.set(row, "resource", t.resource, what)

    def stations(self) -> None:
        for s in self.shop.stations:
            row = self.db.stations.get(s.device)
            if row is None:
                row = Station(device_id=s.device, kind=s.kind, site=s.site)
                self.session.add(row)
                self.db.stations[s.device] = row
                self.note(f"+ station {s.device} ({s.kind}{_at_site(s.site)})")
                continue
            if row.kind != s.kind:
                self.note(f"~ station {s.device}: {row.kind} -> {s.kind}")
                row.kind = s.kind
            self.set(row, "site", s.site, f"station {s.device}")

    def run(self) -> list[str]:
        # Flushed in the order of the foreign keys: the models have no relationships
        # between these tables for the unit of work to sort by.
        self.projects()
        self.trainings()
        self.session.flush()
        self.project_rules()
        self.members()
        self.factors()
        self.badges()
        self.grants()
        self.devices()
        self.session.flush()
        self.tools()
        self.session.flush()
        self.bindings()
        self.tasks()
        self.stations()
        self.session.flush()
        return self.changes


def apply_shop(
    session: Session, shop: Shop, *, discovery_prefix: str = DISCOVERY_PREFIX
) -> list[str]:
    """Upsert ``shop`` in the caller's transaction; returns the changes as diff lines.

    References the file does not define are checked against the database first, and so
    are its plugs' topics (none may overlap a reserved tree such as ``peershop/`` or
    ``discovery_prefix/``, or another plug's), so a :class:`ShopFileError` leaves nothing
    written.  Lines look like ``+ member ada (Ada L.)``
    (added), ``~ tool laser-1: policy tap -> timeout`` (changed) and
    ``- binding laser-1: device old-node`` (a listed tool's device the file no longer has).
    A load that changes anything bumps the shop version, so a running hub reloads.
    A value set in Admin is kept (``! tool laser-1: policy timeout kept (set in Admin by
    cora at …); the file says tap``) until the file says the same (``= …``): see
    hub/store/overrides.py.  ``!`` lines report and change nothing (:func:`is_change`).
    """
    db = _Stored.load(session)
    _check_references(shop, db)
    _check_plugs(shop, db, plug_logins(session), discovery_prefix)
    changes = _Apply(session, shop, db).run()
    if any(is_change(line) for line in changes):
        bump_shop_version(session)  # a running hub reloads members, tools and stations
    return changes


def is_change(line: str) -> bool:
    """A diff line of :func:`apply_shop` that changed something (not a kept override)."""
    return not line.startswith("!")
