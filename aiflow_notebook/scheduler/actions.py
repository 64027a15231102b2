"""Carrying out decided actions (the outbox): starting job processes, stopping them, following them.

An action is carried out at most once (see ``state``): a job run is committed before its process starts
and its process record after, so a scheduler that crashed in between finds the process (or its exit
status) instead of starting it again. STOP and RESTART begin stopping the job's processes and stay pending
until they are gone: a restarted job never overlaps its predecessor. SWAP starts a job that is not running,
and asks a running one to switch model versions in place (``MODEL_SWAP_REQUESTED``).

The loop never waits on a job: a stop (up to the grace period of a JVM) runs on a thread of its own, and
each process is followed by a watcher thread; both report to the loop through its inbox (:data:`EXIT`,
:data:`STOP_FAILED`).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from typing import Any

from aiflow_notebook.core.vocabulary import (
    DEFAULT_NAMESPACE,
    MODEL_SWAP_FAILED,
    MODEL_SWAP_REQUESTED,
    JobState,
    run_context,
)
from aiflow_notebook.engines.model_io import triggering_version
from aiflow_notebook.engines.process import STOP_GRACE_S, stop_grace
from aiflow_notebook.events import EventClient
from aiflow_notebook.scheduler.announce import Announcer
from aiflow_notebook.scheduler.launch import Launcher
from aiflow_notebook.scheduler.live import Live, Running
from aiflow_notebook.scheduler.state import ActiveRun, PendingAction
from aiflow_notebook.sdk.control import Action

log = logging.getLogger(__name__)

WATCH_POLL_S = 0.5  # how often a watcher thread looks whether the scheduler has stopped
EXIT = "exit"  # an inbox item (EXIT, job run id): the job's process ended
STOP_FAILED = "stop_failed"  # an inbox item (STOP_FAILED, (job run id, error)): stopping it raised
STOPPING = (Action.STOP, Action.RESTART)  # actions that wait until the job's processes are gone
STARTING = (Action.START, Action.RESTART, Action.SWAP)  # SWAP starts a job that is not running


class Actions:
    """``state``: the loop's (durable) scheduler state; ``client``: the bus, to read the event that decided
    an action; ``inbox``: the loop's queue; ``stopped``: set when the scheduler stops (watchers end)."""

    def __init__(self, state: Any, live: Live, launcher: Launcher, announcer: Announcer, client: EventClient,
                 inbox: queue.Queue, stopped: threading.Event):
        self.state, self.live, self.launcher, self.announcer = state, live, launcher, announcer
        self.client, self.inbox, self.stopped = client, inbox, stopped

    def execute_pending(self, run_id: int) -> None:
        """Carry out the run's pending actions, oldest first. STOP and RESTART begin stopping the job's
        processes and stay pending until they are gone (their exits call this again)."""
        if run_id in self.live.stopping:
            return
        for action in self.state.pending_actions(run_id):
            run = self.live.runs.get(action.run_id)
            if run is None:
                continue
            if action.action in STOPPING:
                stopping = self.live.processes(run.run_id, action.job)
                for running in stopping:
                    self.stop_job(running)
                if stopping:
                    continue
            if action.action in STARTING:
                self._start(run, action)
            else:
                self.state.action_done(action.id)

    def stop_job(self, running: Running) -> None:
        """Begin stopping a job on a thread of its own (SIGTERM, SIGKILL after the grace period): the loop
        goes on deciding meanwhile. The exit comes back through the job's watcher and is settled KILLED."""
        if running.stop_requested is not None:
            return
        running.stop_requested = time.monotonic()
        grace = self._grace(running)

        def stop() -> None:
            try:
                running.process.stop(grace=grace)
            except Exception as exc:  # noqa: BLE001 - reported to the loop, which records it
                self.inbox.put((STOP_FAILED, (running.job_run_id, f"{type(exc).__name__}: {exc}")))

        threading.Thread(target=stop, name=f"aiflow-stop-{running.job_run_id}", daemon=True).start()

    def watch(self, running: Running) -> None:
        """Follow the job's process on a thread that ends with the process or with the scheduler."""
        self.live.running[running.job_run_id] = running

        def wait() -> None:
            while not self.stopped.is_set():
                if running.process.wait(timeout=WATCH_POLL_S) is not None:
                    self.inbox.put((EXIT, running.job_run_id))
                    return

        threading.Thread(target=wait, name=f"aiflow-job-{running.job_run_id}", daemon=True).start()

    # --- starting a job ------------------------------------------------------------------------------

    def _start(self, run: ActiveRun, action: PendingAction) -> None:
        existing = self.state.job_run_for_action(action.id)
        live = self.live.processes(run.run_id, action.job)
        if existing is None and live:
            if all(r.stop_requested is not None for r in live):
                return  # stopping: start once it is gone (its exit runs the pending actions again)
            if action.action == Action.SWAP:
                self._request_swap(run, action, live[-1])
            self.state.action_done(action.id)  # START of a job that is already running: nothing to do
            return
        job = self.live.workflow(run).jobs.get(action.job)
        if job is None:
            log.error("run %s: rule names job %r, which the workflow does not have", run.run_id, action.job)
            self.state.action_done(action.id)
            return
        if existing is not None:  # recovery: the job run was committed before a crash
            if self._adopt(run, job.name, existing.job_run_id, action.id):
                return
            job_run_id, attempt = existing.job_run_id, 0
        else:
            job_run_id, attempt = self.state.new_job_run(run, job.name, job.engine, action.id)
            self.announcer.job_status(run, job.name, job_run_id, attempt, JobState.STARTING)
        self._launch(run, job, job_run_id, attempt, action)

    def _adopt(self, run: ActiveRun, job: str, job_run_id: int, action_id: int) -> bool:
        """Follow the process of a committed job run that started before a crash; False: it never started."""
        found = self.launcher.find(run.run_id, job, job_run_id)
        if found is None:
            return False
        self.state.job_started(job_run_id, json.loads(found.record.to_json()), found.record.log_path, action_id)
        self.watch(Running(run.run_id, job, job_run_id, 0, found))
        return True

    def _launch(self, run: ActiveRun, job: Any, job_run_id: int, attempt: int, action: PendingAction) -> None:
        resume_from = self.state.previous_savepoint(run.run_id, job.name, job_run_id)
        trigger = self._trigger(run, action)
        process = self.launcher.launch(run, job, job_run_id, attempt, self.state.run_properties(run.run_id),
                                       trigger, resume_from)
        self.state.job_started(job_run_id, json.loads(process.record.to_json()), process.record.log_path, action.id)
        self.announcer.job_status(run, job.name, job_run_id, attempt, JobState.RUNNING,
                                  **({"resume_from": resume_from} if resume_from else {}))
        self.watch(Running(run.run_id, job.name, job_run_id, attempt, process))

    def _request_swap(self, run: ActiveRun, action: PendingAction, running: Running) -> None:
        """SWAP of a running job: tell it (``MODEL_SWAP_REQUESTED``) which version the triggering event
        names, with the version's URI, so that each of its instances loads it (``engines.model_swap``).
        Said again after a crash between the decision and this (the job ignores a version it serves)."""
        trigger = self._trigger(run, action)
        version = triggering_version(trigger, trigger["key"]) if trigger else None
        if version is None:
            log.warning("run %s: SWAP of %r: the triggering event names no version to swap to", run.run_id,
                        action.job)
            return
        model = trigger["key"]
        try:
            uri = self.state.store.get_model_version(model, version).uri
            self.state.store.record_model_consumer(model, version, running.job_run_id)  # lineage: served by
        except Exception as exc:  # noqa: BLE001 - the job keeps serving; the failure is published
            uri, error = None, f"{type(exc).__name__}: {exc}"
        else:
            error = None
        value = {"model": model, "version": version, "uri": uri, **({"error": error} if error else {})}
        self.announcer.send(f"{run.workflow}.{action.job}", json.dumps(value),
                            MODEL_SWAP_FAILED if error else MODEL_SWAP_REQUESTED, DEFAULT_NAMESPACE,
                            run_context(run.run_id, job_run=running.job_run_id, event=trigger["version"]))

    def _trigger(self, run: ActiveRun, action: PendingAction) -> dict[str, Any] | None:
        """The event whose rule decided ``action``, for the job (a serving job serves the model version a
        ``MODEL_*`` event names); for the initial jobs of a run a workflow trigger started, the triggering
        event; None for a submitted run's initial jobs and restarts after a lost process."""
        if action.event_version is None:
            return None
        if action.event_version <= run.since_version and \
                action.event_version != self.state.run_properties(run.run_id).get("event"):  # see Schedules.evaluate
            return None
        found = self.client.list_events(since_version=action.event_version - 1, limit=1)
        if not found or found[0].version != action.event_version:
            log.warning("run %s: the event %s that started job %r is not on the bus", run.run_id,
                        action.event_version, action.job)
            return None
        event = found[0]
        return {"key": event.key, "value": event.value, "event_type": event.event_type, "namespace": event.namespace,
                "sender": event.sender, "version": event.version, "context": event.context}

    def _grace(self, running: Running) -> float:
        """How long a job may take to stop before it is killed (a JVM's savepoint needs longer)."""
        run = self.live.runs.get(running.run_id)
        found = self.live.workflow(run).jobs.get(running.job) if run is not None else None
        return stop_grace(found.engine, found.streaming, found.properties) if found is not None else STOP_GRACE_S
