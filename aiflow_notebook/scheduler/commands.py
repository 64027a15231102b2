"""The scheduler's commands: submit a workflow, stop a run, restart a job (events on its command key).

Each command commits with the cursor past its event, like every decision. A submission names a blob of
the scheduler's own store (read back hash-verified) and is answered with ``WORKFLOW_RUN_CREATED`` or
``WORKFLOW_SUBMIT_REJECTED``; a stop is committed before it begins, so a scheduler restarted meanwhile
finishes it. (Schedule commands are ``schedules``'.)
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiflow_notebook.core.errors import AIFlowError
from aiflow_notebook.core.vocabulary import (
    DEFAULT_PROJECT,
    RESTART_JOB,
    STOP_WORKFLOW_RUN,
    SUBMIT_REJECTED,
    SUBMIT_WORKFLOW,
)
from aiflow_notebook.engines import engine_runner
from aiflow_notebook.events import Event
from aiflow_notebook.scheduler.actions import Actions
from aiflow_notebook.scheduler.admission import Admission
from aiflow_notebook.scheduler.announce import Announcer
from aiflow_notebook.scheduler.intake import Intake, control_edges, initial_jobs
from aiflow_notebook.scheduler.live import Live
from aiflow_notebook.scheduler.settle import Settler
from aiflow_notebook.sdk.control import Action
from aiflow_notebook.storage.blobs import BlobStore

log = logging.getLogger(__name__)


class Commands:
    """``state`` and ``store``: the loop's (durable) scheduler state and metadata store."""

    def __init__(self, state: Any, store: Any, blobs: BlobStore, live: Live, intake: Intake, actions: Actions,
                 settler: Settler, announcer: Announcer, admission: Admission):
        self.state, self.store, self.blobs, self.live = state, store, blobs, live
        self.intake, self.actions, self.settler = intake, actions, settler
        self.announcer, self.admission = announcer, admission

    def handle(self, event: Event) -> None:
        """Carry out one command; one that is unknown, or not admitted, only moves the cursor."""
        if event.event_type == SUBMIT_WORKFLOW:
            self._submit(event)
        elif event.event_type in (STOP_WORKFLOW_RUN, RESTART_JOB) and not self.admission.admits(event):
            log.warning("scheduler %s: ignored a %s request from %r, not an admitted client",
                        self.state.name, event.event_type, event.sender)
            self.state.advance(event.version)
        elif event.event_type == STOP_WORKFLOW_RUN:
            self._stop_run(int(json.loads(event.value)["run"]), event.version)
        elif event.event_type == RESTART_JOB:
            self._restart_job(event)
        else:
            self.state.advance(event.version)

    # --- submit --------------------------------------------------------------------------------------

    def _submit(self, event: Event) -> None:
        request = json.loads(event.value)
        try:
            payload, workflow = self._verified(event, request)
        except AIFlowError as exc:
            self.state.advance(event.version)
            self.announcer.reply(SUBMIT_REJECTED, str(exc), {"request_id": request.get("request_id")})
            return
        project = request.get("project") or DEFAULT_PROJECT
        snapshot_id = self.store.save_workflow_snapshot(workflow.name, workflow.content_hash, payload, project=project)
        edges = control_edges(workflow)
        properties = {"request_id": request.get("request_id"), "cwd": request.get("cwd"),
                      "submitted_by": event.sender, "uri": request["uri"]}
        run_id = self.state.create_run(workflow.name, project, snapshot_id, edges, initial_jobs(workflow, edges),
                                       event.version, properties)
        self.intake.take(run_id, workflow, request.get("request_id"))

    def _verified(self, event: Event, request: dict[str, Any]) -> tuple[bytes, Any]:
        """The submitted workflow (payload, Workflow), from our own blob store, every engine known; an
        ``AIFlowError`` says why not."""
        from aiflow_notebook.sdk.workflow import Workflow

        if not self.admission.admits(event):
            raise AIFlowError(f"{event.sender!r} is not an admitted client of this server (its key is not "
                              "listed in clients/), so it may not submit workflows")
        payload = self.blobs.get(request["uri"])  # only objects of our own store, hash verified
        workflow = Workflow.from_bytes(payload)
        for job in workflow.jobs.values():
            engine_runner(job.engine)
        return payload, workflow

    # --- stop a run, restart a job -------------------------------------------------------------------

    def _stop_run(self, run_id: int, version: int) -> None:
        """Stop every job of the run (in the background); the run ends KILLED when the last one is gone.

        The request is committed first (with the cursor), so a scheduler restarted meanwhile finishes it."""
        run = self.live.runs.get(run_id)
        if run is None:
            self.state.advance(version)
            return
        self.state.request_stop(run_id, version)
        self.live.stopping.add(run_id)
        self.settler.continue_stop(run)

    def _restart_job(self, event: Event) -> None:
        """A new attempt of one job of a live run (its running process, if any, is stopped first, as a
        RESTART rule does); the rest of the run goes on. A request for a run that is not live here, or for
        a job the workflow does not have, changes nothing."""
        try:
            request = json.loads(event.value)
            run_id, job = int(request["run"]), str(request["job"])
        except (ValueError, KeyError, TypeError):
            log.warning("scheduler %s: ignored a malformed %s request %r", self.state.name, RESTART_JOB, event.value)
            self.state.advance(event.version)
            return
        run = self.live.runs.get(run_id)
        if run is None or run_id in self.live.stopping or job not in self.live.workflow(run).jobs:
            log.warning("scheduler %s: cannot restart job %r of run %s: not a live run of this scheduler with "
                        "that job", self.state.name, job, run_id)
            self.state.advance(event.version)
            return
        self.state.commit_event(event.version, [], [(run_id, job, Action.RESTART, None)])
        self.actions.execute_pending(run_id)
