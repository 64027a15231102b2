"""The event bus's durable log.

Revision ID: events_0001
Revises: 0002
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "events_0001"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "event_log",
        # INTEGER PRIMARY KEY on SQLite makes the version the rowid (no second index to maintain).
        sa.Column("version", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
                  autoincrement=False),
        sa.Column("event_key", sa.String(1024), nullable=False),
        sa.Column("event_value", sa.Text, nullable=False),
        sa.Column("event_type", sa.String(255), nullable=False),
        sa.Column("namespace", sa.String(255), nullable=False),
        sa.Column("sender", sa.String(255), nullable=True),
        sa.Column("context", sa.Text, nullable=True),
        sa.Column("create_time", sa.BigInteger, nullable=False),
        sa.Column("client_id", sa.String(255), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("version", name="pk_event_log"),
        sa.UniqueConstraint("client_id", "seq", name="uq_event_log_client_id_seq"),
    )
    op.create_index("ix_event_log_event_key_version", "event_log", ["event_key", "version"])


def downgrade() -> None:
    op.drop_index("ix_event_log_event_key_version", "event_log")
    op.drop_table("event_log")
