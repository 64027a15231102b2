"""The scheduler's durable state, in the metadata database.

Exactly-once rests on one rule: the effects of handling an event — the rules' new state, the actions it
decided (an outbox) and the version of the event — commit in **one transaction**. A crash before the
commit means the event is handled again from scratch; after it, the outbox says what is left to do.
An action is carried out at most once because a job run row (with the action's id) is committed before
its process starts, and the process record after; recovery adopts what it finds instead of starting it
again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from aiflow_notebook.core.vocabulary import ACTIVE_STATES as ACTIVE_JOB_STATES
from aiflow_notebook.core.vocabulary import DEFAULT_SCHEDULER, JobState, RunState
from aiflow_notebook.meta import orm
from aiflow_notebook.meta.orm import utcnow
from aiflow_notebook.meta.store import MetadataStore
from aiflow_notebook.scheduler.rules import Rule
from aiflow_notebook.sdk.control import Action


class Outbox(StrEnum):
    """The states of a decided action in the outbox: to carry out, carried out, dropped with its run."""

    PENDING = "PENDING"
    DONE = "DONE"
    CANCELLED = "CANCELLED"


@dataclass
class ActiveRun:
    """A live workflow run the scheduler is responsible for: its rules, with their state."""

    run_id: int
    workflow: str
    project: str
    since_version: int
    rules: list[Rule]
    edges: list[dict[str, Any]]
    snapshot_id: int | None


@dataclass(frozen=True)
class PendingAction:
    id: int
    run_id: int
    job: str
    action: str
    event_version: int | None = None  # the event that decided it (None: a restart after a lost process)


@dataclass(frozen=True)
class ActiveJobRun:
    job_run_id: int
    run_id: int
    job: str
    state: str
    action_id: int | None
    record: dict | None
    attempt: int = 0


class SchedulerState:
    def __init__(self, store: MetadataStore, name: str = DEFAULT_SCHEDULER):
        self.store = store
        self.name = name
        self._db = store._db

    # --- cursor ----------------------------------------------------------------------------------

    def last_version(self) -> int:
        with self._db.reading() as session:
            row = session.get(orm.SchedulerCursor, self.name)
            return row.last_version if row else 0

    # --- runs ------------------------------------------------------------------------------------

    def create_run(self, workflow: str, project: str, snapshot_id: int, edges: list[dict[str, Any]],
                   initial_jobs: list[str], event_version: int, properties: dict[str, Any]) -> int:
        """Record a new run, its rules and the START actions of its initial jobs, with the cursor."""

        def work(session: Session) -> int:
            run_id = insert_run(session, self.name, snapshot_id, edges, initial_jobs, event_version, properties)
            self._advance(session, event_version)
            return run_id

        return self._db.transaction(work)

    def active_runs(self) -> list[ActiveRun]:
        with self._db.reading() as session:
            rows = session.execute(
                select(orm.RunRules, orm.WorkflowRun, orm.Workflow.name, orm.Project.name)
                .join(orm.WorkflowRun, orm.WorkflowRun.id == orm.RunRules.workflow_run_id)
                .join(orm.Workflow, orm.Workflow.id == orm.WorkflowRun.workflow_id)
                .join(orm.Project, orm.Project.id == orm.Workflow.project_id)
                .where(orm.RunRules.scheduler == self.name, orm.RunRules.active.is_(True))
                .order_by(orm.RunRules.workflow_run_id)).all()
            return [ActiveRun(run_id=rules.workflow_run_id, workflow=wf, project=project,
                             since_version=rules.since_version,
                             rules=[Rule.from_edge(r["edge"], r["met"]) for r in rules.rules],
                             edges=[r["edge"] for r in rules.rules], snapshot_id=run.snapshot_id)
                    for rules, run, wf, project in rows]

    def last_ended_run(self) -> tuple[ActiveRun, str] | None:
        """The run of this scheduler that ended last, with its final state. The loop announces each end
        right after committing it, so a crash can have kept at most this one end from the bus."""
        with self._db.reading() as session:
            row = session.execute(
                select(orm.RunRules.since_version, orm.WorkflowRun, orm.Workflow.name, orm.Project.name)
                .join(orm.WorkflowRun, orm.WorkflowRun.id == orm.RunRules.workflow_run_id)
                .join(orm.Workflow, orm.Workflow.id == orm.WorkflowRun.workflow_id)
                .join(orm.Project, orm.Project.id == orm.Workflow.project_id)
                .where(orm.RunRules.scheduler == self.name, orm.RunRules.active.is_(False),
                       orm.WorkflowRun.ended_at.is_not(None))
                .order_by(orm.WorkflowRun.ended_at.desc(), orm.WorkflowRun.id.desc()).limit(1)).first()
            if row is None:
                return None
            since_version, run, workflow, project = row
            return ActiveRun(run_id=run.id, workflow=workflow, project=project, since_version=since_version,
                             rules=[], edges=[], snapshot_id=run.snapshot_id), run.state

    def commit_event(self, version: int, runs: list[ActiveRun], actions: list[tuple[int, str, str, int]],
                     also: Callable[[Session], None] | None = None) -> None:
        """Commit the rules' state of ``runs``, the decided ``actions`` (run id, job, action, event version)
        and the cursor, in one transaction. A NONE action is recorded as done: there is nothing to carry out.
        ``also(session)`` adds more work to the same transaction (workflow triggers: their state, new runs).

        Plain SQL statements (executemany), not the ORM's unit of work: this is the scheduler's hot path.
        """
        now = utcnow()
        rules = orm.RunRules.__table__
        outbox = orm.SchedulerAction.__table__

        def work(session: Session) -> None:
            conn = session.connection()
            if runs:
                conn.execute(update(rules).where(rules.c.workflow_run_id == bindparam("run_id"))
                             .values(rules=bindparam("state")),
                             [{"run_id": run.run_id, "state": [{"edge": e, "met": r.met}
                                                               for e, r in zip(run.edges, run.rules, strict=True)]}
                              for run in runs])
            if actions:
                conn.execute(insert(outbox), [
                    {"workflow_run_id": run_id, "job": job, "action": action, "event_version": event_version,
                     "state": Outbox.DONE if action == Action.NONE else Outbox.PENDING, "created_at": now,
                     "done_at": now if action == Action.NONE else None}
                    for run_id, job, action, event_version in actions])
            if also is not None:
                also(session)
            self._advance(session, version)

        self._db.transaction(work)

    def advance(self, version: int) -> None:
        """Move the cursor past an event that changed nothing."""
        self._db.transaction(lambda session: self._advance(session, version))

    def request_stop(self, run_id: int, version: int | None) -> None:
        """Record that the run is being stopped (a restarted scheduler carries on), with the cursor."""

        def work(session: Session) -> None:
            run = session.get(orm.WorkflowRun, run_id)
            run.properties = {**(run.properties or {}), "stop_requested": True}
            if version is not None:
                self._advance(session, version)

        self._db.transaction(work)

    def run_properties(self, run_id: int) -> dict[str, Any]:
        with self._db.reading() as session:
            run = session.get(orm.WorkflowRun, run_id)
            return dict(run.properties or {}) if run is not None else {}

    def finish_run(self, run_id: int, state: str) -> None:
        def work(session: Session) -> None:
            session.execute(update(orm.RunRules).where(orm.RunRules.workflow_run_id == run_id).values(active=False))
            run = session.get(orm.WorkflowRun, run_id)
            run.state, run.ended_at = state, utcnow()
            session.execute(update(orm.SchedulerAction).where(orm.SchedulerAction.workflow_run_id == run_id,
                                                              orm.SchedulerAction.state == Outbox.PENDING)
                            .values(state=Outbox.CANCELLED, done_at=utcnow()))

        self._db.transaction(work)

    def _advance(self, session: Session, version: int) -> None:
        cursor = orm.SchedulerCursor.__table__
        moved = session.connection().execute(
            update(cursor).where(cursor.c.name == self.name, cursor.c.last_version < version)
            .values(last_version=version, updated_at=utcnow()))
        if moved.rowcount == 0 and session.get(orm.SchedulerCursor, self.name) is None:
            session.add(orm.SchedulerCursor(name=self.name, last_version=version))

    # --- actions and job runs ------------------------------------------------------------------------

    def pending_actions(self, run_id: int | None = None) -> list[PendingAction]:
        with self._db.reading() as session:
            query = (select(orm.SchedulerAction).join(orm.RunRules, orm.RunRules.workflow_run_id ==
                                                      orm.SchedulerAction.workflow_run_id)
                     .where(orm.SchedulerAction.state == Outbox.PENDING, orm.RunRules.scheduler == self.name))
            if run_id is not None:
                query = query.where(orm.SchedulerAction.workflow_run_id == run_id)
            return [PendingAction(a.id, a.workflow_run_id, a.job, a.action, a.event_version)
                    for a in session.scalars(query.order_by(orm.SchedulerAction.id))]

    def action_done(self, action_id: int) -> None:
        self._db.transaction(lambda session: session.execute(
            update(orm.SchedulerAction).where(orm.SchedulerAction.id == action_id)
            .values(state=Outbox.DONE, done_at=utcnow())))

    def job_run_for_action(self, action_id: int) -> ActiveJobRun | None:
        with self._db.reading() as session:
            row = session.execute(select(orm.JobProcessRecord, orm.JobRun, orm.Job.name)
                                  .join(orm.JobRun, orm.JobRun.id == orm.JobProcessRecord.job_run_id)
                                  .join(orm.Job, orm.Job.id == orm.JobRun.job_id)
                                  .where(orm.JobProcessRecord.action_id == action_id)).first()
            if row is None:
                return None
            proc, run, job = row
            return ActiveJobRun(run.id, run.workflow_run_id, job, run.state, proc.action_id, proc.record)

    def new_job_run(self, run: ActiveRun, job: str, engine: str, action_id: int | None) -> tuple[int, int]:
        """Commit a STARTING job run for ``action_id`` (attempt = earlier runs of the job); (id, attempt)."""

        def work(session: Session) -> tuple[int, int]:
            job_row = session.scalar(select(orm.Job).join(orm.Workflow, orm.Workflow.id == orm.Job.workflow_id)
                                     .join(orm.WorkflowRun, orm.WorkflowRun.workflow_id == orm.Workflow.id)
                                     .where(orm.WorkflowRun.id == run.run_id, orm.Job.name == job))
            if job_row is None:
                workflow_id = session.get(orm.WorkflowRun, run.run_id).workflow_id
                job_row = orm.Job(workflow_id=workflow_id, name=job, engine=engine)
                session.add(job_row)
                session.flush()
            attempt = session.scalar(select(func.count(orm.JobRun.id)).where(
                orm.JobRun.workflow_run_id == run.run_id, orm.JobRun.job_id == job_row.id)) or 0
            job_run = orm.JobRun(job_id=job_row.id, workflow_run_id=run.run_id, state=JobState.STARTING, attempt=attempt,
                                 started_at=utcnow())
            session.add(job_run)
            session.flush()
            session.add(orm.JobProcessRecord(job_run_id=job_run.id, action_id=action_id, record=None))
            return job_run.id, attempt

        return self._db.transaction(work)

    def job_started(self, job_run_id: int, record: dict, log_uri: str, action_id: int | None) -> None:
        """The process runs: save how to find it, mark the run RUNNING and the action done — atomically."""

        def work(session: Session) -> None:
            session.get(orm.JobProcessRecord, job_run_id).record = record
            job_run = session.get(orm.JobRun, job_run_id)
            job_run.state, job_run.log_uri = JobState.RUNNING, log_uri
            if action_id is not None:
                session.execute(update(orm.SchedulerAction).where(orm.SchedulerAction.id == action_id)
                                .values(state=Outbox.DONE, done_at=utcnow()))

        self._db.transaction(work)

    def job_ended(self, job_run_id: int, state: str, error: str | None,
                  restart: tuple[int, str] | None = None, savepoint: str | None = None) -> None:
        """Record a job run's final state (and the savepoint its stop left, if any); ``restart`` =
        (run id, job) also queues a START, atomically."""

        def work(session: Session) -> None:
            row = session.get(orm.JobRun, job_run_id)
            row.state, row.ended_at = state, utcnow()
            if error is not None:
                row.error = error
            if savepoint is not None:
                row.savepoint = savepoint
            if restart is not None:
                session.add(orm.SchedulerAction(workflow_run_id=restart[0], job=restart[1], action=Action.START,
                                                state=Outbox.PENDING))

        self._db.transaction(work)

    def previous_savepoint(self, run_id: int, job: str, job_run_id: int) -> str | None:
        """The savepoint of the job run of ``job`` in this run just before ``job_run_id`` (None when that one
        left none: a failed savepoint, a crash, a batch job), which the next start resumes from."""
        with self._db.reading() as session:
            return session.scalar(select(orm.JobRun.savepoint)
                                  .join(orm.Job, orm.Job.id == orm.JobRun.job_id)
                                  .where(orm.JobRun.workflow_run_id == run_id, orm.Job.name == job,
                                         orm.JobRun.id < job_run_id)
                                  .order_by(orm.JobRun.id.desc()).limit(1))

    def savepoints(self, run_id: int, job: str) -> list[str]:
        """The savepoints the job runs of ``job`` in this run left, newest first."""
        with self._db.reading() as session:
            return list(session.scalars(select(orm.JobRun.savepoint)
                                        .join(orm.Job, orm.Job.id == orm.JobRun.job_id)
                                        .where(orm.JobRun.workflow_run_id == run_id, orm.Job.name == job,
                                               orm.JobRun.savepoint.is_not(None))
                                        .order_by(orm.JobRun.id.desc())))

    def active_job_runs(self, run_id: int | None = None) -> list[ActiveJobRun]:
        with self._db.reading() as session:
            query = (select(orm.JobRun, orm.Job.name, orm.JobProcessRecord)
                     .join(orm.Job, orm.Job.id == orm.JobRun.job_id)
                     .join(orm.JobProcessRecord, orm.JobProcessRecord.job_run_id == orm.JobRun.id)
                     .join(orm.RunRules, orm.RunRules.workflow_run_id == orm.JobRun.workflow_run_id)
                     .where(orm.JobRun.state.in_(ACTIVE_JOB_STATES), orm.RunRules.scheduler == self.name))
            if run_id is not None:
                query = query.where(orm.JobRun.workflow_run_id == run_id)
            return [ActiveJobRun(jr.id, jr.workflow_run_id, job, jr.state, proc.action_id, proc.record, jr.attempt)
                    for jr, job, proc in session.execute(query.order_by(orm.JobRun.id))]

    def job_runs(self, run_id: int) -> list[tuple[int, str, str, int]]:
        """Every job run of a workflow run: (job run id, job, state, attempt), oldest first."""
        with self._db.reading() as session:
            return [tuple(row) for row in session.execute(
                select(orm.JobRun.id, orm.Job.name, orm.JobRun.state, orm.JobRun.attempt)
                .join(orm.Job, orm.Job.id == orm.JobRun.job_id)
                .where(orm.JobRun.workflow_run_id == run_id).order_by(orm.JobRun.id))]

    def job_states(self, run_id: int) -> dict[str, str]:
        """The latest state of each job of the run that has run at all."""
        with self._db.reading() as session:
            rows = session.execute(select(orm.Job.name, orm.JobRun.state).join(orm.Job, orm.Job.id == orm.JobRun.job_id)
                                   .where(orm.JobRun.workflow_run_id == run_id).order_by(orm.JobRun.id)).all()
            return dict(rows)


def insert_run(session: Session, scheduler: str, snapshot_id: int, edges: list[dict[str, Any]],
               initial_jobs: list[str], since_version: int, properties: dict[str, Any],
               start_version: int | None = None) -> int:
    """Add a run of a snapshot, its rules (seeing events after ``since_version``) and the START actions of
    its initial jobs (decided by event ``start_version``, default ``since_version``) to the transaction of
    ``session``; the run's id."""
    run_id = _workflow_run(session, snapshot_id, properties)
    rules = [Rule.from_edge(edge).met for edge in edges]
    session.add(orm.RunRules(workflow_run_id=run_id, scheduler=scheduler, since_version=since_version,
                             rules=[{"edge": e, "met": m} for e, m in zip(edges, rules, strict=True)], active=True))
    for job in initial_jobs:
        session.add(orm.SchedulerAction(workflow_run_id=run_id, job=job, action=Action.START,
                                        event_version=since_version if start_version is None else start_version,
                                        state=Outbox.PENDING))
    return run_id


def _workflow_run(session: Session, snapshot_id: int, properties: dict[str, Any]) -> int:
    workflow_id = session.get(orm.WorkflowSnapshot, snapshot_id).workflow_id
    run = orm.WorkflowRun(workflow_id=workflow_id, snapshot_id=snapshot_id, state=RunState.RUNNING,
                          properties=properties)
    session.add(run)
    session.flush()
    return run.id
