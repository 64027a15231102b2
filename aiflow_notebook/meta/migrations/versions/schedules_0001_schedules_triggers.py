"""Workflow schedules, workflow triggers and periodic jobs.

Revision ID: schedules_0001
Revises: scheduler_0001
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

from aiflow_notebook.meta.orm import UTCDateTime

revision = "schedules_0001"
down_revision = "scheduler_0001"
branch_labels = None
depends_on = None


def _common() -> list:
    return [
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("scheduler", sa.String(64), nullable=False),
        sa.Column("workflow", sa.String(255), nullable=False),
        sa.Column("project", sa.String(255), nullable=False),
        sa.Column("uri", sa.String(1024), nullable=False),
    ]


def _tail() -> list:
    return [
        sa.Column("fired", sa.Integer, nullable=False),
        sa.Column("last_run_id", sa.Integer, nullable=True),
        sa.Column("cwd", sa.String(1024), nullable=True),
        sa.Column("created_by", sa.String(255), nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "workflow_schedule",
        *_common(),
        sa.Column("snapshot_id", sa.Integer, sa.ForeignKey(
            "workflow_snapshot.id", name="fk_workflow_schedule_snapshot_id_workflow_snapshot"), nullable=False),
        sa.Column("timing", sa.JSON, nullable=False),
        sa.Column("anchor", sa.Float, nullable=False),
        sa.Column("next_tick", sa.Float, nullable=False),
        sa.Column("paused", sa.Boolean, nullable=False),
        *_tail(),
    )
    op.create_index("ix_workflow_schedule_scheduler", "workflow_schedule", ["scheduler"])
    op.create_table(
        "workflow_trigger",
        *_common(),
        sa.Column("snapshot_id", sa.Integer, sa.ForeignKey(
            "workflow_snapshot.id", name="fk_workflow_trigger_snapshot_id_workflow_snapshot"), nullable=False),
        sa.Column("condition_uri", sa.String(1024), nullable=False),
        sa.Column("since_version", sa.Integer, nullable=False),
        sa.Column("state", sa.JSON, nullable=False),
        *_tail(),
    )
    op.create_index("ix_workflow_trigger_scheduler", "workflow_trigger", ["scheduler"])
    op.create_table(
        "periodic_job",
        sa.Column("workflow_run_id", sa.Integer, sa.ForeignKey(
            "workflow_run.id", name="fk_periodic_job_workflow_run_id_workflow_run"), primary_key=True),
        sa.Column("job", sa.String(255), primary_key=True),
        sa.Column("timing", sa.JSON, nullable=False),
        sa.Column("anchor", sa.Float, nullable=False),
        sa.Column("next_tick", sa.Float, nullable=False),
    )


def downgrade() -> None:
    for table in ("periodic_job", "workflow_trigger", "workflow_schedule"):
        op.drop_table(table)
