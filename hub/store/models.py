"""The hub's tables as typed SQLAlchemy 2.0 models.

Times are stored as UTC and always come back timezone-aware; exact quantities (hours,
weights) are stored as decimal text so SQLite and PostgreSQL give back the same
``Decimal``.  Schema changes go through Alembic (``hub/store/migrations``), never ``create_all``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from hub.config import DEFAULT_SITE
from hub.peerconomy.economy import Model, WeightMode
from hub.rules.sessions import Policy

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a real bigint.
BigId = BigInteger().with_variant(Integer, "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """A UTC instant: naive UTC in the database, aware UTC in Python."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where a UTC instant is required")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class ExactDecimal(TypeDecorator[Decimal]):
    """A Decimal kept exactly, as text, on every backend (docs/sharing-models.md, Rounding)."""

    impl = String(40)
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: Any) -> str | None:
        return None if value is None else str(Decimal(value))

    def process_result_value(self, value: str | None, dialect: Any) -> Decimal | None:
        return None if value is None else Decimal(value)


def utcnow() -> datetime:
    return datetime.now(UTC)


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Project(Base):
    """A peer project in the shop (the shop commons, a bike workshop, a repair café)."""

    __tablename__ = "projects"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    model: Mapped[str] = mapped_column(String(32), default=Model.PRODUCTION_EFFORT)


class Member(Base):
    __tablename__ = "members"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    handle: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    roles: Mapped[list[str]] = mapped_column(JSON, default=list)
    suspended: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    badges: Mapped[list[Badge]] = relationship(back_populates="member")


class Badge(Base):
    """A card; ``uid`` is uppercase hex as docs/device-protocol.md stores and compares it."""

    __tablename__ = "badges"
    uid: Mapped[str] = mapped_column(String(20), primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    member: Mapped[Member] = relationship(back_populates="badges")


class Training(Base):
    __tablename__ = "trainings"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))


