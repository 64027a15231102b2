"""What the scheduler says on the bus: job and run status, datasets written, failed stops, and its replies
to commands.

Every event goes out as :data:`~aiflow_notebook.core.vocabulary.SCHEDULER_SENDER` (a status event from
anyone else is not the scheduler's word), status events in the default namespace with the run in their
context (runs of one workflow stay apart), replies on the scheduler's command key naming the request they
answer.
"""

from __future__ import annotations

import json
from typing import Any

from aiflow_notebook.core.vocabulary import (
    CONTROL_NAMESPACE,
    DATASET_UPDATED,
    DEFAULT_NAMESPACE,
    JOB_STATUS_CHANGED,
    JOB_STOP_FAILED,
    RUN_CREATED,
    RUN_STATUS_CHANGED,
    SCHEDULER_SENDER,
    command_key,
    run_context,
)
from aiflow_notebook.events import Event, EventClient
from aiflow_notebook.scheduler.state import ActiveRun

ERROR_CHARS = 4000  # the tail of a job's error (with its log tail) that a status event carries


class Announcer:
    """Sends the events of scheduler ``name`` through ``client``."""

    def __init__(self, client: EventClient, name: str):
        self.client = client
        self.command_key = command_key(name)

    def job_status(self, run: ActiveRun, job: str, job_run_id: int, attempt: int, state: str,
                   error: str | None = None, **extra: Any) -> None:
        context = run_context(run.run_id, job_run=job_run_id, attempt=attempt, **extra)
        if error:
            context["error"] = error[-ERROR_CHARS:]
        self.send(f"{run.workflow}.{job}", state, JOB_STATUS_CHANGED, DEFAULT_NAMESPACE, context)

    def run_status(self, run_id: int, workflow: str, state: str, **fields: Any) -> None:
        """A run began (``fields``: what started it, a schedule's tick or a trigger's event) or ended."""
        self.send(workflow, state, RUN_STATUS_CHANGED, DEFAULT_NAMESPACE, run_context(run_id, **fields))

    def dataset_updated(self, run_id: int, job_run_id: int, name: str, uri: str | None) -> None:
        self.send(name, uri or "", DATASET_UPDATED, DEFAULT_NAMESPACE, run_context(run_id, job_run=job_run_id))

    def stop_failed(self, run: ActiveRun, job: str, job_run_id: int, error: str) -> None:
        self.send(f"{run.workflow}.{job}", error, JOB_STOP_FAILED, DEFAULT_NAMESPACE,
                  run_context(run.run_id, job_run=job_run_id))

    def run_created(self, run_id: int, workflow: str, request_id: str | None) -> None:
        """The answer to a submission (also sent for a run a schedule or trigger started: no request)."""
        self.reply(RUN_CREATED, json.dumps({"run": run_id, "workflow": workflow}),
                   {"request_id": request_id, **run_context(run_id)})

    def reply(self, event_type: str, value: str, context: dict[str, Any]) -> None:
        """An answer on the command key; ``context`` names the request (``request_id``)."""
        self.send(self.command_key, value, event_type, CONTROL_NAMESPACE, context)

    def send(self, key: str, value: str, event_type: str, namespace: str, context: dict[str, Any]) -> Event:
        return self.client.send_event(Event(key=key, value=value, event_type=event_type, namespace=namespace,
                                            sender=SCHEDULER_SENDER, context=json.dumps(context)))
