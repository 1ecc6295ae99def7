"""allow-list versions come from the clock, in milliseconds: past 32 bits

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The stored versions (small counters) stay; the next list of each tool takes the
    # clock's milliseconds, above all of them (hub.allowlist.next_version).
    with op.batch_alter_table("allowlists", schema=None) as batch_op:
        batch_op.alter_column(
            "version", existing_type=sa.Integer(), type_=sa.BigInteger(), existing_nullable=False
        )


def downgrade() -> None:
    # Versions from the clock do not fit 32 bits: go back to small counters, which the
    # devices refuse as older until their lists expire (at most 7 days).
    op.execute("UPDATE allowlists SET version = 1")
    with op.batch_alter_table("allowlists", schema=None) as batch_op:
        batch_op.alter_column(
            "version", existing_type=sa.BigInteger(), type_=sa.Integer(), existing_nullable=False
        )
