"""periods, task board, reservations

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _id() -> sa.Column:
    return sa.Column("id", BIG_ID, autoincrement=True, nullable=False)


def _period_fk(table: str, ondelete: str = "CASCADE", nullable: bool = False) -> list:
    return [
        sa.Column("period_id", sa.Integer(), nullable=nullable),
        sa.ForeignKeyConstraint(
            ["period_id"],
            ["periods.id"],
            name=op.f(f"fk_{table}_period_id_periods"),
            ondelete=ondelete,
        ),
    ]


def upgrade() -> None:
    op.create_table(
        "project_rules",
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("gain", sa.String(length=40), nullable=False),
        sa.Column("weight_min", sa.String(length=40), nullable=False),
        sa.Column("weight_max", sa.String(length=40), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_project_rules_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("project_id", name=op.f("pk_project_rules")),
    )
    op.create_table(
        "task_states",
        sa.Column("task_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("pinned", sa.Boolean(), nullable=False),
        sa.Column("posted_at", sa.DateTime(), nullable=True),
        sa.Column("proposed_by", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["tasks.id"],
            name=op.f("fk_task_states_task_id_tasks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("task_id", name=op.f("pk_task_states")),
    )
    op.create_table(
        "periods",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("start", sa.DateTime(), nullable=False),
        sa.Column("end", sa.DateTime(), nullable=False),
        sa.Column("closed_at", sa.DateTime(), nullable=True),
        sa.Column("report", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_periods")),
        sa.UniqueConstraint("start", name="uq_periods_start"),
    )
    op.create_table(
        "period_balances",
        _id(),
        *_period_fk("period_balances"),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("member", sa.String(length=64), nullable=False),
        sa.Column("credited", sa.String(length=40), nullable=False),
        sa.Column("expected", sa.String(length=40), nullable=False),
        sa.Column("balance", sa.String(length=40), nullable=False),
        sa.Column("running", sa.String(length=40), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_period_balances")),
        sa.UniqueConstraint("period_id", "project_id", "member", name="uq_period_balances_entry"),
    )
    with op.batch_alter_table("period_balances", schema=None) as batch_op:
        batch_op.create_index("ix_period_balances_member", ["member", "project_id"], unique=False)
    op.create_table(
        "period_resource_costs",
        _id(),
        *_period_fk("period_resource_costs"),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("resource", sa.String(length=64), nullable=False),
        sa.Column("units", sa.String(length=40), nullable=False),
        sa.Column("unit_cost", sa.String(length=40), nullable=True),
        sa.Column("scarce_units", sa.String(length=40), nullable=False),
        sa.Column("scarce_multiplier", sa.String(length=40), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_period_resource_costs")),
        sa.UniqueConstraint("period_id", "project_id", "resource", name="uq_period_costs_entry"),
    )
    op.create_table(
        "task_weight_history",
        _id(),
        sa.Column("task_id", sa.String(length=64), nullable=False),
        *_period_fk("task_weight_history"),
        sa.Column("weight", sa.String(length=40), nullable=False),
        sa.Column("slots", sa.Integer(), nullable=False),
        sa.Column("volunteers", sa.Integer(), nullable=False),
        sa.Column("next_weight", sa.String(length=40), nullable=False),
        sa.Column("pinned", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_weight_history")),
        sa.UniqueConstraint("task_id", "period_id", name="uq_task_weight_history"),
    )
    op.create_table(
        "task_claims",
        _id(),
        sa.Column("task_id", sa.String(length=64), nullable=False),
        sa.Column("member", sa.String(length=64), nullable=False),
        *_period_fk("task_claims"),
        sa.Column("claimed_at", sa.DateTime(), nullable=False),
        sa.Column("weight", sa.String(length=40), nullable=False),
        sa.Column("done_at", sa.DateTime(), nullable=True),
        sa.Column("effort_key", sa.String(length=40), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_claims")),
    )
    with op.batch_alter_table("task_claims", schema=None) as batch_op:
        batch_op.create_index("ix_task_claims_task_period", ["task_id", "period_id"], unique=False)
    op.create_table(
        "task_wants",
        _id(),
        sa.Column("task_id", sa.String(length=64), nullable=False),
        sa.Column("member", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_wants")),
        sa.UniqueConstraint("task_id", "member", name="uq_task_wants_entry"),
    )
    op.create_table(
        "slot_reservations",
        _id(),
        sa.Column("tool_id", sa.String(length=64), nullable=False),
        sa.Column("member", sa.String(length=64), nullable=False),
        sa.Column("start", sa.DateTime(), nullable=False),
        sa.Column("end", sa.DateTime(), nullable=False),
        sa.Column("max", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        *_period_fk("slot_reservations", ondelete="SET NULL", nullable=True),
        sa.Column("outcome", sa.String(length=8), nullable=True),
        sa.Column("multiplier", sa.String(length=40), nullable=True),
        sa.Column("cleared_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_slot_reservations")),
        sa.UniqueConstraint("tool_id", "start", "member", name="uq_slot_reservations_entry"),
    )
    with op.batch_alter_table("slot_reservations", schema=None) as batch_op:
        batch_op.create_index("ix_slot_reservations_tool_start", ["tool_id", "start"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("slot_reservations", schema=None) as batch_op:
        batch_op.drop_index("ix_slot_reservations_tool_start")
    op.drop_table("slot_reservations")
    op.drop_table("task_wants")
    with op.batch_alter_table("task_claims", schema=None) as batch_op:
        batch_op.drop_index("ix_task_claims_task_period")
    op.drop_table("task_claims")
    op.drop_table("task_weight_history")
    op.drop_table("period_resource_costs")
    with op.batch_alter_table("period_balances", schema=None) as batch_op:
        batch_op.drop_index("ix_period_balances_member")
    op.drop_table("period_balances")
    op.drop_table("periods")
    op.drop_table("task_states")
    op.drop_table("project_rules")
