"""device clocks: what a birth's ts (docs/device-protocol.md) said, to correct replayed times

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "device_clocks",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("device_id", sa.String(length=63), nullable=False),
        sa.Column("boot", sa.BigInteger(), nullable=False),
        sa.Column("device_ts", sa.DateTime(), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_clocks")),
        sa.UniqueConstraint("device_id", "boot", "device_ts", name="uq_device_clock_reading"),
    )


def downgrade() -> None:
    op.drop_table("device_clocks")
