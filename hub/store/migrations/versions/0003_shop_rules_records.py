"""shop rules records

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "allowlists",
        sa.Column("tool_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("issued", sa.DateTime(), nullable=False),
        sa.Column("expires", sa.DateTime(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("tool_id", name=op.f("pk_allowlists")),
    )
    op.create_table(
        "badge_decisions",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("device_id", sa.String(length=63), nullable=False),
        sa.Column("boot", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("uid", sa.String(length=20), nullable=False),
        sa.Column("member", sa.String(length=64), nullable=True),
        sa.Column("tool_id", sa.String(length=64), nullable=True),
        sa.Column("station", sa.String(length=20), nullable=True),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=True),
        sa.Column("replay", sa.Boolean(), nullable=False),
        sa.Column("training", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_badge_decisions")),
        sa.UniqueConstraint("device_id", "boot", "seq", name="uq_badge_decisions_event"),
    )
    with op.batch_alter_table("badge_decisions", schema=None) as batch_op:
        batch_op.create_index("ix_badge_decisions_device_at", ["device_id", "at"], unique=False)

    op.create_table(
        "effort_records",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("key", sa.String(length=40), nullable=False),
        sa.Column("member", sa.String(length=64), nullable=False),
        sa.Column("task_id", sa.String(length=64), nullable=True),
        sa.Column("project_id", sa.String(length=64), nullable=True),
        sa.Column("start", sa.DateTime(), nullable=False),
        sa.Column("end", sa.DateTime(), nullable=True),
        sa.Column("hours", sa.String(length=40), nullable=True),
        sa.Column("weight", sa.String(length=40), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("device_id", sa.String(length=63), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_effort_records")),
        sa.UniqueConstraint("key", name=op.f("uq_effort_records_key")),
    )
    with op.batch_alter_table("effort_records", schema=None) as batch_op:
        batch_op.create_index("ix_effort_records_member_start", ["member", "start"], unique=False)

    op.create_table(
        "hub_starts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("after_event_id", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hub_starts")),
    )
    op.create_table(
        "presence_changes",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("member", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("state", sa.String(length=4), nullable=False),
        sa.Column("reason", sa.String(length=10), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_presence_changes")),
    )
    with op.batch_alter_table("presence_changes", schema=None) as batch_op:
        batch_op.create_index("ix_presence_changes_member_at", ["member", "at"], unique=False)

    op.create_table(
        "shop_meta",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_shop_meta")),
    )
    op.create_table(
        "usage_records",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("device_id", sa.String(length=63), nullable=False),
        sa.Column("boot", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("tool_id", sa.String(length=64), nullable=True),
        sa.Column("member", sa.String(length=64), nullable=True),
        sa.Column("item", sa.String(length=100), nullable=False),
        sa.Column("qty", sa.Float(), nullable=False),
        sa.Column("unit", sa.String(length=20), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_records")),
    )
    op.create_table(
        "usage_sessions",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("key", sa.String(length=40), nullable=False),
        sa.Column("tool_id", sa.String(length=64), nullable=False),
        sa.Column("member", sa.String(length=64), nullable=False),
        sa.Column("start", sa.DateTime(), nullable=False),
        sa.Column("end", sa.DateTime(), nullable=True),
        sa.Column("busy_s", sa.Float(), nullable=False),
        sa.Column("idle_s", sa.Float(), nullable=False),
        sa.Column("wh", sa.Float(), nullable=False),
        sa.Column("close_reason", sa.String(length=20), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_sessions")),
        sa.UniqueConstraint("key", name=op.f("uq_usage_sessions_key")),
    )
    with op.batch_alter_table("usage_sessions", schema=None) as batch_op:
        batch_op.create_index("ix_usage_sessions_member_start", ["member", "start"], unique=False)
        batch_op.create_index("ix_usage_sessions_tool_start", ["tool_id", "start"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("usage_sessions", schema=None) as batch_op:
        batch_op.drop_index("ix_usage_sessions_tool_start")
        batch_op.drop_index("ix_usage_sessions_member_start")

    op.drop_table("usage_sessions")
    op.drop_table("usage_records")
    op.drop_table("shop_meta")
    with op.batch_alter_table("presence_changes", schema=None) as batch_op:
        batch_op.drop_index("ix_presence_changes_member_at")

    op.drop_table("presence_changes")
    op.drop_table("hub_starts")
    with op.batch_alter_table("effort_records", schema=None) as batch_op:
        batch_op.drop_index("ix_effort_records_member_start")

    op.drop_table("effort_records")
    with op.batch_alter_table("badge_decisions", schema=None) as batch_op:
        batch_op.drop_index("ix_badge_decisions_device_at")

    op.drop_table("badge_decisions")
    op.drop_table("allowlists")
