"""SQLAlchemy tables of the metadata store: the whole schema in one file.

The schema is created and upgraded by the Alembic migrations in ``migrations/versions``; a test checks
that these classes and the migrations' head agree, so the two cannot drift apart.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """A timestamp that is always timezone-aware UTC in Python (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Project(Base):
    __tablename__ = "project"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Workflow(Base):
    __tablename__ = "workflow"
    __table_args__ = (UniqueConstraint("project_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id"))
    name: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WorkflowSnapshot(Base):
    """A compiled workflow as it was submitted; identical content is stored once (by hash)."""

    __tablename__ = "workflow_snapshot"
    __table_args__ = (UniqueConstraint("workflow_id", "content_hash"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    workflow_id: Mapped[int] = mapped_column(ForeignKey("workflow.id"))
    content_hash: Mapped[str] = mapped_column(String(64))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WorkflowRun(Base):
    __tablename__ = "workflow_run"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    workflow_id: Mapped[int] = mapped_column(ForeignKey("workflow.id"), index=True)
    snapshot_id: Mapped[int | None] = mapped_column(ForeignKey("workflow_snapshot.id"), nullable=True)
    state: Mapped[str] = mapped_column(String(32))
    properties: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Job(Base):
    __tablename__ = "job"
    __table_args__ = (UniqueConstraint("workflow_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    workflow_id: Mapped[int] = mapped_column(ForeignKey("workflow.id"))
    name: Mapped[str] = mapped_column(String(255))
    engine: Mapped[str] = mapped_column(String(64))
    config: Mapped[dict | None] = mapped_column(JSON, nullable=True)


class JobRun(Base):
    __tablename__ = "job_run"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("job.id"), index=True)
    workflow_run_id: Mapped[int | None] = mapped_column(ForeignKey("workflow_run.id"), nullable=True, index=True)
    state: Mapped[str] = mapped_column(String(32))
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    log_uri: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # where a stopped streaming job saved its state (migration savepoints_0001); its next start resumes there
    savepoint: Mapped[str | None] = mapped_column(Text, nullable=True)


class Dataset(Base):
    __tablename__ = "dataset"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    uri: Mapped[str | None] = mapped_column(Text, nullable=True)
    schema: Mapped[dict | list | None] = mapped_column(JSON, nullable=True)
    properties: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Model(Base):
    __tablename__ = "model"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ModelVersion(Base):
    __tablename__ = "model_version"
    __table_args__ = (
        UniqueConstraint("model_id", "version"),
        Index("ix_model_version_model_id_stage_version", "model_id", "stage", "version"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("model.id"))
    version: Mapped[int] = mapped_column(Integer)
    uri: Mapped[str] = mapped_column(Text)
    metrics: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    stage: Mapped[str] = mapped_column(String(32))
    job_run_id: Mapped[int | None] = mapped_column(ForeignKey("job_run.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


# --- added by migration 0002 ---------------------------------------------------------------------


class Artifact(Base):
    __tablename__ = "artifact"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    uri: Mapped[str] = mapped_column(Text)
    kind: Mapped[str | None] = mapped_column(String(64), nullable=True)
    properties: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    job_run_id: Mapped[int | None] = mapped_column(ForeignKey("job_run.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Metric(Base):
    __tablename__ = "metric"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    value: Mapped[float] = mapped_column(Float)
    step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    job_run_id: Mapped[int | None] = mapped_column(ForeignKey("job_run.id"), nullable=True, index=True)
    model_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_version.id"), nullable=True, index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LineageEdge(Base):
    """One provenance fact: ``src`` --relation--> ``dst``; kinds: dataset, job_run, model_version, job."""

    __tablename__ = "lineage_edge"
    __table_args__ = (
        UniqueConstraint("src_kind", "src_id", "dst_kind", "dst_id", "relation"),
        Index("ix_lineage_edge_dst_kind_dst_id", "dst_kind", "dst_id"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    src_kind: Mapped[str] = mapped_column(String(32))
    src_id: Mapped[int] = mapped_column(Integer)
    dst_kind: Mapped[str] = mapped_column(String(32))
    dst_id: Mapped[int] = mapped_column(Integer)
    relation: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# --- event bus (migration events_0001) -----------------------------------------------------------


class EventRecord(Base):
    """One event of the bus's append-only log (see ``aiflow_notebook.events.log``).

    ``version`` is the global order, assigned by the single event server writing the log (on SQLite it is
    the rowid). ``(client_id, seq)`` identifies the send that stored the event, so a resent request is
    recognised and answered with the stored version instead of being stored twice. Column names avoid
    SQL keywords (``key``, ``value``) so that no dialect needs quoting.
    """

    __tablename__ = "event_log"
    __table_args__ = (
        UniqueConstraint("client_id", "seq"),
        Index("ix_event_log_event_key_version", "event_key", "version"),
    )
    version: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                         autoincrement=False)
    event_key: Mapped[str] = mapped_column(String(1024))
    event_value: Mapped[str] = mapped_column(Text)
    event_type: Mapped[str] = mapped_column(String(255))
    namespace: Mapped[str] = mapped_column(String(255))
    sender: Mapped[str | None] = mapped_column(String(255), nullable=True)
    context: Mapped[str | None] = mapped_column(Text, nullable=True)
    create_time: Mapped[int] = mapped_column(BigInteger)  # ms since the epoch, the server's clock at commit
    client_id: Mapped[str] = mapped_column(String(255))
    seq: Mapped[int] = mapped_column(BigInteger)


# --- scheduler (migration scheduler_0001) ----------------------------------------------------------


class SchedulerCursor(Base):
    """The version of the last event a scheduler handled; committed with the effects of that event."""

    __tablename__ = "scheduler_cursor"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_version: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class RunRules(Base):
    """The scheduling rules of one workflow run and their evaluation state (JSON)."""

    __tablename__ = "run_rules"
    workflow_run_id: Mapped[int] = mapped_column(ForeignKey("workflow_run.id"), primary_key=True)
    scheduler: Mapped[str] = mapped_column(String(64), index=True)
    since_version: Mapped[int] = mapped_column(Integer)
    rules: Mapped[list] = mapped_column(JSON)
    active: Mapped[bool] = mapped_column(default=True)


class SchedulerAction(Base):
    """An action the scheduler decided (outbox): committed before it is carried out, marked done after."""

    __tablename__ = "scheduler_action"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    workflow_run_id: Mapped[int] = mapped_column(ForeignKey("workflow_run.id"), index=True)
    job: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(16))
    event_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="PENDING", index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class JobProcessRecord(Base):
    """How to find a job run's process again after a scheduler restart (pid, start time, log, status)."""

    __tablename__ = "job_process"
    job_run_id: Mapped[int] = mapped_column(ForeignKey("job_run.id"), primary_key=True)
    action_id: Mapped[int | None] = mapped_column(ForeignKey("scheduler_action.id"), nullable=True, index=True)
    record: Mapped[dict | None] = mapped_column(JSON, nullable=True)


# --- schedules, triggers, periodic jobs (migration schedules_0001) ---------------------------------------


class WorkflowSchedule(Base):
    """A workflow that runs on a cron expression or an interval; ``next_tick`` moves on in the transaction
    that creates the tick's run (exactly once)."""

    __tablename__ = "workflow_schedule"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scheduler: Mapped[str] = mapped_column(String(64), index=True)
    workflow: Mapped[str] = mapped_column(String(255))
    project: Mapped[str] = mapped_column(String(255))
    uri: Mapped[str] = mapped_column(String(1024))
    snapshot_id: Mapped[int] = mapped_column(ForeignKey("workflow_snapshot.id"))
    timing: Mapped[dict] = mapped_column(JSON)
    anchor: Mapped[float] = mapped_column(Float)
    next_tick: Mapped[float] = mapped_column(Float)
    paused: Mapped[bool] = mapped_column(default=False)
    fired: Mapped[int] = mapped_column(Integer, default=0)
    last_run_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cwd: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    created_by: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WorkflowTrigger(Base):
    """A workflow that starts when a condition over events is met; ``state`` is the condition's rule state,
    committed with the scheduler's cursor and the runs it starts."""

    __tablename__ = "workflow_trigger"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scheduler: Mapped[str] = mapped_column(String(64), index=True)
    workflow: Mapped[str] = mapped_column(String(255))
    project: Mapped[str] = mapped_column(String(255))
    uri: Mapped[str] = mapped_column(String(1024))
    snapshot_id: Mapped[int] = mapped_column(ForeignKey("workflow_snapshot.id"))
    condition_uri: Mapped[str] = mapped_column(String(1024))
    since_version: Mapped[int] = mapped_column(Integer)
    state: Mapped[list] = mapped_column(JSON)
    fired: Mapped[int] = mapped_column(Integer, default=0)
    last_run_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cwd: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    created_by: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PeriodicJob(Base):
    """A periodic job of a live run: when it ticks next (moved on with the tick's START action)."""

    __tablename__ = "periodic_job"
    workflow_run_id: Mapped[int] = mapped_column(ForeignKey("workflow_run.id"), primary_key=True)
    job: Mapped[str] = mapped_column(String(255), primary_key=True)
    timing: Mapped[dict] = mapped_column(JSON)
    anchor: Mapped[float] = mapped_column(Float)
    next_tick: Mapped[float] = mapped_column(Float)
