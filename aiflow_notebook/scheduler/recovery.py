"""Start-up after an earlier scheduler of the same name stopped or crashed: carry on where it was.

It loads the live runs (binding their custom conditions from our verified blob store), adopts the job
processes that still run — and those that started just before a crash, before their record was committed
— so that one that ended meanwhile is settled at once by its watcher, re-publishes what a crash kept from
the bus (the reply to a submission, a run's start, the latest job states, the last run's end), then
finishes the stops and pending actions it left.
"""

from __future__ import annotations

import json
from typing import Any

from aiflow_notebook.core.vocabulary import (
    CONTROL_NAMESPACE,
    DEFAULT_NAMESPACE,
    JOB_STATUS_CHANGED,
    RUN_CREATED,
    RUN_STATUS_CHANGED,
    SCHEDULER_SENDER,
    JobState,
    RunState,
    run_in_context,
)
from aiflow_notebook.engines.process import JobProcess, ProcessRecord
from aiflow_notebook.events import EventClient
from aiflow_notebook.scheduler.actions import Actions
from aiflow_notebook.scheduler.announce import Announcer
from aiflow_notebook.scheduler.intake import control_edges
from aiflow_notebook.scheduler.launch import Launcher
from aiflow_notebook.scheduler.live import Live, Running
from aiflow_notebook.scheduler.rules import CustomRule, bind
from aiflow_notebook.scheduler.settle import Settler
from aiflow_notebook.scheduler.state import ActiveJobRun, ActiveRun
from aiflow_notebook.storage.blobs import BlobStore

ORIGIN_FIELDS = ("schedule", "tick", "trigger", "event")  # what started a run, kept in its properties


class Recovery:
    """``state`` and ``store``: the (durable) scheduler state and metadata store; ``client``: the bus, to
    learn what it already has."""

    def __init__(self, state: Any, store: Any, blobs: BlobStore, live: Live, launcher: Launcher, actions: Actions,
                 settler: Settler, announcer: Announcer, client: EventClient):
        self.state, self.store, self.blobs, self.live = state, store, blobs, live
        self.launcher, self.actions, self.settler = launcher, actions, settler
        self.announcer, self.client = announcer, client

    def recover(self) -> None:
        self._load_runs()
        for active in self.state.active_job_runs():
            self._adopt(active)
        for run in list(self.live.runs.values()):
            self._republish_start(run)
            self._republish_states(run)
        self._republish_last_end()
        for run_id in list(self.live.runs):
            if run_id in self.live.stopping:
                self.settler.continue_stop(self.live.runs[run_id])
            else:
                self.actions.execute_pending(run_id)

    def _load_runs(self) -> None:
        for run in self.state.active_runs():
            self.live.add(run)
            properties = self.state.run_properties(run.run_id)
            if any(isinstance(rule, CustomRule) for rule in run.rules):  # unpickled only from our blob store
                from aiflow_notebook.sdk.workflow import Workflow

                bind(run.rules, control_edges(Workflow.from_bytes(self.blobs.get(properties["uri"]))))
            if properties.get("stop_requested"):
                self.live.stopping.add(run.run_id)  # a stop the previous scheduler had not finished

    def _adopt(self, active: ActiveJobRun) -> None:
        """Follow the process of an active job run; one never started is left to its pending START."""
        run = self.live.runs[active.run_id]
        process = JobProcess.adopt(ProcessRecord(**active.record)) if active.record else \
            self.launcher.find(run.run_id, active.job, active.job_run_id)
        if process is None:
            return
        if active.record is None:
            self.state.job_started(active.job_run_id, json.loads(process.record.to_json()),
                                   process.record.log_path, active.action_id)
        self.actions.watch(Running(run.run_id, active.job, active.job_run_id, active.attempt, process))

    def _republish_start(self, run: ActiveRun) -> None:
        """The run's beginning, unless the bus has it: the answer to its submission and its RUNNING status
        (with what started it: a schedule's tick, a trigger's event). A crash between the run's commit and
        these announcements would otherwise leave a run that runs but was never seen to start."""
        properties = self.state.run_properties(run.run_id)
        replies = self.client.list_events(key=self.announcer.command_key, namespace=CONTROL_NAMESPACE,
                                          event_type=RUN_CREATED, since_version=run.since_version)
        if not any(run_in_context(e.context) == run.run_id for e in replies):
            self.announcer.run_created(run.run_id, run.workflow, properties.get("request_id"))
        statuses = self.client.list_events(key=run.workflow, namespace=DEFAULT_NAMESPACE, event_type=RUN_STATUS_CHANGED,
                                           sender=SCHEDULER_SENDER, since_version=run.since_version)
        if not any(run_in_context(e.context) == run.run_id for e in statuses):
            origin = {field: properties[field] for field in ORIGIN_FIELDS if field in properties}
            self.announcer.run_status(run.run_id, run.workflow, RunState.RUNNING, **origin)

    def _republish_last_end(self) -> None:
        """The final status of the run that ended last, unless the bus has it (a wait on it would hang)."""
        ended = self.state.last_ended_run()
        if ended is None:
            return
        run, state = ended
        statuses = self.client.list_events(key=run.workflow, namespace=DEFAULT_NAMESPACE, event_type=RUN_STATUS_CHANGED,
                                           sender=SCHEDULER_SENDER, since_version=run.since_version)
        if not any(run_in_context(e.context) == run.run_id and e.value == state for e in statuses):
            self.announcer.run_status(run.run_id, run.workflow, state)

    def _republish_states(self, run: ActiveRun) -> None:
        """The state of each of the run's job runs that the bus does not have."""
        job_runs = self.state.job_runs(run.run_id)
        keys = sorted({f"{run.workflow}.{job}" for _, job, _, _ in job_runs})
        if not keys:
            return
        published: dict[int, set[str]] = {}
        for event in self.client.list_events(key=keys, event_type=JOB_STATUS_CHANGED, since_version=run.since_version):
            if run_in_context(event.context) == run.run_id:
                published.setdefault(json.loads(event.context).get("job_run"), set()).add(event.value)
        for job_run_id, job, state, attempt in job_runs:
            if state not in published.get(job_run_id, set()):
                error = self.store.get_job_run(job_run_id).error if state == JobState.FAILED else None
                self.announcer.job_status(run, job, job_run_id, attempt, state, error)
