"""Lineage edges, metrics and artifacts; index for the latest-version-by-stage lookup.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

from aiflow_notebook.meta.orm import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_model_version_model_id_stage_version", "model_version", ["model_id", "stage", "version"])
    op.create_table(
        "artifact",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("uri", sa.Text, nullable=False),
        sa.Column("kind", sa.String(64), nullable=True),
        sa.Column("properties", sa.JSON, nullable=True),
        sa.Column("job_run_id", sa.Integer, sa.ForeignKey("job_run.id", name="fk_artifact_job_run_id_job_run"), nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("name", name="uq_artifact_name"),
    )
    op.create_table(
        "metric",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("step", sa.Integer, nullable=True),
        sa.Column("job_run_id", sa.Integer, sa.ForeignKey("job_run.id", name="fk_metric_job_run_id_job_run"), nullable=True),
        sa.Column("model_version_id", sa.Integer, sa.ForeignKey("model_version.id", name="fk_metric_model_version_id_model_version"), nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_metric_job_run_id", "metric", ["job_run_id"])
    op.create_index("ix_metric_model_version_id", "metric", ["model_version_id"])
    op.create_table(
        "lineage_edge",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("src_kind", sa.String(32), nullable=False),
        sa.Column("src_id", sa.Integer, nullable=False),
        sa.Column("dst_kind", sa.String(32), nullable=False),
        sa.Column("dst_id", sa.Integer, nullable=False),
        sa.Column("relation", sa.String(32), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("src_kind", "src_id", "dst_kind", "dst_id", "relation",
                            name="uq_lineage_edge_src_kind_src_id_dst_kind_dst_id_relation"),
    )
    op.create_index("ix_lineage_edge_dst_kind_dst_id", "lineage_edge", ["dst_kind", "dst_id"])


def downgrade() -> None:
    op.drop_table("lineage_edge")
    op.drop_table("metric")
    op.drop_table("artifact")
    op.drop_index("ix_model_version_model_id_stage_version", "model_version")
