"""Initial schema: projects, workflows, runs, jobs, datasets, models and model versions.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

from aiflow_notebook.meta.orm import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "project",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("name", name="uq_project_name"),
    )
    op.create_table(
        "workflow",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("project_id", sa.Integer, sa.ForeignKey("project.id", name="fk_workflow_project_id_project"), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("project_id", "name", name="uq_workflow_project_id_name"),
    )
    op.create_table(
        "workflow_snapshot",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("workflow_id", sa.Integer, sa.ForeignKey("workflow.id", name="fk_workflow_snapshot_workflow_id_workflow"), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("workflow_id", "content_hash", name="uq_workflow_snapshot_workflow_id_content_hash"),
    )
    op.create_table(
        "workflow_run",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("workflow_id", sa.Integer, sa.ForeignKey("workflow.id", name="fk_workflow_run_workflow_id_workflow"), nullable=False),
        sa.Column("snapshot_id", sa.Integer, sa.ForeignKey("workflow_snapshot.id", name="fk_workflow_run_snapshot_id_workflow_snapshot"), nullable=True),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("properties", sa.JSON, nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("ended_at", UTCDateTime, nullable=True),
    )
    op.create_index("ix_workflow_run_workflow_id", "workflow_run", ["workflow_id"])
    op.create_table(
        "job",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("workflow_id", sa.Integer, sa.ForeignKey("workflow.id", name="fk_job_workflow_id_workflow"), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("engine", sa.String(64), nullable=False),
        sa.Column("config", sa.JSON, nullable=True),
        sa.UniqueConstraint("workflow_id", "name", name="uq_job_workflow_id_name"),
    )
    op.create_table(
        "job_run",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("job.id", name="fk_job_run_job_id_job"), nullable=False),
        sa.Column("workflow_run_id", sa.Integer, sa.ForeignKey("workflow_run.id", name="fk_job_run_workflow_run_id_workflow_run"), nullable=True),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=True),
        sa.Column("ended_at", UTCDateTime, nullable=True),
        sa.Column("log_uri", sa.Text, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
    )
    op.create_index("ix_job_run_job_id", "job_run", ["job_id"])
    op.create_index("ix_job_run_workflow_run_id", "job_run", ["workflow_run_id"])
    op.create_table(
        "dataset",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("uri", sa.Text, nullable=True),
        sa.Column("schema", sa.JSON, nullable=True),
        sa.Column("properties", sa.JSON, nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("name", name="uq_dataset_name"),
    )
    op.create_table(
        "model",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.Text, nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("name", name="uq_model_name"),
    )
    op.create_table(
        "model_version",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("model.id", name="fk_model_version_model_id_model"), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("uri", sa.Text, nullable=False),
        sa.Column("metrics", sa.JSON, nullable=True),
        sa.Column("stage", sa.String(32), nullable=False),
        sa.Column("job_run_id", sa.Integer, sa.ForeignKey("job_run.id", name="fk_model_version_job_run_id_job_run"), nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("model_id", "version", name="uq_model_version_model_id_version"),
    )


def downgrade() -> None:
    for table in ("model_version", "model", "dataset", "job_run", "job", "workflow_run",
                  "workflow_snapshot", "workflow", "project"):
        op.drop_table(table)
