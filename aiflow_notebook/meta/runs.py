"""Projects, workflows (and their compiled snapshots), workflow runs, jobs and job runs.

Mixed into :class:`~aiflow_notebook.meta.store.MetadataStore`. The scheduler records here what it runs;
job runs are what lineage hangs on (a job run reads datasets and produces model versions).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from aiflow_notebook.core.vocabulary import DEFAULT_PROJECT, FINAL_STATES, JobState, RunState
from aiflow_notebook.meta import orm
from aiflow_notebook.meta.errors import MetadataError, NotFoundError
from aiflow_notebook.meta.models import JobRun, WorkflowRunRecord
from aiflow_notebook.meta.orm import utcnow

MAX_LOG_BYTES = 1 << 20  # the most of a log's end one read takes
MAX_LOG_LINES = 10_000


class RunRegistry:
    """Workflow and job bookkeeping methods of the metadata store (needs ``self._db``)."""

    def register_workflow(self, name: str, project: str = DEFAULT_PROJECT) -> int:
        """Create (or find) ``project/name``; returns the workflow id."""
        return self._db.transaction(lambda session: _workflow_row(session, name, project, create=True).id)

    def save_workflow_snapshot(self, workflow: str, content_hash: str, payload: bytes,
                               project: str = DEFAULT_PROJECT) -> int:
        """Store a compiled workflow once per content hash; returns the snapshot id."""

        def work(session: Session) -> int:
            wf = _workflow_row(session, workflow, project, create=True)
            row = session.scalar(select(orm.WorkflowSnapshot).where(
                orm.WorkflowSnapshot.workflow_id == wf.id, orm.WorkflowSnapshot.content_hash == content_hash))
            if row is None:
                row = orm.WorkflowSnapshot(workflow_id=wf.id, content_hash=content_hash, payload=payload)
                session.add(row)
                session.flush()
            return row.id

        return self._db.transaction(work)

    def get_workflow_snapshot(self, snapshot_id: int) -> bytes:
        with self._db.reading() as session:
            row = session.get(orm.WorkflowSnapshot, snapshot_id)
            if row is None:
                raise NotFoundError(f"workflow snapshot {snapshot_id} does not exist")
            return row.payload

    def create_workflow_run(self, workflow: str, project: str = DEFAULT_PROJECT, snapshot_id: int | None = None,
                            properties: dict[str, Any] | None = None) -> int:
        def work(session: Session) -> int:
            wf = _workflow_row(session, workflow, project, create=True)
            row = orm.WorkflowRun(workflow_id=wf.id, snapshot_id=snapshot_id, state=RunState.RUNNING, properties=properties)
            session.add(row)
            session.flush()
            return row.id

        return self._db.transaction(work)

    def update_workflow_run(self, run_id: int, state: str) -> None:
        def work(session: Session) -> None:
            row = session.get(orm.WorkflowRun, run_id)
            if row is None:
                raise NotFoundError(f"workflow run {run_id} does not exist")
            row.state = state
            if state in FINAL_STATES:
                row.ended_at = utcnow()

        self._db.transaction(work)

    def register_job(self, workflow: str, name: str, engine: str = "python",
                     config: dict[str, Any] | None = None, project: str = DEFAULT_PROJECT) -> int:
        """Create or update job ``name`` of a workflow; returns the job id."""

        def work(session: Session) -> int:
            return _job_row(session, workflow, name, project, engine=engine, config=config).id

        return self._db.transaction(work)

    def start_job_run(self, workflow: str, job: str, *, workflow_run_id: int | None = None, attempt: int = 0,
                      state: str = JobState.RUNNING, log_uri: str | None = None, engine: str = "python",
                      project: str = DEFAULT_PROJECT) -> JobRun:
        """Record that a job started (creating the job if needed); returns the new job run."""

        def work(session: Session) -> orm.JobRun:
            job_row = _job_row(session, workflow, job, project, engine=engine)
            row = orm.JobRun(job_id=job_row.id, workflow_run_id=workflow_run_id, state=state, attempt=attempt,
                             started_at=utcnow(), log_uri=log_uri)
            session.add(row)
            session.flush()
            return row

        row = self._db.transaction(work)
        return _job_run(row, workflow, job)

    def update_job_run(self, job_run_id: int, state: str, *, error: str | None = None,
                       log_uri: str | None = None) -> JobRun:
        """Set a job run's state (and end time when the state is final)."""

        def work(session: Session) -> tuple[orm.JobRun, str, str]:
            row = session.get(orm.JobRun, job_run_id)
            if row is None:
                raise NotFoundError(f"job run {job_run_id} does not exist")
            row.state = state
            if error is not None:
                row.error = error
            if log_uri is not None:
                row.log_uri = log_uri
            if state in FINAL_STATES:
                row.ended_at = utcnow()
            job_row = session.get(orm.Job, row.job_id)
            return row, session.get(orm.Workflow, job_row.workflow_id).name, job_row.name

        return _job_run(*self._db.transaction(work))

    def get_job_run(self, job_run_id: int) -> JobRun:
        with self._db.reading() as session:
            row = session.get(orm.JobRun, job_run_id)
            if row is None:
                raise NotFoundError(f"job run {job_run_id} does not exist")
            job_row = session.get(orm.Job, row.job_id)
            return _job_run(row, session.get(orm.Workflow, job_row.workflow_id).name, job_row.name)

    def job_log(self, job_run_id: int, lines: int = 100) -> str:
        """The last ``lines`` lines of a job run's log (at most its last :data:`MAX_LOG_BYTES`; empty while
        there is none). Read where the store runs, so a connected notebook sees a remote job's log."""
        if isinstance(lines, bool) or not isinstance(lines, int) or not 0 < lines <= MAX_LOG_LINES:
            raise MetadataError(f"lines must be an integer from 1 to {MAX_LOG_LINES}, got {lines!r}")
        uri = self.get_job_run(job_run_id).log_uri
        if not uri:
            return ""
        try:
            with open(Path(uri.removeprefix("file://")), "rb") as fh:
                fh.seek(0, 2)
                fh.seek(max(0, fh.tell() - MAX_LOG_BYTES))
                return "\n".join(fh.read().decode("utf-8", "replace").splitlines()[-lines:])
        except OSError:
            return ""

    def get_workflow_run(self, run_id: int) -> WorkflowRunRecord:
        with self._db.reading() as session:
            found = session.execute(_run_query().where(orm.WorkflowRun.id == run_id)).first()
            if found is None:
                raise NotFoundError(f"workflow run {run_id} does not exist")
            return _run_record(*found)

    def list_workflow_runs(self, workflow: str | None = None, project: str | None = None,
                           limit: int = 100) -> list[WorkflowRunRecord]:
        """Runs, newest first, optionally of one workflow (by name, in any project unless ``project``)."""
        query = _run_query()
        if workflow is not None:
            query = query.where(orm.Workflow.name == workflow)
        if project is not None:
            query = query.where(orm.Project.name == project)
        with self._db.reading() as session:
            return [_run_record(*row) for row in session.execute(query.order_by(orm.WorkflowRun.id.desc()).limit(limit))]

    def count_workflow_runs(self) -> list[tuple[str, str, int, int]]:
        """``(project, workflow, number of runs, latest run id)`` of each workflow that has run, the most
        recently run first."""
        latest = func.max(orm.WorkflowRun.id)
        with self._db.reading() as session:
            return [tuple(row) for row in session.execute(
                select(orm.Project.name, orm.Workflow.name, func.count(orm.WorkflowRun.id), latest)
                .join(orm.Workflow, orm.Workflow.project_id == orm.Project.id)
                .join(orm.WorkflowRun, orm.WorkflowRun.workflow_id == orm.Workflow.id)
                .group_by(orm.Project.name, orm.Workflow.name).order_by(latest.desc()))]

    def list_job_runs(self, run_id: int) -> list[JobRun]:
        """Every job run (attempt) of workflow run ``run_id``, oldest first."""
        with self._db.reading() as session:
            rows = session.execute(select(orm.JobRun, orm.Job.name, orm.Workflow.name)
                                   .join(orm.Job, orm.Job.id == orm.JobRun.job_id)
                                   .join(orm.Workflow, orm.Workflow.id == orm.Job.workflow_id)
                                   .where(orm.JobRun.workflow_run_id == run_id).order_by(orm.JobRun.id))
            return [_job_run(row, workflow, job) for row, job, workflow in rows]


