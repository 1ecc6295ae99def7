"""binding options: a plug kind's own keys of a binding (a meter's JSON paths)

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Bindings so far have none: a device, a Tasmota or a Shelly is its kind, topic and
    # channel.  A kind may take further keys in the shop file (hub/plugs/ PlugKind.options).
    with op.batch_alter_table("tool_bindings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("options", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tool_bindings", schema=None) as batch_op:
        batch_op.drop_column("options")
