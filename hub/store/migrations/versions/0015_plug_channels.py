"""plug channels: a binding names one channel of a multi-channel plug

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Every binding so far is a whole plug (0): a Tasmota's POWER, a Shelly's switch:0.
    # Several tools may now share a plug, each on its own channel, so the channel joins
    # the binding's identity.
    with op.batch_alter_table("tool_bindings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("channel", sa.Integer(), nullable=False, server_default="0"))
        batch_op.drop_constraint("uq_tool_bindings_kind", type_="unique")
        batch_op.create_unique_constraint("uq_tool_bindings_kind", ["kind", "ref", "channel"])


def downgrade() -> None:
    with op.batch_alter_table("tool_bindings", schema=None) as batch_op:
        batch_op.drop_constraint("uq_tool_bindings_kind", type_="unique")
        batch_op.create_unique_constraint("uq_tool_bindings_kind", ["kind", "ref"])
        batch_op.drop_column("channel")
