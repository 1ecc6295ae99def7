"""sites: tools, stations and outbox rows belong to a site (several hubs, one database)

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

TABLES = ("tools", "stations", "outbox")


def upgrade() -> None:
    # Every row stored so far is at the one site there was: "main", site.id's default.
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(
                sa.Column("site", sa.String(length=64), nullable=False, server_default="main")
            )


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("site")
