"""sites: a hub start and a presence change belong to a site (the hub that made them)

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

TABLES = ("hub_starts", "presence_changes")


def upgrade() -> None:
    # A row stored so far is at the one site there was: "main", site.id's default, or
    # the site all the shop's tools and stations are at (a single hub with a site.id of
    # its own).  Where several sites had hubs already, which one wrote a row is not
    # recorded: it stays "main".
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(
                sa.Column("site", sa.String(length=64), nullable=False, server_default="main")
            )
    conn = op.get_bind()
    sites = _sites(conn, "SELECT site FROM tools UNION SELECT site FROM stations")
    if len(sites) == 1:
        conn.execute(sa.text("UPDATE hub_starts SET site = :site"), {"site": sites[0]})
    doors = _sites(conn, "SELECT site FROM stations WHERE kind = 'sign_in'")
    if len(doors) == 1:
        conn.execute(sa.text("UPDATE presence_changes SET site = :site"), {"site": doors[0]})


def _sites(conn: sa.Connection, query: str) -> list[str]:
    return sorted({row[0] for row in conn.execute(sa.text(query))})


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("site")