def _run_query():
    return (select(orm.WorkflowRun, orm.Workflow.name, orm.Project.name, orm.RunRules.scheduler)
            .join(orm.Workflow, orm.Workflow.id == orm.WorkflowRun.workflow_id)
            .join(orm.Project, orm.Project.id == orm.Workflow.project_id)
            .outerjoin(orm.RunRules, orm.RunRules.workflow_run_id == orm.WorkflowRun.id))


def _run_record(row: orm.WorkflowRun, workflow: str, project: str, scheduler: str | None) -> WorkflowRunRecord:
    return WorkflowRunRecord(id=row.id, workflow=workflow, project=project, state=row.state,
                             created_at=row.created_at, ended_at=row.ended_at, scheduler=scheduler,
                             snapshot_id=row.snapshot_id, properties=row.properties)


def _workflow_row(session: Session, name: str, project: str, create: bool = False) -> orm.Workflow:
    project_row = session.scalar(select(orm.Project).where(orm.Project.name == project))
    if project_row is None:
        if not create:
            raise NotFoundError(f"project {project!r} does not exist")
        project_row = orm.Project(name=project)
        session.add(project_row)
        session.flush()
    row = session.scalar(select(orm.Workflow).where(orm.Workflow.project_id == project_row.id,
                                                    orm.Workflow.name == name))
    if row is None:
        if not create:
            raise NotFoundError(f"workflow {project}/{name} does not exist")
        row = orm.Workflow(project_id=project_row.id, name=name)
        session.add(row)
        session.flush()
    return row


def _job_row(session: Session, workflow: str, name: str, project: str, engine: str,
             config: dict[str, Any] | None = None) -> orm.Job:
    wf = _workflow_row(session, workflow, project, create=True)
    row = session.scalar(select(orm.Job).where(orm.Job.workflow_id == wf.id, orm.Job.name == name))
    if row is None:
        row = orm.Job(workflow_id=wf.id, name=name, engine=engine, config=config)
        session.add(row)
        session.flush()
    elif config is not None or row.engine != engine:
        row.engine, row.config = engine, config if config is not None else row.config
    return row


def _job_run(row: orm.JobRun, workflow: str, job: str) -> JobRun:
    return JobRun(id=row.id, workflow=workflow, job=job, state=row.state, attempt=row.attempt,
                  started_at=row.started_at, ended_at=row.ended_at, log_uri=row.log_uri, error=row.error,
                  workflow_run_id=row.workflow_run_id, savepoint=row.savepoint)
