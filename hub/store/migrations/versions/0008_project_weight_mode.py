"""rule (a)'s weight mode per project: close (default) or clock

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("project_rules", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("weight_mode", sa.String(length=8), server_default="close", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("project_rules", schema=None) as batch_op:
        batch_op.drop_column("weight_mode")
