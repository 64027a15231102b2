"""Submitting workflows and following their runs — over the event bus only.

A submission is an event to the scheduler (``SUBMIT_WORKFLOW``, with the workflow's blob URI); the
scheduler answers with ``WORKFLOW_RUN_CREATED``. Job and run status are events too, so a
:class:`WorkflowRun` works the same against the embedded scheduler and a remote ``aiflow server``.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from typing import Any

from aiflow_notebook.blobs import BlobStore, LocalBlobStore
from aiflow_notebook.errors import AIFlowError
from aiflow_notebook.events import Event, EventClient
from aiflow_notebook.scheduler.scheduler import (
    CONTROL_NAMESPACE,
    RUN_CREATED,
    SENDER,
    STOP_WORKFLOW_RUN,
    SUBMIT_REJECTED,
    SUBMIT_WORKFLOW,
    command_key,
    run_of,
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
    """One run of a workflow: ``status()``, ``jobs()``, ``wait(timeout)``, ``stop()``.

    It follows the run on the bus: one listener (its own thread and socket) receives the run's status
    events as they are published and keeps the latest state in memory, so ``wait`` wakes on the event
    that ends the run and ``status``/``jobs`` cost one small request (the bus's latest version, to see
    everything published before the call), never a re-read of the run's history. The listener ends with
    the run, or with :meth:`close`.
    """

    SYNC_TIMEOUT_S = 5.0  # how long status()/jobs() wait for the listener to catch up with the bus

    def __init__(self, scheduler: SchedulerClient, run_id: int, workflow, since_version: int):
        self.scheduler, self.run_id, self.workflow, self.since_version = scheduler, run_id, workflow, since_version
        self._changed = threading.Condition()
        self._status = "RUNNING"
        self._job_events: list[Event] = []
        self._listener = None

    @property
    def client(self) -> EventClient:
        return self.scheduler.client

    # --- following the bus ---------------------------------------------------------------------------

    def _follow(self):
        with self._changed:
            if self._listener is None:
                keys = [self.workflow.name] + [f"{self.workflow.name}.{job}" for job in self.workflow.jobs]
                self._listener = self.client.listen(keys, since_version=self.since_version, callback=self._on_event)
            return self._listener

    def _on_event(self, event: Event) -> None:
        if event.sender != SENDER or run_of(event) != self.run_id:
            return  # another run's, or not the scheduler's word
        with self._changed:
            if event.event_type == RUN_STATUS_CHANGED and event.key == self.workflow.name:
                self._status = event.value
            elif event.event_type == JOB_STATUS_CHANGED:
                self._job_events.append(event)
            else:
                return
            self._changed.notify_all()
        listener = self._listener
        if self._status in FINAL_RUN_STATES and listener is not None:
            listener.stop()  # (from its own thread: it ends after this callback)

    def _sync(self) -> None:
        """Wait until the listener has seen everything the bus held when this was called."""
        listener = self._follow()
        if self._status in FINAL_RUN_STATES:
            return
        latest = self.client.latest_version()
        deadline = time.monotonic() + self.SYNC_TIMEOUT_S
        with self._changed:
            while listener.last_version < latest and self._status not in FINAL_RUN_STATES:
                if listener.error is not None or not listener.running or time.monotonic() > deadline:
                    return  # show what we have; wait() reports a run that never ends
                self._changed.wait(0.01)

    def close(self) -> None:
        """Stop following the run (a later call follows it again)."""
        with self._changed:
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop()

    # --- what users call -----------------------------------------------------------------------------

    def status(self) -> str:
        """RUNNING, FINISHED, FAILED or KILLED."""
        self._sync()
        return self._status

    def job_events(self) -> list[Event]:
        """The run's ``JOB_STATUS_CHANGED`` events so far, oldest first."""
        self._sync()
        with self._changed:
            return list(self._job_events)

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

    def wait(self, timeout: float | None = None, poll: float = 0.5) -> str:
        """Block until the run ends; returns its final status. Raises ``TimeoutError`` after ``timeout``.

        Wakes on the bus event that ends the run; ``poll`` only bounds how often it re-checks that its
        listener is still alive."""
        deadline = None if timeout is None else time.monotonic() + timeout
        listener = self._follow()
        with self._changed:
            while self._status not in FINAL_RUN_STATES:
                if listener.error is not None:
                    raise SchedulerError(f"lost track of run {self.run_id} of {self.workflow.name!r}: "
                                         f"{listener.error}")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    jobs = {job: "INIT" for job in self.workflow.jobs}
                    for event in self._job_events:
                        jobs[event.key[len(self.workflow.name) + 1:]] = event.value
                    raise TimeoutError(f"run {self.run_id} of {self.workflow.name!r} is still {self._status} "
                                       f"after {timeout} s; jobs: {jobs}")
                self._changed.wait(poll if remaining is None else min(poll, remaining))
            return self._status

    def stop(self, timeout: float = 60.0) -> str:
        """Stop every job of the run; returns the final status (KILLED, or how it had already ended)."""
        if self.status() in FINAL_RUN_STATES:
            return self.status()
        self.client.send_event(Event(key=command_key(self.scheduler.name), event_type=STOP_WORKFLOW_RUN,
                                     namespace=CONTROL_NAMESPACE, sender=self.client.client_id,
                                     value=json.dumps({"run": self.run_id})))
        return self.wait(timeout)

    def __del__(self) -> None:
        listener = getattr(self, "_listener", None)
        if listener is not None:
            listener.stop(timeout=0)  # do not wait in a finaliser

    def __repr__(self) -> str:
        return f"<WorkflowRun {self.run_id} of {self.workflow.name!r}: {self.status()} {self.jobs()}>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        bundle = dict(self.workflow.view(status=self.jobs())._repr_mimebundle_())
        bundle["text/plain"] = repr(self)
        return bundle

