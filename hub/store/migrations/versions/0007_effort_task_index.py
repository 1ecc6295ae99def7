"""effort records by task: the task board's "last done" per task

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("effort_records", schema=None) as batch_op:
        batch_op.create_index("ix_effort_records_task_start", ["task_id", "start"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("effort_records", schema=None) as batch_op:
        batch_op.drop_index("ix_effort_records_task_start")
