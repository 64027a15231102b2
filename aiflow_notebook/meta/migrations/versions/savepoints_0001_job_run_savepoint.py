"""The savepoint a job run left when it was stopped (a streaming Flink job's stop-with-savepoint).

Revision ID: savepoints_0001
Revises: schedules_0001
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "savepoints_0001"
down_revision = "schedules_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("job_run") as batch:
        batch.add_column(sa.Column("savepoint", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job_run") as batch:
        batch.drop_column("savepoint")