class TrainingGrant(Base):
    """Who may use tools needing ``training_id``, granted by whom, until when."""

    __tablename__ = "training_grants"
    __table_args__ = (UniqueConstraint("training_id", "member_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    training_id: Mapped[str] = mapped_column(ForeignKey("trainings.id", ondelete="CASCADE"))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    granted_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("members.id", ondelete="SET NULL"), nullable=True
    )
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Tool(Base):
    __tablename__ = "tools"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    project_id: Mapped[str | None] = mapped_column(
        ForeignKey("projects.id", ondelete="SET NULL"), nullable=True
    )
    policy: Mapped[str] = mapped_column(String(20), default=Policy.TAP)
    training_id: Mapped[str | None] = mapped_column(
        ForeignKey("trainings.id", ondelete="SET NULL"), nullable=True
    )
    power: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    scarce: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # Access and session settings beyond power: opening hours, max_duration,
    # enforce_reservations, no_cut_while_busy, end_on_stop (docs/shop-file.md).
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    locked: Mapped[bool] = mapped_column(Boolean, default=False)
    # The site (building) whose hub runs the tool: the hub with this ``site.id``.
    site: Mapped[str] = mapped_column(String(64), default=DEFAULT_SITE, server_default="main")
    bindings: Mapped[list[ToolBinding]] = relationship(
        back_populates="tool", cascade="all, delete-orphan"
    )


class ToolBinding(Base):
    """A device feeding a tool: an MQTT device id, or a plug's topic (``kind`` is
    ``device`` or a kind of hub/plugs/: a Tasmota topic, a Shelly prefix, ...).

    ``channel`` is one channel of a multi-channel plug, as the plug numbers it: a
    Tasmota's ``POWER<n>`` (from 1), a Shelly's ``switch:<n>`` (from 0).  0 is the whole
    plug for a Tasmota and ``switch:0`` for a Shelly.  ``options`` are the kind's own
    keys of the binding (strings; a meter's JSON paths), None when it has none."""

    __tablename__ = "tool_bindings"
    __table_args__ = (UniqueConstraint("kind", "ref", "channel"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tool_id: Mapped[str] = mapped_column(ForeignKey("tools.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # device, or a plug kind (hub.plugs)
    ref: Mapped[str] = mapped_column(String(200))
    channel: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    options: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)
    tool: Mapped[Tool] = relationship(back_populates="bindings")


class Task(Base):
    """Work the project needs, posted with slots per period, estimated hours and a weight."""

    __tablename__ = "tasks"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    title: Mapped[str] = mapped_column(String(300))
    project_id: Mapped[str | None] = mapped_column(
        ForeignKey("projects.id", ondelete="SET NULL"), nullable=True
    )
    slots: Mapped[int] = mapped_column(Integer, default=1)
    hours: Mapped[Decimal] = mapped_column(ExactDecimal, default=Decimal(1))
    weight: Mapped[Decimal] = mapped_column(ExactDecimal, default=Decimal(1))
    resource: Mapped[str | None] = mapped_column(String(64), nullable=True)


class Station(Base):
    """A reader that is not at a tool: the door (``sign_in``) or a ``task_station``."""

    __tablename__ = "stations"
    device_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    site: Mapped[str] = mapped_column(String(64), default=DEFAULT_SITE, server_default="main")


class Device(Base):
    """A MQTT device as the hub knows it.  Unknown ids arrive as ``pending``."""

    __tablename__ = "devices"
    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    approval: Mapped[str] = mapped_column(String(10), default="pending")
    online: Mapped[bool] = mapped_column(Boolean, default=False)
    boot: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    fw: Mapped[str | None] = mapped_column(String(64), nullable=True)
    kind: Mapped[list[str]] = mapped_column(JSON, default=list)
    first_seen: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_seen: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_event_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    status_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Event(Base):
    """The event log: each ``(device_id, boot, seq)`` once, however often it arrived."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("device_id", "boot", "seq", name="uq_events_identity"),
        Index("ix_events_received_at", "received_at"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(63))
    boot: Mapped[int] = mapped_column(BigInteger)
    seq: Mapped[int] = mapped_column(BigInteger)
    type: Mapped[str] = mapped_column(String(20))
    device_ts: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    replay: Mapped[bool] = mapped_column(Boolean, default=False)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class DeviceStatusLog(Base):
    """Births and wills as they arrived; ``(device, boot, state)`` is stored once."""

    __tablename__ = "device_status_log"
    __table_args__ = (UniqueConstraint("device_id", "boot", "state", name="uq_status_identity"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(63))
    boot: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    state: Mapped[str] = mapped_column(String(10))
    fw: Mapped[str | None] = mapped_column(String(64), nullable=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ignored: Mapped[bool] = mapped_column(Boolean, default=False)


class DeviceClock(Base):
    """A device's clock as its birth read it (docs/device-protocol.md ``ts``): it said
    ``device_ts`` when the hub received it at ``received_at``.

    Only births the hub heard as they were sent count (not a retained copy, which is
    as old as the birth): the difference is that boot's clock offset, by which the hub
    corrects the boot's replayed times.  ``(device, boot, device_ts)`` is stored once, as
    the hub learnt it first; ``peershop rebuild`` and a restarted hub read them back."""

    __tablename__ = "device_clocks"
    __table_args__ = (
        UniqueConstraint("device_id", "boot", "device_ts", name="uq_device_clock_reading"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(63))
    boot: Mapped[int] = mapped_column(BigInteger)
    device_ts: Mapped[datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)


class DeadLetter(Base):
    """A message the hub could not accept, with the reason and its first bytes."""

    __tablename__ = "dead_letters"
    __table_args__ = (Index("ix_dead_letters_received_at", "received_at"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    topic: Mapped[str] = mapped_column(String(300))
    device_id: Mapped[str | None] = mapped_column(String(63), nullable=True)
    reason: Mapped[str] = mapped_column(String(500))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(Integer)


class Outbox(Base):
    """Hub-to-device messages, kept until the broker has them (PUBACK)."""

    __tablename__ = "outbox"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(String(300))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    qos: Mapped[int] = mapped_column(Integer, default=1)
    retain: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The hub that sends it: each site's hub publishes its own rows to its own broker.
    site: Mapped[str] = mapped_column(String(64), default=DEFAULT_SITE, server_default="main")


class MqttAccount(Base):
    """A login at the broker: an MQTT device, or a plug (a kind of hub/plugs/) with its topic.

    ``password_hash`` is Mosquitto's own ``$7$`` line, so the password file can be
    rewritten from the database alone; a revoked account keeps its row for the audit.
    """

    __tablename__ = "mqtt_accounts"
    username: Mapped[str] = mapped_column(String(63), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), default="device")  # device, or a plug kind
    topic: Mapped[str | None] = mapped_column(String(200), nullable=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


# --- the shop rules' records (issue 3) ------------------------------------------------
# Badge decisions are facts the hub decided live (who a uid belonged to, what was
# answered); `peershop rebuild` keeps them and recomputes everything derived from them
# and from the event log: sessions, presence, effort and usage.


class BadgeDecision(Base):
    """What the hub made of one badge event: the member it resolved to and the answer."""

    __tablename__ = "badge_decisions"
    __table_args__ = (
        UniqueConstraint("device_id", "boot", "seq", name="uq_badge_decisions_event"),
        Index("ix_badge_decisions_device_at", "device_id", "at"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(63))
    boot: Mapped[int] = mapped_column(BigInteger)
    seq: Mapped[int] = mapped_column(BigInteger)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    uid: Mapped[str] = mapped_column(String(20))
    member: Mapped[str | None] = mapped_column(String(64), nullable=True)
    tool_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    station: Mapped[str | None] = mapped_column(String(20), nullable=True)
    # grant | deny | release | sign_in | sign_out | effort_start | effort_end | none
    action: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    replay: Mapped[bool] = mapped_column(Boolean, default=False)
    training: Mapped[str | None] = mapped_column(String(64), nullable=True)


class UsageSession(Base):
    """A member's use of a tool: open while ``end`` is NULL.

    ``member`` NULL: an unattended run of a tool no one badges at (a printer on a smart
    plug), shown with the tool's use and never charged to anyone."""

    __tablename__ = "usage_sessions"
    __table_args__ = (
        Index("ix_usage_sessions_tool_start", "tool_id", "start"),
        Index("ix_usage_sessions_member_start", "member", "start"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(40), unique=True)
    tool_id: Mapped[str] = mapped_column(String(64))
    member: Mapped[str | None] = mapped_column(String(64), nullable=True)
    start: Mapped[datetime] = mapped_column(UTCDateTime)
    end: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    busy_s: Mapped[float] = mapped_column(Float, default=0.0)
    idle_s: Mapped[float] = mapped_column(Float, default=0.0)
    wh: Mapped[float] = mapped_column(Float, default=0.0)
    close_reason: Mapped[str | None] = mapped_column(String(20), nullable=True)


class PresenceChange(Base):
    """A member signing in to or out of the space (reason ``badge`` or ``auto``)."""

    __tablename__ = "presence_changes"
    __table_args__ = (Index("ix_presence_changes_member_at", "member", "at"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    member: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    state: Mapped[str] = mapped_column(String(4))  # in | out
    reason: Mapped[str] = mapped_column(String(10))
    # The site of the sign-in station: each site's hub resumes and closes its own.
    site: Mapped[str] = mapped_column(String(64), default=DEFAULT_SITE, server_default="main")


class EffortRecord(Base):
    """A member did ``hours`` of a task at the weight posted when they took it."""

    __tablename__ = "effort_records"
    __table_args__ = (
        Index("ix_effort_records_member_start", "member", "start"),
        Index("ix_effort_records_task_start", "task_id", "start"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(40), unique=True)
    member: Mapped[str] = mapped_column(String(64))
    task_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    project_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    start: Mapped[datetime] = mapped_column(UTCDateTime)
    end: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    hours: Mapped[Decimal | None] = mapped_column(ExactDecimal, nullable=True)
    weight: Mapped[Decimal | None] = mapped_column(ExactDecimal, nullable=True)
    source: Mapped[str] = mapped_column(String(16))  # station | board | coordinator
    device_id: Mapped[str | None] = mapped_column(String(63), nullable=True)


class UsageRecord(Base):
    """Consumables used (a ``consume`` event), charged to whoever held the tool."""

    __tablename__ = "usage_records"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(63))
    boot: Mapped[int] = mapped_column(BigInteger)
    seq: Mapped[int] = mapped_column(BigInteger)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    tool_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    member: Mapped[str | None] = mapped_column(String(64), nullable=True)
    item: Mapped[str] = mapped_column(String(100))
    qty: Mapped[float] = mapped_column(Float)
    unit: Mapped[str] = mapped_column(String(20))


class AllowlistVersion(Base):
    """The latest signed allow-list issued for a tool (docs/device-protocol.md)."""

    __tablename__ = "allowlists"
    tool_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # from the clock, in milliseconds (hub.contract.allowlist.next_version): past 32 bits
    version: Mapped[int] = mapped_column(BigInteger)
    digest: Mapped[str] = mapped_column(String(64))
    issued: Mapped[datetime] = mapped_column(UTCDateTime)
    expires: Mapped[datetime] = mapped_column(UTCDateTime)
    payload: Mapped[bytes] = mapped_column(LargeBinary)


class HubStart(Base):
    """A hub start: sessions open then were closed with reason ``hub_restart``.

    ``after_event_id`` places the start in the event log and ``site`` names the hub, so
    a rebuild restarts the same site's rules at the same point (``hub/admin/rebuild.py``).
    """

    __tablename__ = "hub_starts"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    after_event_id: Mapped[int] = mapped_column(BigInteger)
    version: Mapped[str] = mapped_column(String(32))
    site: Mapped[str] = mapped_column(String(64), default=DEFAULT_SITE, server_default="main")


class ShopMeta(Base):
    """Small counters shared between processes (``shop_version`` bumps on every change
    of members, badges, trainings or tools, so a running hub reloads them)."""

    __tablename__ = "shop_meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


# --- periods, the task board and reservations (issue 4) -------------------------------
# A period's balances, unit costs and weight history are written once, when it closes;
# a closed period is never changed (hub/ledger/periods.py refuses), corrections go in the open one.


class Period(Base):
    """An accounting period ``[start, end)``; closed once ``closed_at`` is set."""

    __tablename__ = "periods"
    __table_args__ = (UniqueConstraint("start", name="uq_periods_start"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    start: Mapped[datetime] = mapped_column(UTCDateTime)
    end: Mapped[datetime] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # What the close left out (effort without a task or weight) and totals, for the report.
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class PeriodBalance(Base):
    """A member's credited, expected and balance in one project for a closed period;
    ``running`` is the sum of their balances in that project up to and including it."""

    __tablename__ = "period_balances"
    __table_args__ = (
        UniqueConstraint("period_id", "project_id", "member", name="uq_period_balances_entry"),
        Index("ix_period_balances_member", "member", "project_id"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    period_id: Mapped[int] = mapped_column(ForeignKey("periods.id", ondelete="CASCADE"))
    project_id: Mapped[str] = mapped_column(String(64))
    member: Mapped[str] = mapped_column(String(64))
    credited: Mapped[Decimal] = mapped_column(ExactDecimal)
    expected: Mapped[Decimal] = mapped_column(ExactDecimal)
    balance: Mapped[Decimal] = mapped_column(ExactDecimal)
    running: Mapped[Decimal] = mapped_column(ExactDecimal)


class PeriodResourceCost(Base):
    """What one unit of a resource cost in a closed period (scarce units cost more)."""

    __tablename__ = "period_resource_costs"
    __table_args__ = (
        UniqueConstraint("period_id", "project_id", "resource", name="uq_period_costs_entry"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    period_id: Mapped[int] = mapped_column(ForeignKey("periods.id", ondelete="CASCADE"))
    project_id: Mapped[str] = mapped_column(String(64))
    resource: Mapped[str] = mapped_column(String(64))
    units: Mapped[Decimal] = mapped_column(ExactDecimal)
    unit_cost: Mapped[Decimal | None] = mapped_column(ExactDecimal, nullable=True)
    scarce_units: Mapped[Decimal] = mapped_column(ExactDecimal)
    scarce_multiplier: Mapped[Decimal | None] = mapped_column(ExactDecimal, nullable=True)


class TaskWeightHistory(Base):
    """A task's weight during a period, its slots and takers, and the weight rule (a) set
    for the next period when the period closed."""

    __tablename__ = "task_weight_history"
    __table_args__ = (UniqueConstraint("task_id", "period_id", name="uq_task_weight_history"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(String(64))
    period_id: Mapped[int] = mapped_column(ForeignKey("periods.id", ondelete="CASCADE"))
    weight: Mapped[Decimal] = mapped_column(ExactDecimal)
    slots: Mapped[int] = mapped_column(Integer)
    volunteers: Mapped[int] = mapped_column(Integer)
    next_weight: Mapped[Decimal] = mapped_column(ExactDecimal)
    pinned: Mapped[bool] = mapped_column(Boolean, default=False)


class TaskClaim(Base):
    """A member took a slot of a task on the board, at the weight posted then.

    Marked done, it keeps the ``hours`` the member reported.  A big claim (more than
    half again the task's posted hours, docs/sharing-models.md, rule (j)) is credited at the posted
    hours until ``confirmations_needed`` members confirm it (:class:`ClaimReview`)."""

    __tablename__ = "task_claims"
    __table_args__ = (Index("ix_task_claims_task_period", "task_id", "period_id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(String(64))
    member: Mapped[str] = mapped_column(String(64))
    period_id: Mapped[int] = mapped_column(ForeignKey("periods.id", ondelete="CASCADE"))
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    weight: Mapped[Decimal] = mapped_column(ExactDecimal)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    effort_key: Mapped[str | None] = mapped_column(String(40), nullable=True)
    hours: Mapped[Decimal | None] = mapped_column(ExactDecimal, nullable=True)  # reported
    confirmations_needed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Verdict(StrEnum):
    """What a review of a big claim says."""

    CONFIRM = "confirm"
    REJECT = "reject"


class Standing(StrEnum):
    """Why the reviewer may review: a coordinator, or a member who was there."""

    COORDINATOR = "coordinator"
    PRESENT = "present"


class ClaimReview(Base):
    """One member's confirmation (or a coordinator's rejection) of a big claim: rows,
    not a flag, so a claim can need several confirmations."""

    __tablename__ = "claim_reviews"
    __table_args__ = (UniqueConstraint("claim_id", "member", name="uq_claim_reviews_entry"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    claim_id: Mapped[int] = mapped_column(ForeignKey("task_claims.id", ondelete="CASCADE"))
    member: Mapped[str] = mapped_column(String(64))
    verdict: Mapped[str] = mapped_column(String(max(map(len, Verdict))))
    standing: Mapped[str] = mapped_column(String(max(map(len, Standing))))
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class TaskWant(Base):
    """A member's hint "I want this done" (stigmergy); one per member and task."""

    __tablename__ = "task_wants"
    __table_args__ = (UniqueConstraint("task_id", "member", name="uq_task_wants_entry"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(String(64))
    member: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class SlotReservation(Base):
    """A request for one scarce slot of a tool with the member's ``max`` multiplier;
    ``outcome`` is set (won | lost) when the slot's bids close and it is cleared."""

    __tablename__ = "slot_reservations"
    __table_args__ = (
        UniqueConstraint("tool_id", "start", "member", name="uq_slot_reservations_entry"),
        Index("ix_slot_reservations_tool_start", "tool_id", "start"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tool_id: Mapped[str] = mapped_column(String(64))
    member: Mapped[str] = mapped_column(String(64))
    start: Mapped[datetime] = mapped_column(UTCDateTime)
    end: Mapped[datetime] = mapped_column(UTCDateTime)
    max: Mapped[Decimal] = mapped_column(ExactDecimal)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    period_id: Mapped[int | None] = mapped_column(
        ForeignKey("periods.id", ondelete="SET NULL"), nullable=True
    )
    outcome: Mapped[str | None] = mapped_column(String(8), nullable=True)
    multiplier: Mapped[Decimal | None] = mapped_column(ExactDecimal, nullable=True)
    cleared_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ProjectRules(Base):
    """Rule (a) settings of a project: gain ``k``, a task weight's bounds and the weight
    mode (``close``: weights move at period close only; ``clock``: an unfilled slot's
    weight also rises day by day inside the period).  A project without a row uses
    docs/sharing-models.md's defaults (0.2, 0.25, 4.0, close)."""

    __tablename__ = "project_rules"
    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    gain: Mapped[Decimal] = mapped_column(ExactDecimal, default=Decimal("0.2"))
    weight_min: Mapped[Decimal] = mapped_column(ExactDecimal, default=Decimal("0.25"))
    weight_max: Mapped[Decimal] = mapped_column(ExactDecimal, default=Decimal("4.0"))
    weight_mode: Mapped[str] = mapped_column(
        String(8), default=WeightMode.CLOSE, server_default=WeightMode.CLOSE.value
    )


class TaskState(Base):
    """The board's state of a task: ``status`` proposed | open | retired and a pinned
    weight.  A task without a row is open and not pinned (as the shop file posts it)."""

    __tablename__ = "task_states"
    task_id: Mapped[str] = mapped_column(
        ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True
    )
    status: Mapped[str] = mapped_column(String(10), default="open")
    pinned: Mapped[bool] = mapped_column(Boolean, default=False)
    posted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    proposed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)


# --- web logins and API tokens (issue 6) ----------------------------------------------


class WebLogin(Base):
    """A member's web credentials: an argon2 password hash and an argon2 kiosk PIN hash."""

    __tablename__ = "web_logins"
    member_id: Mapped[int] = mapped_column(
        ForeignKey("members.id", ondelete="CASCADE"), primary_key=True
    )
    password_hash: Mapped[str | None] = mapped_column(String(200), nullable=True)
    pin_hash: Mapped[str | None] = mapped_column(String(200), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebSession(Base):
    """A browser's login (web/logins.py).  The session cookie holds a random token and
    this row its SHA-256, so the server ends a login for good: at logout, at a password
    or PIN change, when a kiosk login sits idle, and when it is unused for 30 days.  A
    signed cookie alone could not be taken back before it expired."""

    __tablename__ = "web_sessions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # SHA-256 of the token
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    # a kiosk login's badge (badge and PIN, member rights only); None: handle and password
    badge: Mapped[str | None] = mapped_column(String(20), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index("ix_web_sessions_member", "member_id"),)

    @property
    def is_kiosk(self) -> bool:
        return self.badge is not None


class ApiToken(Base):
    """A bearer token for scripts (``peershop token create``); only its SHA-256 is kept."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(16))  # member | trainer | coordinator
    member: Mapped[str | None] = mapped_column(String(64), nullable=True)  # whose records
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


# --- participation factors (issue 4) -----------------------------------


class ParticipationFactor(Base):
    """A member's participation factor ``f`` (docs/sharing-models.md, rule (b)): their share of the
    effort shared flat (flat_rate, and production_effort's overhead) is ``E x f / Σf``.
    A member without a row has factor 1."""

    __tablename__ = "participation_factors"
    member_id: Mapped[int] = mapped_column(
        ForeignKey("members.id", ondelete="CASCADE"), primary_key=True
    )
    factor: Mapped[Decimal] = mapped_column(ExactDecimal)
