"""The hub's tables as typed SQLAlchemy 2.0 models.

Times are stored as UTC and always come back timezone-aware; exact quantities (hours,
weights) are stored as decimal text so SQLite and PostgreSQL give back the same
``Decimal``.  Schema changes go through Alembic (``hub/migrations``), never ``create_all``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
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
    """A Decimal kept exactly, as text, on every backend (PEERCONOMY invariant 4)."""

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
    model: Mapped[str] = mapped_column(String(32), default="production_effort")


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
    """A card; ``uid`` is uppercase hex as CONTRACT.md §2 stores and compares it."""

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
    policy: Mapped[str] = mapped_column(String(20), default="tap")
    training_id: Mapped[str | None] = mapped_column(
        ForeignKey("trainings.id", ondelete="SET NULL"), nullable=True
    )
    power: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    scarce: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # Access and session settings beyond power: opening hours, max_duration,
    # enforce_reservations, no_cut_while_busy, end_on_stop (docs/shop-file.md).
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    locked: Mapped[bool] = mapped_column(Boolean, default=False)
    bindings: Mapped[list[ToolBinding]] = relationship(
        back_populates="tool", cascade="all, delete-orphan"
    )


class ToolBinding(Base):
    """A device feeding a tool: a §2 device id, a Tasmota topic or a Shelly prefix."""

    __tablename__ = "tool_bindings"
    __table_args__ = (UniqueConstraint("kind", "ref"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tool_id: Mapped[str] = mapped_column(ForeignKey("tools.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # device | tasmota | shelly
    ref: Mapped[str] = mapped_column(String(200))
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


class Device(Base):
    """A §2 device as the hub knows it.  Unknown ids arrive as ``pending``."""

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


class MqttAccount(Base):
    """A login at the broker: a §2 device, or a Tasmota/Shelly plug with its topic.

    ``password_hash`` is Mosquitto's own ``$7$`` line, so the password file can be
    rewritten from the database alone; a revoked account keeps its row for the audit.
    """

    __tablename__ = "mqtt_accounts"
    username: Mapped[str] = mapped_column(String(63), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), default="device")  # device|tasmota|shelly
    topic: Mapped[str | None] = mapped_column(String(200), nullable=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
