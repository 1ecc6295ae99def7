"""unattended runs: a usage session may have no member

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A tool no one badges at (a printer on a smart plug) records its runs with no member.
    with op.batch_alter_table("usage_sessions", schema=None) as batch_op:
        batch_op.alter_column("member", existing_type=sa.String(length=64), nullable=True)


def downgrade() -> None:
    # A run has no member to give back: runs go, members' sessions stay.
    op.execute("DELETE FROM usage_sessions WHERE member IS NULL")
    with op.batch_alter_table("usage_sessions", schema=None) as batch_op:
        batch_op.alter_column("member", existing_type=sa.String(length=64), nullable=False)
