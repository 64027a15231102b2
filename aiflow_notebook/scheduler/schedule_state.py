"""Durable state of workflow schedules, workflow triggers and periodic jobs (one transaction per decision).

Exactly once, as for events (see ``state``): a schedule's tick creates its run and moves ``next_tick``
in one transaction; a periodic job's tick queues its START action and moves ``next_tick`` in one
transaction; a trigger's new state and the runs it starts are added to the transaction that moves the
scheduler's cursor past the triggering event (``SchedulerState.commit_event(..., also=...)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from aiflow_notebook.meta import orm
from aiflow_notebook.scheduler.state import Outbox, SchedulerState, insert_run
from aiflow_notebook.sdk.control import Action


@dataclass
class ScheduleRow:
    id: int
    workflow: str
    project: str
    uri: str
    snapshot_id: int
    timing: dict[str, Any]
    anchor: float
    next_tick: float
    paused: bool
    fired: int
    last_run_id: int | None
    cwd: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass
class TriggerRow:
    id: int
    workflow: str
    project: str
    uri: str
    snapshot_id: int
    condition_uri: str
    since_version: int
    state: list
    fired: int
    last_run_id: int | None
    cwd: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k != "state"}


@dataclass(frozen=True)
class NewRun:
    """What a schedule or trigger starts: a run of a snapshot (initial jobs, rules)."""

    snapshot_id: int
    edges: list[dict[str, Any]]
    initial_jobs: list[str]
    since_version: int
    properties: dict[str, Any]
    start_version: int | None = None  # the event that decided the initial STARTs (a trigger's event)


class ScheduleState:
    """Commands (add, pause, delete...) commit with the cursor past their event, like every decision."""

    def __init__(self, cursor: SchedulerState):
        self.name = cursor.name
        self._db = cursor.store._db
        self._advance = cursor._advance

    # --- workflow schedules --------------------------------------------------------------------------

    def add_schedule(self, version: int, workflow: str, project: str, uri: str, snapshot_id: int,
                     timing: dict[str, Any], anchor: float, next_tick: float, created_by: str | None,
                     cwd: str | None) -> int:
        def work(session: Session) -> int:
            row = orm.WorkflowSchedule(scheduler=self.name, workflow=workflow, project=project, uri=uri,
                                       snapshot_id=snapshot_id, timing=timing, anchor=anchor, next_tick=next_tick,
                                       paused=False, fired=0, created_by=created_by, cwd=cwd)
            session.add(row)
            session.flush()
            self._advance(session, version)
            return row.id

        return self._db.transaction(work)

    def schedules(self) -> list[ScheduleRow]:
        with self._db.reading() as session:
            rows = session.scalars(select(orm.WorkflowSchedule).where(orm.WorkflowSchedule.scheduler == self.name)
                                   .order_by(orm.WorkflowSchedule.id))
            return [ScheduleRow(r.id, r.workflow, r.project, r.uri, r.snapshot_id, dict(r.timing), r.anchor,
                                r.next_tick, r.paused, r.fired, r.last_run_id, r.cwd) for r in rows]

    def set_paused(self, version: int, schedule_id: int, paused: bool, next_tick: float) -> bool:
        table = orm.WorkflowSchedule.__table__
        return self._with_cursor(version, lambda session: session.connection().execute(
            update(table).where(table.c.id == schedule_id, table.c.scheduler == self.name)
            .values(paused=paused, next_tick=next_tick)).rowcount == 1)

    def delete_schedule(self, version: int, schedule_id: int) -> bool:
        table = orm.WorkflowSchedule.__table__
        return self._with_cursor(version, lambda session: session.connection().execute(
            delete(table).where(table.c.id == schedule_id, table.c.scheduler == self.name)).rowcount == 1)

    def fire_schedule(self, schedule_id: int, tick: float, next_tick: float, run: NewRun) -> int | None:
        """Create the tick's run and move the schedule to ``next_tick`` — only if it still waits for ``tick``
        (so a tick is never fired twice); the run's id, else None."""
        table = orm.WorkflowSchedule.__table__

        def work(session: Session) -> int | None:
            row = session.connection().execute(select(table.c.next_tick, table.c.paused).where(
                table.c.id == schedule_id)).first()
            if row is None or row.paused or row.next_tick != tick:
                return None
            run_id = insert_run(session, self.name, run.snapshot_id, run.edges, run.initial_jobs, run.since_version,
                                run.properties)
            session.connection().execute(update(table).where(table.c.id == schedule_id).values(
                next_tick=next_tick, fired=table.c.fired + 1, last_run_id=run_id))
            return run_id

        return self._db.transaction(work)

    # --- workflow triggers ---------------------------------------------------------------------------

    def add_trigger(self, version: int, workflow: str, project: str, uri: str, snapshot_id: int,
                    condition_uri: str, state: list, created_by: str | None, cwd: str | None) -> int:
        """A trigger that sees the events after ``version`` (the command that added it)."""

        def work(session: Session) -> int:
            row = orm.WorkflowTrigger(scheduler=self.name, workflow=workflow, project=project, uri=uri,
                                      snapshot_id=snapshot_id, condition_uri=condition_uri, since_version=version,
                                      state=state, fired=0, created_by=created_by, cwd=cwd)
            session.add(row)
            session.flush()
            self._advance(session, version)
            return row.id

        return self._db.transaction(work)

    def triggers(self) -> list[TriggerRow]:
        with self._db.reading() as session:
            rows = session.scalars(select(orm.WorkflowTrigger).where(orm.WorkflowTrigger.scheduler == self.name)
                                   .order_by(orm.WorkflowTrigger.id))
            return [TriggerRow(r.id, r.workflow, r.project, r.uri, r.snapshot_id, r.condition_uri, r.since_version,
                               list(r.state), r.fired, r.last_run_id, r.cwd) for r in rows]

    def delete_trigger(self, version: int, trigger_id: int) -> bool:
        table = orm.WorkflowTrigger.__table__
        return self._with_cursor(version, lambda session: session.connection().execute(
            delete(table).where(table.c.id == trigger_id, table.c.scheduler == self.name)).rowcount == 1)

    def trigger_work(self, states: dict[int, list], starts: list[tuple[int, NewRun]], created: list[tuple[int, int]]):
        """Work for the cursor's transaction: the triggers' new ``states`` and a run per ``starts`` entry
        (trigger id, run); fills ``created`` with (trigger id, run id) — the work may run more than once."""
        table = orm.WorkflowTrigger.__table__

        def work(session: Session) -> None:
            created.clear()
            conn = session.connection()
            for trigger_id, state in states.items():
                conn.execute(update(table).where(table.c.id == trigger_id).values(state=state))
            for trigger_id, run in starts:
                run_id = insert_run(session, self.name, run.snapshot_id, run.edges, run.initial_jobs,
                                    run.since_version, run.properties, run.start_version)
                conn.execute(update(table).where(table.c.id == trigger_id).values(
                    fired=table.c.fired + 1, last_run_id=run_id))
                created.append((trigger_id, run_id))

        return work

    def _with_cursor(self, version: int, work):
        def both(session: Session):
            result = work(session)
            self._advance(session, version)
            return result

        return self._db.transaction(both)

    def latest_uri(self, workflow: str | None, project: str | None = None) -> str | None:
        """The blob of the workflow's latest run on this scheduler (what ``aiflow schedule add NAME`` runs)."""
        with self._db.reading() as session:
            query = (select(orm.WorkflowRun.properties).join(orm.Workflow, orm.Workflow.id == orm.WorkflowRun.workflow_id)
                     .join(orm.RunRules, orm.RunRules.workflow_run_id == orm.WorkflowRun.id)
                     .where(orm.Workflow.name == workflow, orm.RunRules.scheduler == self.name)
                     .order_by(orm.WorkflowRun.id.desc()))
            if project is not None:
                query = query.join(orm.Project, orm.Project.id == orm.Workflow.project_id).where(
                    orm.Project.name == project)
            for properties in session.scalars(query.limit(20)):
                if (properties or {}).get("uri"):
                    return properties["uri"]
        return None

    # --- periodic jobs -------------------------------------------------------------------------------

    def periodic_jobs(self, run_id: int) -> dict[str, tuple[dict[str, Any], float, float]]:
        """job -> (timing, anchor, next tick) of a run's periodic jobs that have a row."""
        with self._db.reading() as session:
            rows = session.scalars(select(orm.PeriodicJob).where(orm.PeriodicJob.workflow_run_id == run_id))
            return {r.job: (dict(r.timing), r.anchor, r.next_tick) for r in rows}

    def add_periodic_job(self, run_id: int, job: str, timing: dict[str, Any], anchor: float, next_tick: float) -> None:
        def work(session: Session) -> None:
            if session.get(orm.PeriodicJob, (run_id, job)) is None:
                session.add(orm.PeriodicJob(workflow_run_id=run_id, job=job, timing=timing, anchor=anchor,
                                            next_tick=next_tick))

        self._db.transaction(work)

    def tick_periodic_job(self, run_id: int, job: str, tick: float, next_tick: float) -> bool:
        """Queue the tick's START of ``job`` and move to ``next_tick``, once; whether it was queued."""
        table = orm.PeriodicJob.__table__

        def work(session: Session) -> bool:
            moved = session.connection().execute(update(table).where(
                table.c.workflow_run_id == run_id, table.c.job == job, table.c.next_tick == tick)
                .values(next_tick=next_tick))
            if moved.rowcount != 1:
                return False
            session.add(orm.SchedulerAction(workflow_run_id=run_id, job=job, action=Action.START, state=Outbox.PENDING))
            return True

        return self._db.transaction(work)
