"""Scheduler state: event cursor, per-run rules, action outbox, job process records.

Revision ID: scheduler_0001
Revises: events_0001
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

from aiflow_notebook.meta.orm import UTCDateTime

revision = "scheduler_0001"
down_revision = "events_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "scheduler_cursor",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("last_version", sa.Integer, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "run_rules",
        sa.Column("workflow_run_id", sa.Integer, sa.ForeignKey("workflow_run.id", name="fk_run_rules_workflow_run_id_workflow_run"), primary_key=True),
        sa.Column("scheduler", sa.String(64), nullable=False),
        sa.Column("since_version", sa.Integer, nullable=False),
        sa.Column("rules", sa.JSON, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
    )
    op.create_index("ix_run_rules_scheduler", "run_rules", ["scheduler"])
    op.create_table(
        "scheduler_action",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("workflow_run_id", sa.Integer, sa.ForeignKey("workflow_run.id", name="fk_scheduler_action_workflow_run_id_workflow_run"), nullable=False),
        sa.Column("job", sa.String(255), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("event_version", sa.Integer, nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("done_at", UTCDateTime, nullable=True),
    )
    op.create_index("ix_scheduler_action_workflow_run_id", "scheduler_action", ["workflow_run_id"])
    op.create_index("ix_scheduler_action_state", "scheduler_action", ["state"])
    op.create_table(
        "job_process",
        sa.Column("job_run_id", sa.Integer, sa.ForeignKey("job_run.id", name="fk_job_process_job_run_id_job_run"), primary_key=True),
        sa.Column("action_id", sa.Integer, sa.ForeignKey("scheduler_action.id", name="fk_job_process_action_id_scheduler_action"), nullable=True),
        sa.Column("record", sa.JSON, nullable=True),
    )
    op.create_index("ix_job_process_action_id", "job_process", ["action_id"])


def downgrade() -> None:
    for table in ("job_process", "scheduler_action", "run_rules", "scheduler_cursor"):
        op.drop_table(table)
