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

from aiflow_notebook.core.errors import AIFlowError
from aiflow_notebook.core.vocabulary import (
    CONTROL_NAMESPACE,
    JOB_STATUS_CHANGED,
    RESTART_JOB,
    RUN_CREATED,
    RUN_STATUS_CHANGED,
    STOP_WORKFLOW_RUN,
    SUBMIT_REJECTED,
    SUBMIT_WORKFLOW,
    command_key,
    run_in_context,
)
from aiflow_notebook.core.vocabulary import FINAL_STATES as FINAL_RUN_STATES
from aiflow_notebook.core.vocabulary import SCHEDULER_SENDER as SENDER
from aiflow_notebook.events import Event, EventClient
from aiflow_notebook.storage.blobs import BlobStore, LocalBlobStore


class SchedulerError(AIFlowError):
    """The scheduler refused a request or did not answer."""


class SchedulerClient:
    """Talks to scheduler ``name`` through ``client`` (an :class:`EventClient`)."""

    def __init__(self, client: EventClient, name: str = "default", blob_store: BlobStore | None = None):
        self.client, self.name = client, name
        self.blobs = blob_store or LocalBlobStore()

    def submit(self, workflow, project: str = "default", cwd: str | None = None, timeout: float = 60.0) -> WorkflowRun:
        """Upload ``workflow`` (a compiled ``Workflow``) and ask the scheduler to run it.

        ``cwd``: the jobs' working directory; default this process's, unless the blob store says the
        scheduler shares no filesystem with it (a connected server), where the server's own is used."""
        uri = self.blobs.put(workflow.to_bytes())
        if cwd is None and getattr(self.blobs, "shares_filesystem", True):
            cwd = os.getcwd()  # (a server reached over a connection runs jobs in its own working directory)
        request_id = uuid.uuid4().hex
        sent = self.client.send_event(Event(
            key=command_key(self.name), event_type=SUBMIT_WORKFLOW, namespace=CONTROL_NAMESPACE,
            sender=self.client.client_id,
            value=json.dumps({"uri": uri, "request_id": request_id, "project": project, "cwd": cwd})))
        reply = self._await_reply(request_id, sent.version, timeout)
        if reply.event_type == SUBMIT_REJECTED:
            raise SchedulerError(f"the scheduler refused workflow {workflow.name!r}: {reply.value}")
        run_id = json.loads(reply.value)["run"]
        return WorkflowRun(self, run_id, workflow, since_version=sent.version)

    def stop_run(self, run_id: int) -> Event:
        """Ask the scheduler to stop every job of run ``run_id`` (it ends KILLED); returns the request."""
        return self._command(STOP_WORKFLOW_RUN, {"run": run_id})

    def restart_job(self, run_id: int, job: str) -> Event:
        """Ask the scheduler for a new attempt of ``job`` in live run ``run_id``: a running job is stopped
        (KILLED) and started again, a job that ended is started again. Returns the request."""
        return self._command(RESTART_JOB, {"run": run_id, "job": job})

    def _command(self, event_type: str, request: dict[str, Any]) -> Event:
        return self.client.send_event(Event(key=command_key(self.name), event_type=event_type,
                                            namespace=CONTROL_NAMESPACE, sender=self.client.client_id,
                                            value=json.dumps(request)))

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

    It keeps the run's state in memory and reads from the bus only what is new: ``status``/``jobs`` ask
    for the run's status events after the last one seen (one small request, never the run's whole
    history), and ``wait`` follows the bus with a listener (its own thread and socket) that wakes it on
    the event that ends the run and ends with the wait. No thread follows the bus while nobody asks, so
    a notebook holding many runs does not decode every event once per run.
    """

    def __init__(self, scheduler: SchedulerClient, run_id: int, workflow, since_version: int):
        self.scheduler, self.run_id, self.workflow, self.since_version = scheduler, run_id, workflow, since_version
        self._changed = threading.Condition()
        self._status = "RUNNING"
        self._job_events: list[Event] = []
        self._seen = since_version  # every status event of the run up to this version is applied
        self._keys = [workflow.name] + [f"{workflow.name}.{job}" for job in workflow.jobs]

    @property
    def client(self) -> EventClient:
        return self.scheduler.client

    # --- following the bus ---------------------------------------------------------------------------

    def _apply(self, event: Event) -> None:
        """Take one status event into the state (events arrive in version order; repeats are ignored)."""
        with self._changed:
            if event.version <= self._seen:
                return
            self._seen = event.version
            if event.sender != SENDER or run_in_context(event.context) != self.run_id:
                return  # another run's, or not the scheduler's word
            if event.event_type == RUN_STATUS_CHANGED and event.key == self.workflow.name:
                self._status = event.value
            elif event.event_type == JOB_STATUS_CHANGED:
                self._job_events.append(event)
            else:
                return
            self._changed.notify_all()

    def _catch_up(self) -> None:
        """Apply the run's status events published since the last one seen."""
        if self._status in FINAL_RUN_STATES:
            return
        for event in self.client.list_events(key=self._keys, since_version=self._seen):
            self._apply(event)

    # --- what users call -----------------------------------------------------------------------------

    def status(self) -> str:
        """RUNNING, FINISHED, FAILED or KILLED."""
        self._catch_up()
        return self._status

    def job_events(self) -> list[Event]:
        """The run's ``JOB_STATUS_CHANGED`` events so far, oldest first."""
        self._catch_up()
        with self._changed:
            return list(self._job_events)

    def jobs(self) -> dict[str, str]:
        """The latest status of every job (``INIT`` for jobs that have not started)."""
        self._catch_up()
        with self._changed:
            return self._states()

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

        Follows the bus while it waits, so it wakes on the event that ends the run; ``poll`` only bounds
        how often it looks whether its listener still works."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._catch_up()
        if self._status in FINAL_RUN_STATES:
            return self._status
        listener = self.client.listen(self._keys, since_version=self._seen, callback=self._apply)
        try:
            with self._changed:
                while self._status not in FINAL_RUN_STATES:
                    if listener.error is not None:
                        raise SchedulerError(f"lost track of run {self.run_id} of {self.workflow.name!r}: "
                                             f"{listener.error}")
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise TimeoutError(f"run {self.run_id} of {self.workflow.name!r} is still {self._status} "
                                           f"after {timeout} s; jobs: {self._states()}")
                    self._changed.wait(poll if remaining is None else min(poll, remaining))
                return self._status
        finally:
            listener.stop()

    def wait_for(self, job: str, state: str, timeout: float = 120.0, count: int = 1) -> Event:
        """Block until ``job`` has reached ``state`` ``count`` times in this run (``count=2``: the second
        ``RUNNING``, i.e. after one restart); returns that status event.

        Follows the bus like :meth:`wait`. Raises ``TimeoutError`` after ``timeout`` seconds, and
        :class:`SchedulerError` when the run ends first; both name the job, the state waited for, the state
        the job is in and its error with the log tail, if it failed."""
        state = str(state).upper()
        if job not in self.workflow.jobs:
            raise SchedulerError(f"workflow {self.workflow.name!r} has no job {job!r}; its jobs: "
                                 f"{', '.join(self.workflow.jobs)}")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"count must be an integer >= 1, got {count!r}")
        key = f"{self.workflow.name}.{job}"
        deadline = time.monotonic() + timeout

        def reached() -> Event | None:
            hits = [e for e in self._job_events if e.key == key and e.value == state]
            return hits[count - 1] if len(hits) >= count else None

        def stuck(how: str) -> str:
            seen = sum(1 for e in self._job_events if e.key == key and e.value == state)
            error = self.errors().get(job)
            return (f"job {job!r} of run {self.run_id} ({self.workflow.name!r}) did not reach {state}"
                    f"{f' for the {_ordinal(count)} time' if count > 1 else ''} {how}: it is "
                    f"{self._states()[job]} (reached {state} {seen} time(s)); run {self._status}"
                    + (f"; its error: {error}" if error else ""))

        self._catch_up()
        with self._changed:
            found = reached()
        if found is not None:
            return found
        listener = self.client.listen(self._keys, since_version=self._seen, callback=self._apply)
        try:
            with self._changed:
                while (found := reached()) is None:
                    if listener.error is not None:
                        raise SchedulerError(f"lost track of run {self.run_id} of {self.workflow.name!r}: "
                                             f"{listener.error}")
                    if self._status in FINAL_RUN_STATES:
                        raise SchedulerError(stuck("before the run ended"))
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError(stuck(f"within {timeout:g} s"))
                    self._changed.wait(min(0.5, remaining))
                return found
        finally:
            listener.stop()

    def _states(self) -> dict[str, str]:
        states = {job: "INIT" for job in self.workflow.jobs}
        for event in self._job_events:
            states[event.key[len(self.workflow.name) + 1:]] = event.value
        return states

    def stop(self, timeout: float = 120.0) -> str:
        """Stop every job of the run; returns the final status (KILLED, or how it had already ended).

        The default deadline outlasts a streaming Flink job's stop (a savepoint, up to 60 s by default)."""
        if self.status() in FINAL_RUN_STATES:
            return self.status()
        self.request_stop()
        return self.wait(timeout)

    def request_stop(self) -> None:
        """Ask the scheduler to stop every job of the run, without waiting (for a button's callback)."""
        self.scheduler.stop_run(self.run_id)

    def restart_job(self, job: str) -> None:
        """Start a new attempt of ``job`` (stopping its running process first); the run goes on."""
        if job not in self.workflow.jobs:
            raise SchedulerError(f"workflow {self.workflow.name!r} has no job {job!r}; its jobs: "
                                 f"{', '.join(self.workflow.jobs)}")
        if self.status() in FINAL_RUN_STATES:
            raise SchedulerError(f"run {self.run_id} of {self.workflow.name!r} already ended {self.status()}; "
                                 "submit the workflow again to run it anew")
        self.scheduler.restart_job(self.run_id, job)

    def __repr__(self) -> str:
        return f"<WorkflowRun {self.run_id} of {self.workflow.name!r}: {self.status()} {self.jobs()}>"

    def view(self):
        """The workflow drawn with this run's job states (SVG, PNG, text and the workflow JSON)."""
        status = self.status()
        return self.workflow.view(status=self.jobs(), run_id=self.run_id, run_status=status)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        bundle = dict(self.view()._repr_mimebundle_())
        bundle["text/plain"] = repr(self)
        return bundle


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"
