"""big claims: the hours a done reported, the confirmations it needs, and the reviews

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Claims done so far were credited as reported: they need no confirmation (0), and
    # their hours are on their effort records.
    with op.batch_alter_table("task_claims", schema=None) as batch_op:
        batch_op.add_column(sa.Column("hours", sa.String(length=40), nullable=True))
        batch_op.add_column(
            sa.Column("confirmations_needed", sa.Integer(), nullable=False, server_default="0")
        )
    op.create_table(
        "claim_reviews",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("claim_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("member", sa.String(length=64), nullable=False),
        sa.Column("verdict", sa.String(length=7), nullable=False),
        sa.Column("standing", sa.String(length=11), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["claim_id"],
            ["task_claims.id"],
            name=op.f("fk_claim_reviews_claim_id_task_claims"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_claim_reviews")),
        sa.UniqueConstraint("claim_id", "member", name="uq_claim_reviews_entry"),
    )


def downgrade() -> None:
    op.drop_table("claim_reviews")
    with op.batch_alter_table("task_claims", schema=None) as batch_op:
        batch_op.drop_column("confirmations_needed")
        batch_op.drop_column("hours")
