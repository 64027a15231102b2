"""Submitting workflows and following their runs — over the event bus only.

A submission is an event to the scheduler (``SUBMIT_WORKFLOW``, with the workflow's blob URI); the
scheduler answers with ``WORKFLOW_RUN_CREATED``. Job and run status are events too, so a
:class:`WorkflowRun` works the same against the embedded scheduler and a remote ``aiflow server``.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from aiflow_notebook.core.errors import AIFlowError
from aiflow_notebook.core.vocabulary import (
    ACTIVE_STATES,
    CONTROL_NAMESPACE,
    DEFAULT_PROJECT,
    DEFAULT_SCHEDULER,
    FINAL_STATES,
    JOB_STATUS_CHANGED,
    RESTART_JOB,
    RUN_CREATED,
    RUN_STATUS_CHANGED,
    SCHEDULER_SENDER,
    STOP_WORKFLOW_RUN,
    SUBMIT_REJECTED,
    SUBMIT_WORKFLOW,
    JobState,
    RunState,
    command_key,
    run_context,
    run_in_context,
)
from aiflow_notebook.core.waiting import Deadline, HopelessWaitError, polling
from aiflow_notebook.events import Event, EventClient
from aiflow_notebook.scheduler import reach
from aiflow_notebook.storage.blobs import BlobStore, LocalBlobStore

T = TypeVar("T")
REPLY_POLL_S = 0.02  # how often a request looks for the scheduler's reply


class SchedulerError(AIFlowError):
    """The scheduler refused a request or did not answer."""


class RunCannotGetThereError(SchedulerError, HopelessWaitError):
    """The run can no longer get where a wait wanted it (a job that leads there failed, and nothing that
    could still lead there runs): the wait stopped at once instead of running out its timeout."""


class SchedulerClient:
    """Talks to scheduler ``name`` through ``client`` (an :class:`EventClient`)."""

    def __init__(self, client: EventClient, name: str = DEFAULT_SCHEDULER, blob_store: BlobStore | None = None):
        self.client, self.name = client, name
        self.blobs = blob_store or LocalBlobStore()

    def submit(self, workflow, project: str = DEFAULT_PROJECT, cwd: str | None = None,
               timeout: float = 60.0) -> WorkflowRun:
        """Upload ``workflow`` (a compiled ``Workflow``) and ask the scheduler to run it.

        ``cwd``: the jobs' working directory; default this process's, unless the blob store says the
        scheduler shares no filesystem with it (a connected server), where the server's own is used."""
        uri = self.blobs.put(workflow.to_bytes())
        if cwd is None and getattr(self.blobs, "shares_filesystem", True):
            cwd = os.getcwd()  # (a server reached over a connection runs jobs in its own working directory)
        sent, reply = self.ask(SUBMIT_WORKFLOW, {"uri": uri, "project": project, "cwd": cwd},
                               (RUN_CREATED, SUBMIT_REJECTED), timeout)
        if reply.event_type == SUBMIT_REJECTED:
            raise SchedulerError(f"the scheduler refused workflow {workflow.name!r}: {reply.value}")
        return WorkflowRun(self, run_in_context(reply.value), workflow, since_version=sent.version)

    def stop_run(self, run_id: int) -> Event:
        """Ask the scheduler to stop every job of run ``run_id`` (it ends KILLED); returns the request."""
        return self._command(STOP_WORKFLOW_RUN, run_context(run_id))

    def restart_job(self, run_id: int, job: str) -> Event:
        """Ask the scheduler for a new attempt of ``job`` in live run ``run_id``: a running job is stopped
        (KILLED) and started again, a job that ended is started again. Returns the request."""
        return self._command(RESTART_JOB, run_context(run_id, job=job))

    def ask(self, command: str, request: dict[str, Any], replies: tuple[str, ...], timeout: float,
            what: str | None = None) -> tuple[Event, Event]:
        """Send ``command`` with ``request`` (a request id added) and wait for the answer: the first event of
        a type in ``replies`` that the scheduler sent (:data:`SCHEDULER_SENDER`) naming that request id in
        its context. An answer from any other sender is not the scheduler's word and is ignored. Returns
        ``(the request sent, the reply)``; raises :class:`SchedulerError` after ``timeout`` seconds
        (``what``: what was asked, for that message)."""
        request_id = uuid.uuid4().hex
        sent = self._command(command, {**request, "request_id": request_id})
        since = sent.version
        for _ in polling(timeout, REPLY_POLL_S):
            for event in self.client.list_events(key=command_key(self.name), namespace=CONTROL_NAMESPACE,
                                                 since_version=since):
                since = max(since, event.version)
                if event.event_type in replies and _answers(event, request_id):
                    return sent, event
        raise SchedulerError(f"scheduler {self.name!r} did not answer{f' {what}' if what else ''} within "
                             f"{timeout:.0f} s at {self.client.url}; is it running? (embedded: af.submit() starts "
                             "one; remote: `aiflow server start`)")

    def _command(self, event_type: str, request: dict[str, Any]) -> Event:
        return self.client.send_event(Event(key=command_key(self.name), event_type=event_type,
                                            namespace=CONTROL_NAMESPACE, sender=self.client.client_id,
                                            value=json.dumps(request)))


