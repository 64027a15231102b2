"""Submitting workflows and following their runs — over the event bus only.

A submission is an event to the scheduler (``SUBMIT_WORKFLOW``, with the workflow's blob URI); the
scheduler answers with ``WORKFLOW_RUN_CREATED``. Job and run status are events too, so a
:class:`WorkflowRun` works the same against the embedded scheduler and a remote ``aiflow server``.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from typing import Any

from aiflow_notebook.blobs import BlobStore, LocalBlobStore
from aiflow_notebook.errors import AIFlowError
from aiflow_notebook.events import Event, EventClient
from aiflow_notebook.scheduler.scheduler import (
    CONTROL_NAMESPACE,
    RUN_CREATED,
    STOP_WORKFLOW_RUN,
    SUBMIT_REJECTED,
    SUBMIT_WORKFLOW,
    command_key,
)
from aiflow_notebook.vocabulary import FINAL_STATES as FINAL_RUN_STATES
from aiflow_notebook.vocabulary import JOB_STATUS_CHANGED, RUN_STATUS_CHANGED


class SchedulerError(AIFlowError):
    """The scheduler refused a request or did not answer."""


class SchedulerClient:
    """Talks to scheduler ``name`` through ``client`` (an :class:`EventClient`)."""

    def __init__(self, client: EventClient, name: str = "default", blob_store: BlobStore | None = None):
        self.client, self.name = client, name
        self.blobs = blob_store or LocalBlobStore()

    def submit(self, workflow, project: str = "default", cwd: str | None = None, timeout: float = 60.0) -> WorkflowRun:
        """Upload ``workflow`` (a compiled ``Workflow``) and ask the scheduler to run it."""
        uri = self.blobs.put(workflow.to_bytes())
        request_id = uuid.uuid4().hex
        sent = self.client.send_event(Event(
            key=command_key(self.name), event_type=SUBMIT_WORKFLOW, namespace=CONTROL_NAMESPACE,
            sender=self.client.client_id,
            value=json.dumps({"uri": uri, "request_id": request_id, "project": project, "cwd": cwd or os.getcwd()})))
        reply = self._await_reply(request_id, sent.version, timeout)
        if reply.event_type == SUBMIT_REJECTED:
            raise SchedulerError(f"the scheduler refused workflow {workflow.name!r}: {reply.value}")
        run_id = json.loads(reply.value)["run"]
        return WorkflowRun(self, run_id, workflow, since_version=sent.version)

    def _await_reply(self, request_id: str, since: int, timeout: float) -> Event:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.client.list_events(key=command_key(self.name), namespace=CONTROL_NAMESPACE,
                                                 since_version=since):
                if event.event_type in (RUN_CREATED, SUBMIT_REJECTED) and event.context and \
                        json.loads(event.context).get("request_id") == request_id:
                    return event
                since = max(since, event.version)
            time.sleep(0.02)
        raise SchedulerError(f"scheduler {self.name!r} did not answer within {timeout:.0f} s at {self.client.url}; "
                             "is it running? (embedded: af.submit() starts one; remote: `aiflow server start`)")


class WorkflowRun:
    """One run of a workflow: ``status()``, ``jobs()``, ``wait(timeout)``, ``stop()``."""

    def __init__(self, scheduler: SchedulerClient, run_id: int, workflow, since_version: int):
        self.scheduler, self.run_id, self.workflow, self.since_version = scheduler, run_id, workflow, since_version

    @property
    def client(self) -> EventClient:
        return self.scheduler.client

    def _mine(self, events: list[Event]) -> list[Event]:
        return [e for e in events if e.context and json.loads(e.context).get("run") == self.run_id]

    def status(self) -> str:
        """RUNNING, FINISHED, FAILED or KILLED."""
        events = self._mine(self.client.list_events(key=self.workflow.name, event_type=RUN_STATUS_CHANGED,
                                                    since_version=self.since_version))
        return events[-1].value if events else "RUNNING"

    def job_events(self) -> list[Event]:
        keys = [f"{self.workflow.name}.{job}" for job in self.workflow.jobs]
        return self._mine(self.client.list_events(key=keys, event_type=JOB_STATUS_CHANGED,
                                                  since_version=self.since_version))

    def jobs(self) -> dict[str, str]:
        """The latest status of every job (``INIT`` for jobs that have not started)."""
        states = {job: "INIT" for job in self.workflow.jobs}
        for event in self.job_events():
            states[event.key[len(self.workflow.name) + 1:]] = event.value
        return states

    def errors(self) -> dict[str, str]:
        """The failure message (with log tail) of each job whose latest attempt failed."""
        found: dict[str, str] = {}
        for event in self.job_events():
            job = event.key[len(self.workflow.name) + 1:]
            error = json.loads(event.context).get("error")
            if event.value == "FAILED" and error:
                found[job] = error
            elif event.value in ("STARTING", "RUNNING", "FINISHED"):
                found.pop(job, None)
        return found

    def wait(self, timeout: float | None = None, poll: float = 0.05) -> str:
        """Block until the run ends; returns its final status. Raises ``TimeoutError`` after ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (status := self.status()) not in FINAL_RUN_STATES:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"run {self.run_id} of {self.workflow.name!r} is still {status} after "
                                   f"{timeout} s; jobs: {self.jobs()}")
            time.sleep(poll)
        return status

    def stop(self, timeout: float = 60.0) -> str:
        """Stop every job of the run; returns the final status (KILLED, or how it had already ended)."""
        if self.status() in FINAL_RUN_STATES:
            return self.status()
        self.client.send_event(Event(key=command_key(self.scheduler.name), event_type=STOP_WORKFLOW_RUN,
                                     namespace=CONTROL_NAMESPACE, sender=self.client.client_id,
                                     value=json.dumps({"run": self.run_id})))
        return self.wait(timeout)

    def __repr__(self) -> str:
        return f"<WorkflowRun {self.run_id} of {self.workflow.name!r}: {self.status()} {self.jobs()}>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        bundle = dict(self.workflow.view(status=self.jobs())._repr_mimebundle_())
        bundle["text/plain"] = repr(self)
        return bundle
