"""Settling what ended: a job process's exit becomes its job run's final state (with the savepoint it left
and the datasets it wrote) and a status event; a run whose jobs are all done, or whose stop finished,
ends.

A job run ends KILLED when the scheduler stopped it, FINISHED when it exited 0, else FAILED with the tail
of its log; one lost without an exit status (``kill -9`` of its launcher) starts again when its job says
``on_lost="restart"``. The state is committed first and announced after, so a crash in between leaves a
state that recovery publishes (see ``recovery``).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from aiflow_notebook.core.vocabulary import JobState, RunState
from aiflow_notebook.engines.process import ExitStatus
from aiflow_notebook.scheduler.actions import Actions
from aiflow_notebook.scheduler.announce import Announcer
from aiflow_notebook.scheduler.live import Live, Running
from aiflow_notebook.scheduler.paths import Paths
from aiflow_notebook.scheduler.periodic import PeriodicJobs
from aiflow_notebook.scheduler.state import ActiveRun

log = logging.getLogger(__name__)

SAVEPOINTS_KEPT = 2  # per job of a run: the one its next start resumes from, and the one before
OUTCOME_KEYS = ("savepoint", "savepoint_error", "savepoint_note", "resumed_from", "resume_note")  # see Settler.outcome
LOG_TAIL_LINES = 20  # of a failed job's log, in its error


class Settler:
    """``state`` and ``store``: the loop's (durable) scheduler state and metadata store."""

    def __init__(self, state: Any, store: Any, live: Live, actions: Actions, periodic: PeriodicJobs,
                 announcer: Announcer, paths: Paths):
        self.state, self.store, self.live, self.actions = state, store, live, actions
        self.periodic, self.announcer, self.paths = periodic, announcer, paths

    # --- job runs ------------------------------------------------------------------------------------

    def exited(self, job_run_id: int) -> None:
        """A watcher saw the job's process end."""
        running = self.live.running.get(job_run_id)
        if running is not None:
            self.settle(running, running.process.poll() or ExitStatus(None))

    def stop_failed(self, item: tuple[int, str]) -> None:
        """A stop that raised: say so on the bus. The job is still watched and settles when it ends; the
        next request to stop it (a STOP action, ``run.stop()``) tries again."""
        job_run_id, error = item
        running = self.live.running.get(job_run_id)
        log.error("scheduler %s: could not stop job run %s: %s", self.state.name, job_run_id, error)
        if running is not None:
            running.stop_requested = None
        run = self.live.runs.get(running.run_id) if running is not None else None
        if run is not None:
            self.announcer.stop_failed(run, running.job, job_run_id, error)

    def settle(self, running: Running, status: ExitStatus) -> None:
        """Record how a job run ended and announce it (once)."""
        if running.job_run_id not in self.live.running:
            return
        state, error = self._final_state(running, status)
        run = self.live.runs.get(running.run_id)
        outcome = self.outcome(running)
        lost = state == JobState.FAILED and status.returncode is None  # gone without an exit status
        restart = lost and run is not None and self.live.job_property(run, running.job, "on_lost") == "restart"
        if restart:
            error += "\n(the process was lost; on_lost='restart' starts a new attempt)"
        self.state.job_ended(running.job_run_id, state, error,
                             restart=(running.run_id, running.job) if restart else None,
                             savepoint=outcome.get("savepoint"))
        self.live.running.pop(running.job_run_id, None)  # only now: a retried commit above finds it again
        if run is not None:
            self._settled(run, running, state, error, outcome)

    def _final_state(self, running: Running, status: ExitStatus) -> tuple[JobState, str | None]:
        if running.stop_requested is not None:
            return JobState.KILLED, None
        if status.succeeded:
            return JobState.FINISHED, None
        why = f"exit code {status.returncode}" if status.returncode is not None else "the process was killed"
        return JobState.FAILED, f"{why}; log tail:\n{running.process.log_tail(LOG_TAIL_LINES)}"

    def _settled(self, run: ActiveRun, running: Running, state: JobState, error: str | None,
                 outcome: dict[str, Any]) -> None:
        """What follows a committed end: savepoints pruned, outputs recorded, the status event, and the
        run's next step (its stop goes on, or what waited for this process)."""
        if outcome.get("savepoint"):
            self._prune_savepoints(run, running.job)
        if state == JobState.FINISHED:
            self._record_outputs(run, running)
        extra = {"stop_seconds": round(time.monotonic() - running.stop_requested, 3)} \
            if running.stop_requested is not None else {}
        extra.update(outcome)
        self.announcer.job_status(run, running.job, running.job_run_id, running.attempt, state, error, **extra)
        if run.run_id in self.live.stopping:
            self.continue_stop(run)
        else:
            self.actions.execute_pending(run.run_id)  # a STOP/RESTART that waited for this process, a lost-job restart

    def outcome(self, running: Running) -> dict[str, Any]:
        """What the job process reported on its way out (``outcome_path`` of its spec): the savepoint a
        streaming job's stop left (``savepoint``: a path, or None with ``savepoint_error``). Recorded on the
        job run and put in its final status event; the engine decides what it means, the scheduler only
        keeps the path and hands it to the job's next start (``resume_from``)."""
        path = Path(running.process.record.log_path).with_suffix(".outcome.json")
        try:
            outcome = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(outcome, dict):
            return {}
        return {key: outcome[key] for key in OUTCOME_KEYS if key in outcome}

    def _prune_savepoints(self, run: ActiveRun, job: str) -> None:
        """Delete a job's savepoints beyond the newest ``savepoints_kept`` (job property, default 2; 0 keeps
        every one): a streaming job restarted on every validated model for weeks must not fill the disk."""
        value = self.live.job_property(run, job, "savepoints_kept")
        try:
            kept = SAVEPOINTS_KEPT if value is None else int(value)
        except (TypeError, ValueError):
            log.warning("run %s: job %r: savepoints_kept must be a whole number; keeping %d", run.run_id, job,
                        SAVEPOINTS_KEPT)
            kept = SAVEPOINTS_KEPT
        if kept <= 0:
            return
        own_dir = self.paths.savepoints(run.workflow, run.run_id, job)
        for path in prune_savepoints(self.state.savepoints(run.run_id, job), own_dir, kept):
            log.info("run %s: deleted the savepoint %s of job %r (older than the %d kept)", run.run_id, path, job, kept)

    def _record_outputs(self, run: ActiveRun, running: Running) -> None:
        job = self.live.workflow(run).jobs.get(running.job)
        for dataset in getattr(job, "inputs", ()):
            self.store.register_dataset(dataset.name, uri=dataset.uri, schema=dataset.schema)
            self.store.record_dataset_read(running.job_run_id, dataset.name)
        for dataset in getattr(job, "outputs", ()):
            self.store.register_dataset(dataset.name, uri=dataset.uri, schema=dataset.schema)
            self.store.record_dataset_write(running.job_run_id, dataset.name)
            self.announcer.dataset_updated(run.run_id, running.job_run_id, dataset.name, dataset.uri)

    # --- runs ----------------------------------------------------------------------------------------

    def check_run_done(self, run_id: int) -> None:
        """End the run when nothing of it runs or waits any more: FAILED if a job's latest run failed,
        FINISHED once every job has run."""
        run = self.live.runs[run_id]
        if self.live.processes(run_id) or self.state.pending_actions(run_id):
            return
        if self.periodic.keeps_running(run_id):
            return
        states = self.state.job_states(run_id)
        if JobState.FAILED in states.values():
            self.finish_run(run, RunState.FAILED)
        elif set(states) >= set(self.live.workflow(run).jobs):
            self.finish_run(run, RunState.FINISHED)

    def continue_stop(self, run: ActiveRun) -> None:
        """Stop what still runs of a run being stopped; once nothing does, it ends KILLED."""
        running = self.live.processes(run.run_id)
        for job in running:
            self.actions.stop_job(job)
        if not running:
            self.live.stopping.discard(run.run_id)
            self.finish_run(run, RunState.KILLED)

    def finish_run(self, run: ActiveRun, state: RunState) -> None:
        self.state.finish_run(run.run_id, state)
        self.live.runs.pop(run.run_id, None)
        self.announcer.run_status(run.run_id, run.workflow, state)


def prune_savepoints(recorded: list[str], own_dir: Path, kept: int) -> list[Path]:
    """Delete the savepoints of ``recorded`` (paths or ``file:`` URIs, newest first) beyond the first ``kept``;
    returns those deleted. Only a directory named ``savepoint-…`` directly in ``own_dir`` (the run's job's own
    savepoint directory) is ever deleted: a recorded path anywhere else is left alone."""
    own, deleted = own_dir.resolve(), []
    for savepoint in recorded[kept:] if kept > 0 else []:
        path = Path(savepoint.removeprefix("file://").removeprefix("file:")).resolve()
        if path.parent != own or not path.name.startswith("savepoint-") or not path.is_dir():
            continue
        try:
            shutil.rmtree(path)
        except OSError as exc:
            log.warning("could not delete the old savepoint %s: %s", path, exc)
            continue
        deleted.append(path)
    return deleted