def _answers(event: Event, request_id: str) -> bool:
    """Whether ``event`` is the scheduler's answer to request ``request_id``."""
    if event.sender != SCHEDULER_SENDER or not event.context:
        return False
    try:
        context = json.loads(event.context)
    except ValueError:
        return False
    return isinstance(context, dict) and context.get("request_id") == request_id


class WorkflowRun:
    """One run of a workflow: ``status()``, ``jobs()``, ``wait(timeout)``, ``wait_for(job, state)``, ``stop()``.

    It keeps the run's state in memory and reads from the bus only what is new: ``status``/``jobs`` ask
    for the run's status events after the last one seen (one small request, never the run's whole
    history), and the waits follow the bus with a listener (its own thread and socket) that wakes them on
    the event they wait for and ends with the wait. No thread follows the bus while nobody asks, so
    a notebook holding many runs does not decode every event once per run.

    A wait stops at once, with :class:`RunCannotGetThereError` naming the job that failed and its error,
    when the run can no longer get where it waits for (:mod:`~aiflow_notebook.scheduler.reach`);
    :meth:`hopeless` gives the same judgement to ``af.wait_until``.
    """

    def __init__(self, scheduler: SchedulerClient, run_id: int, workflow, since_version: int):
        self.scheduler, self.run_id, self.workflow, self.since_version = scheduler, run_id, workflow, since_version
        self._changed = threading.Condition()
        self._status: str = RunState.RUNNING
        self._job_events: list[Event] = []
        self._now: dict[str, reach.JobNow] = {}  # each started job's latest state, kept as events arrive
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
            if event.sender != SCHEDULER_SENDER or run_in_context(event.context) != self.run_id:
                return  # another run's, or not the scheduler's word
            if event.event_type == RUN_STATUS_CHANGED and event.key == self.workflow.name:
                self._status = event.value
            elif event.event_type == JOB_STATUS_CHANGED:
                self._job_events.append(event)
                self._now[event.key[len(self.workflow.name) + 1:]] = reach.job_now(event)
            else:
                return
            self._changed.notify_all()

    def _catch_up(self) -> None:
        """Apply the run's status events published since the last one seen."""
        if self._status in FINAL_STATES:
            return
        for event in self.client.list_events(key=self._keys, since_version=self._seen):
            self._apply(event)

    def _follow(self, done: Callable[[], T | None], stuck: Callable[[], BaseException | None],
                deadline: Deadline, poll: float, timed_out: Callable[[], BaseException]) -> T:
        """Follow the bus until ``done()`` gives a value (checked under the state's lock); raise what
        ``stuck()`` gives as soon as it gives one, or ``timed_out()`` once ``deadline`` passed."""
        with self._changed:
            found = done()
        if found is not None:
            return found
        listener = self.client.listen(self._keys, since_version=self._seen, callback=self._apply)
        try:
            with self._changed:
                while (found := done()) is None:
                    if listener.error is not None:
                        raise SchedulerError(f"lost track of run {self.run_id} of {self.workflow.name!r}: "
                                             f"{listener.error}")
                    if (error := stuck()) is not None:
                        raise error
                    if deadline.passed:
                        raise timed_out()
                    self._changed.wait(min(poll, deadline.left()))
                return found
        finally:
            listener.stop()

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
            error = reach.error_of(event)
            if event.value == JobState.FAILED and error:
                found[job] = error
            elif event.value in (*ACTIVE_STATES, JobState.FINISHED):
                found.pop(job, None)
        return found

    def wait(self, timeout: float | None = None, poll: float = 0.5) -> str:
        """Block until the run ends; returns its final status. Raises ``TimeoutError`` after ``timeout``.

        Follows the bus while it waits, so it wakes on the event that ends the run; ``poll`` only bounds
        how often it looks whether its listener still works. Raises :class:`RunCannotGetThereError` at once
        when the run will not end by itself any more: a job failed while it waited, and only streaming jobs
        (which never end by themselves) still run; the error names the failed job with its error."""
        return self._wait_end(timeout, poll, give_up=True)

    def _wait_end(self, timeout: float | None, poll: float, give_up: bool) -> str:
        deadline = Deadline(timeout)
        self._catch_up()
        since, ending = self._seen, self._ending_jobs()

        def ended() -> str | None:
            return self._status if self._status in FINAL_STATES else None

        def stuck() -> BaseException | None:
            failed = reach.failed_for_good(self.workflow, self._now, ending, since) if give_up else {}
            if not failed:
                return None
            return RunCannotGetThereError(
                f"run {self.run_id} of {self.workflow.name!r} will not end by itself: {reach.describe(failed)}; "
                f"only streaming jobs run ({', '.join(self._running_jobs())}), which never end by themselves. "
                "run.stop() ends the run")

        def timed_out() -> BaseException:
            return TimeoutError(f"run {self.run_id} of {self.workflow.name!r} is still {self._status} after "
                                f"{timeout} s; jobs: {self._states()}")

        return self._follow(ended, stuck, deadline, poll, timed_out)

    def wait_for(self, job: str, state: str, timeout: float = 120.0, count: int = 1) -> Event:
        """Block until ``job`` has reached ``state`` ``count`` times in this run (``count=2``: the second
        ``RUNNING``, i.e. after one restart); returns that status event.

        Follows the bus like :meth:`wait`. Raises ``TimeoutError`` after ``timeout`` seconds, and
        :class:`SchedulerError` when the run ends first — at once, as :class:`RunCannotGetThereError`,
        when the job can no longer get there while the run goes on (a job that leads to it failed while
        it waited, and none of them runs); each names the job, the state waited for, the state the job is
        in and the error, with the log tail, of the job that failed."""
        state = str(state).upper()
        self._check_job(job)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"count must be an integer >= 1, got {count!r}")
        self._catch_up()
        since, leading = self._seen, reach.leading_to(self.workflow, job)

        def reached() -> Event | None:
            found = self._hits(job, state)
            return found[count - 1] if len(found) >= count else None

        def stuck() -> BaseException | None:
            if self._status in FINAL_STATES:
                return SchedulerError(self._missed(job, state, count, "before the run ended"))
            failed = reach.failed_for_good(self.workflow, self._now, leading, since)
            if not failed:
                return None
            how = f"and no longer can: {', '.join(map(repr, failed))} failed and nothing that leads to {job!r} runs"
            return RunCannotGetThereError(self._missed(job, state, count, how, failed))

        return self._follow(reached, stuck, Deadline(timeout), 0.5,
                            lambda: TimeoutError(self._missed(job, state, count, f"within {timeout:g} s")))

    def _hits(self, job: str, state: str) -> list[Event]:
        key = f"{self.workflow.name}.{job}"
        return [e for e in self._job_events if e.key == key and e.value == state]

    def _missed(self, job: str, state: str, count: int, how: str, failed: dict[str, str] | None = None) -> str:
        """Why ``wait_for`` gave up: the job, the state waited for, where the job is, and the errors."""
        error = self.errors().get(job)
        others = {name: text for name, text in (failed or {}).items() if name != job}
        return (f"job {job!r} of run {self.run_id} ({self.workflow.name!r}) did not reach {state}"
                f"{f' for the {_ordinal(count)} time' if count > 1 else ''} {how}: it is "
                f"{self._states()[job]} (reached {state} {len(self._hits(job, state))} time(s)); run {self._status}"
                + (f"; its error: {error}" if error else "") + (f"; {reach.describe(others)}" if others else ""))

    def hopeless(self, job: str | None = None) -> Callable[[], str | None]:
        """A check for ``af.wait_until(condition, ..., hopeless=run.hopeless("serve"))``: from now on it says
        why the wait is hopeless — the run ended, or (given ``job``) a job that leads to ``job`` failed
        after this call and none of them runs while the run goes on — with the failed job and its error;
        else None. A failure from before the call does not count: the event the notebook just sent may be
        about to start the job again."""
        if job is not None:
            self._check_job(job)
        self._catch_up()
        since = self._seen
        leading = reach.leading_to(self.workflow, job) if job is not None else set(self.workflow.jobs)

        def why() -> str | None:
            self._catch_up()
            with self._changed:
                if self._status in FINAL_STATES:
                    failed = self._errors_now()
                    return (f"run {self.run_id} of {self.workflow.name!r} ended {self._status}"
                            + (f"; {reach.describe(failed)}" if failed else ""))
                failed = reach.failed_for_good(self.workflow, self._now, leading, since)
            if failed:
                return (f"in run {self.run_id} of {self.workflow.name!r}, {reach.describe(failed)}; nothing that "
                        f"leads to {job!r} runs")
            return None

        return why

    def _check_job(self, job: str) -> None:
        if job not in self.workflow.jobs:
            raise SchedulerError(f"workflow {self.workflow.name!r} has no job {job!r}; its jobs: "
                                 f"{', '.join(self.workflow.jobs)}")

    def _errors_now(self) -> dict[str, str]:
        """The error of each job whose latest state is FAILED (under the lock)."""
        return {name: now.error or "(no error recorded)" for name, now in self._now.items()
                if now.state == JobState.FAILED}

    def _ending_jobs(self) -> set[str]:
        """The jobs that end by themselves (all but the streaming ones)."""
        return {name for name, spec in self.workflow.jobs.items() if not getattr(spec, "streaming", False)}

    def _running_jobs(self) -> list[str]:
        return [name for name, now in self._now.items() if now.state in ACTIVE_STATES]

    def _states(self) -> dict[str, str]:
        return {job: self._now[job].state if job in self._now else JobState.INIT for job in self.workflow.jobs}

    def stop(self, timeout: float = 120.0) -> str:
        """Stop every job of the run; returns the final status (KILLED, or how it had already ended).

        The default deadline outlasts a streaming Flink job's stop (a savepoint, up to 60 s by default)."""
        if self.status() in FINAL_STATES:
            return self.status()
        self.request_stop()
        return self._wait_end(timeout, 0.5, give_up=False)  # it ends: it was asked to

    def request_stop(self) -> None:
        """Ask the scheduler to stop every job of the run, without waiting (for a button's callback)."""
        self.scheduler.stop_run(self.run_id)

    def restart_job(self, job: str) -> None:
        """Start a new attempt of ``job`` (stopping its running process first); the run goes on."""
        self._check_job(job)
        if self.status() in FINAL_STATES:
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
