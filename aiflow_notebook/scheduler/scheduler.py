"""The event-driven scheduler: events in, rules evaluated, jobs started / stopped / restarted.

One loop thread handles, strictly in order, two kinds of input:
- events from the bus (a listener that replays from the last handled version, then follows live):
  commands (submit a workflow, stop a run) and everything rules may match;
- exits of job processes (one small monitor thread per process), which become ``JOB_STATUS_CHANGED``
  events on the bus — and come back through the listener to fire downstream rules.

Exactly-once (see ``state``): an event's effects commit in one transaction with its version; decided
actions go through an outbox; a job run is committed before its process starts; on start-up the
scheduler recovers: it adopts live job processes, settles those that ended while it was down, finishes
pending actions and re-publishes status events the bus does not have.

Runs are isolated: a status event of a job of this workflow counts for a run's rules only if the scheduler
published it for that run (its context names the run), and an event a job sent from its process
(``EventClient.from_environment`` names the job's run and workflow in the context) only for that run
among the live runs of its workflow. Everything else (events from outside any run, ``MODEL_*`` changes
made in a notebook, ``DATASET_UPDATED``, status of other workflows' jobs) is seen by every live run.

The loop never waits on a job: stopping one (up to the grace period of a JVM) happens on a thread of its
own, and its exit comes back to the loop like any other. The loop waits only on the database: a write
that fails (the database locked, read-only or down) is retried until it succeeds, and an event's effects
become visible in memory only once they are committed, so an outage delays decisions but never loses or
repeats one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import queue
import shutil
import stat
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiflow_notebook.core.config import aiflow_home
from aiflow_notebook.core.errors import AIFlowError
from aiflow_notebook.core.vocabulary import (
    DATASET_UPDATED,
    JOB_STATUS_CHANGED,
    JOB_STOP_FAILED,
    RUN_STATUS_CHANGED,
)
from aiflow_notebook.core.vocabulary import FINAL_STATES as FINAL_JOB_STATES
from aiflow_notebook.engines import engine_runner
from aiflow_notebook.engines.process import (
    PYFLINK_WORKER_VARIABLES,
    STOP_GRACE_S,
    ExitStatus,
    JobProcess,
    ProcessRecord,
    stop_grace,
)
from aiflow_notebook.events import Event, EventClient
from aiflow_notebook.meta.store import MetadataStore
from aiflow_notebook.scheduler.custom_rules import CustomRule, bind
from aiflow_notebook.scheduler.durable import Durable, SchedulerStopped
from aiflow_notebook.scheduler.schedules import SCHEDULE_COMMAND, Schedules, initial_jobs
from aiflow_notebook.scheduler.state import PendingAction, RunState, SchedulerState
from aiflow_notebook.storage.blobs import BlobStore, LocalBlobStore

log = logging.getLogger(__name__)

CONTROL_NAMESPACE = "aiflow"
SUBMIT_WORKFLOW = "SUBMIT_WORKFLOW"
STOP_WORKFLOW_RUN = "STOP_WORKFLOW_RUN"
RESTART_JOB = "RESTART_JOB"
RUN_CREATED = "WORKFLOW_RUN_CREATED"
SUBMIT_REJECTED = "WORKFLOW_SUBMIT_REJECTED"
SENDER = "scheduler"
MAX_BATCH = 512  # events decided in one transaction at most
RUN_SCOPED_TYPES = frozenset({JOB_STATUS_CHANGED, RUN_STATUS_CHANGED})  # a run's own status events
SAVEPOINTS_KEPT = 2  # per job of a run: the one its next start resumes from, and the one before
OUTCOME_KEYS = ("savepoint", "savepoint_error", "savepoint_note", "resumed_from", "resume_note")  # see Scheduler._outcome
WATCH_POLL_S = 0.5  # how often a watcher thread looks whether the scheduler has stopped
# The interpreter's thread switch interval while a scheduler runs in the process (Python's default: 5 ms).
# The loop shares the GIL with the event server and the listeners; a thread woken by a commit or a
# message waited up to the whole interval for the GIL, which was most of the decision p99
# (bench/scheduler_bench.py: p99 6-7 ms at 5 ms, 4.5-4.8 ms at 0.5 ms). Only ever lowered, never raised.
SWITCH_INTERVAL_S = 0.0005


def command_key(name: str) -> str:
    """The bus key on which scheduler ``name`` takes commands and answers them."""
    return f"scheduler.{name}"


@dataclass
class _Running:
    run_id: int
    job: str
    job_run_id: int
    attempt: int
    process: JobProcess
    stop_requested: float | None = None  # when the stop began (time.monotonic())


class Scheduler:
    """Runs submitted workflows. ``start()`` recovers and begins listening; ``stop()`` ends the loop
    (jobs keep running unless ``kill_jobs``; a restarted scheduler adopts them).

    ``authorize``: when set (a CURVE server sets it), ``authorize(sender)`` must hold for a submission or
    a stop request to be obeyed; the bus stores the authenticated client's name as the sender.
    """

    authorize: Callable[[str | None], bool] | None = None

    def __init__(self, store: MetadataStore, client: EventClient, *, name: str = "default",
                 home: str | Path | None = None, blob_store: BlobStore | None = None,
                 job_env: dict[str, str] | None = None, record_decisions: bool = False):
        self.store, self.client, self.name = store, client, name
        self._stop = threading.Event()
        # The loop's database calls wait out an outage (see ``durable``); ``store`` stays the plain store.
        self.state = Durable(SchedulerState(store, name), self._stop, name)
        self._store = Durable(store, self._stop, name)
        self.home = Path(home) if home is not None else aiflow_home()
        self.blobs = blob_store or LocalBlobStore(self.home / "blobs")
        self.job_env = dict(job_env or {})
        self._queue: queue.Queue = queue.Queue()
        self._runs: dict[int, RunState] = {}
        self._workflows: dict[int, Any] = {}
        self._running: dict[int, _Running] = {}  # job_run_id -> process
        self._stopping_runs: set[int] = set()
        self._thread: threading.Thread | None = None
        self._listener = None
        self._lag_since = 0.0
        self._last_seen = 0  # the version of the last event the loop took (a scheduled run sees those after it)
        self.schedules = Schedules(self)  # workflow schedules, triggers, periodic jobs
        # seconds from an event's arrival here to its actions being committed (benchmarks turn it on)
        self.decision_seconds: list[float] | None = [] if record_decisions else None

    # --- life cycle ------------------------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> Scheduler:
        """Recover what an earlier scheduler left and begin deciding. Raises ``DatabaseWaitTimeout`` if the
        database stays unusable for ``timeout`` seconds meanwhile (later, the loop waits it out)."""
        if sys.getswitchinterval() > SWITCH_INTERVAL_S:
            sys.setswitchinterval(SWITCH_INTERVAL_S)
        self.state.deadline = self._store.deadline = time.monotonic() + timeout
        try:
            self._recover()
            self._last_seen = self.state.last_version()
            self.schedules.state.deadline = self.state.deadline
            self.schedules.recover()
        finally:
            self.state.deadline = self._store.deadline = self.schedules.state.deadline = None
        self._listener = self.client.listen("*", since_version=self.state.last_version(),
                                            callback=lambda event: self._queue.put(("event", (event, time.perf_counter()))))
        self._thread = threading.Thread(target=self._loop, name=f"aiflow-scheduler-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, kill_jobs: bool = False, timeout: float = 30.0) -> None:
        if self._listener is not None:
            self._listener.stop()
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        if kill_jobs:  # in parallel: each may take its grace period
            stoppers = [threading.Thread(target=running.process.stop, kwargs={"grace": 5}, daemon=True)
                        for running in list(self._running.values())]
            for stopper in stoppers:
                stopper.start()
            for stopper in stoppers:
                stopper.join(timeout + 10)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # --- the loop --------------------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            self._decide_until_stopped()
        except SchedulerStopped as stopped:  # waiting for the database; the cursor stays before the event
            log.info("%s", stopped)

    def _decide_until_stopped(self) -> None:
        while not self._stop.is_set():
            try:
                batch = [self._queue.get(timeout=self.schedules.seconds_until_due())]
            except queue.Empty:
                self._guarded(self.schedules.fire_due, None)
                continue
            while len(batch) < MAX_BATCH:  # group commit: what queued up meanwhile is decided together
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            events: list[tuple[Event, float]] = []
            for kind, item in batch:
                if kind == "event":
                    self._last_seen = max(self._last_seen, item[0].version)
                if kind == "event" and not self._is_command(item[0]):
                    events.append(item)
                    continue
                self._guarded(self._handle_events, events)
                events = []
                if kind == "event":
                    self._guarded(self._handle_command, item[0])
                elif kind == "exit":
                    self._guarded(self._handle_exit, item)
                else:
                    self._guarded(self._handle_stop_failure, item)
            self._guarded(self._handle_events, events)
            self._guarded(self.schedules.fire_due, None)

    def _guarded(self, handler, item) -> None:
        try:
            handler(item)
        except SchedulerStopped:
            raise
        except Exception:  # a bug must not kill the scheduler (database outages are waited out, see durable)
            log.exception("scheduler %s: failed to handle %r", self.name, item)

    def _is_command(self, event: Event) -> bool:
        return event.namespace == CONTROL_NAMESPACE and event.key == command_key(self.name)

    def _handle_command(self, event: Event) -> None:
        if event.event_type == SUBMIT_WORKFLOW:
            self._submit(event)
        elif event.event_type in (STOP_WORKFLOW_RUN, RESTART_JOB) and not self._authorized(event):
            log.warning("scheduler %s: ignored a %s request from %r, not an admitted client",
                        self.name, event.event_type, event.sender)
            self.state.advance(event.version)
        elif event.event_type == STOP_WORKFLOW_RUN:
            self._stop_run(int(json.loads(event.value)["run"]), event.version)
        elif event.event_type == RESTART_JOB:
            self._restart_job(event)
        elif event.event_type == SCHEDULE_COMMAND:
            self.schedules.handle_command(event)
        else:
            self.state.advance(event.version)

    def _handle_events(self, events: list[tuple[Event, float]]) -> None:
        """Evaluate rules on ``events`` in version order; commit the outcome once, then act.

        Rules are evaluated on copies: the runs' rules in memory change only once the commit succeeded, so
        a batch that could not be committed leaves no trace and is decided again from the same state.
        """
        if not events:
            return
        working: dict[int, list] = {}  # run id -> copies of its rules, for runs an event touched
        actions: list[tuple[int, str, str, int]] = []
        decided: list[float] = []
        for event, arrived in events:
            fired = False
            event_run = run_of(event) if event.event_type in RUN_SCOPED_TYPES else None
            origin = sent_from_run(event)
            for run in self._runs.values():
                if not self._sees(run, event, event_run, origin):
                    continue
                rules = working.get(run.run_id) or run.rules
                for index, rule in enumerate(rules):
                    trial = dataclasses.replace(rule, met=list(rule.met))
                    if trial.on_event(event):
                        actions.append((run.run_id, rule.job, rule.action, event.version))
                        fired = True
                    if trial.met != rule.met:
                        rules = working.setdefault(run.run_id, list(run.rules))
                        rules[index] = trial
            if fired:
                decided.append(arrived)
        last = events[-1][0].version
        triggered = self.schedules.evaluate([event for event, _ in events])  # workflow triggers
        if working or actions or triggered:
            touched = [dataclasses.replace(self._runs[run_id], rules=rules) for run_id, rules in working.items()]
            self.state.commit_event(last, touched, actions, also=triggered[0] if triggered else None)
            for run_id, rules in working.items():  # committed: now the runs' rules are the new ones
                self._runs[run_id].rules = rules
            if triggered:
                triggered[1]()
            self._lag_since = 0.0
            if self.decision_seconds is not None:
                now = time.perf_counter()
                self.decision_seconds.extend(now - arrived for arrived in decided)
        elif self._lag_since == 0.0:
            self._lag_since = time.monotonic()
        elif time.monotonic() - self._lag_since > 1.0:  # keep the cursor near, so a restart replays little
            self.state.advance(last)
            self._lag_since = 0.0
        for run_id in sorted({run_id for run_id, _, action, _ in actions if action != "NONE"}):
            self._execute_pending(run_id)
        for event, _ in events:
            if event.event_type == JOB_STATUS_CHANGED and event.value in FINAL_JOB_STATES and event.context:
                run_id = run_of(event)
                if run_id in self._runs and run_id not in self._stopping_runs:
                    self._check_run_done(run_id)

    def _sees(self, run: RunState, event: Event, event_run: int | None, origin: dict | None = None) -> bool:
        """Whether ``run``'s rules may match ``event``: events after the run began; of the status events
        of this workflow's jobs only those the scheduler published for this very run; of the events a job
        of this workflow sent (``origin``), only those of this very run."""
        if event.version <= run.since_version or run.run_id in self._stopping_runs:
            return False
        if (origin is not None and origin["run"] != run.run_id and origin.get("workflow") == run.workflow
                and origin.get("project", run.project) == run.project):
            return False
        if event.event_type in RUN_SCOPED_TYPES and (event.key == run.workflow
                                                     or event.key.startswith(run.workflow + ".")):
            return event_run == run.run_id and event.sender == SENDER
        return True

    # --- commands --------------------------------------------------------------------------------

    def _submit(self, event: Event) -> None:
        from aiflow_notebook.sdk.workflow import Workflow

        request = json.loads(event.value)
        try:
            if not self._authorized(event):
                raise AIFlowError(f"{event.sender!r} is not an admitted client of this server (its key is not "
                                  "listed in clients/), so it may not submit workflows")
            payload = self.blobs.get(request["uri"])  # only objects of our own store, hash verified
            workflow = Workflow.from_bytes(payload)
            for job in workflow.jobs.values():
                engine_runner(job.engine)
        except AIFlowError as exc:
            self.state.advance(event.version)
            self._send(command_key(self.name), str(exc), SUBMIT_REJECTED, CONTROL_NAMESPACE,
                       {"request_id": request.get("request_id")})
            return
        project = request.get("project") or "default"
        snapshot_id = self._store.save_workflow_snapshot(workflow.name, workflow.content_hash, payload, project=project)
        edges = [edge.to_dict() for edge in workflow.control_edges]
        initial = initial_jobs(workflow, edges)
        properties = {"request_id": request.get("request_id"), "cwd": request.get("cwd"),
                      "submitted_by": event.sender, "uri": request["uri"]}
        run_id = self.state.create_run(workflow.name, project, snapshot_id, edges, initial, event.version,
                                       properties)
        self._run_created(run_id, workflow, request.get("request_id"))

    def _run_created(self, run_id: int, workflow, request_id: str | None = None,
                     origin: dict[str, Any] | None = None) -> None:
        """Take a run just committed (a submission, a schedule's tick, a trigger) into the loop: its rules
        (custom conditions loaded from ``workflow``, read from our blob store), its periodic jobs, the
        announcements, its initial jobs."""
        run = next(r for r in self.state.active_runs() if r.run_id == run_id)
        bind(run.rules, [edge.to_dict() for edge in workflow.control_edges])
        self._runs[run_id] = run
        self._workflows[run_id] = workflow
        self.schedules.run_loaded(run_id)
        self._send(command_key(self.name), json.dumps({"run": run_id, "workflow": workflow.name}), RUN_CREATED,
                   CONTROL_NAMESPACE, {"request_id": request_id, "run": run_id})
        # a scheduled or triggered run says what started it: {"schedule": id, "tick": t} / {"trigger": id, "event": v}
        self._send(workflow.name, "RUNNING", RUN_STATUS_CHANGED, "default", {"run": run_id, **(origin or {})})
        self._execute_pending(run_id)

    def _stop_run(self, run_id: int, version: int | None = None) -> None:
        """Stop every job of the run (in the background); the run ends KILLED when the last one is gone.

        The request is committed first (with the cursor), so a scheduler restarted meanwhile finishes it."""
        run = self._runs.get(run_id)
        if run is None:
            if version is not None:
                self.state.advance(version)
            return
        self.state.request_stop(run_id, version)
        self._stopping_runs.add(run_id)
        self._continue_stop(run)

    def _restart_job(self, event: Event) -> None:
        """A new attempt of one job of a live run (its running process, if any, is stopped first, as a
        RESTART rule does); the rest of the run goes on. A request for a run that is not live here, or for
        a job the workflow does not have, changes nothing."""
        try:
            request = json.loads(event.value)
            run_id, job = int(request["run"]), str(request["job"])
        except (ValueError, KeyError, TypeError):
            log.warning("scheduler %s: ignored a malformed %s request %r", self.name, RESTART_JOB, event.value)
            self.state.advance(event.version)
            return
        run = self._runs.get(run_id)
        if run is None or run_id in self._stopping_runs or job not in self._workflow(run).jobs:
            log.warning("scheduler %s: cannot restart job %r of run %s: not a live run of this scheduler with "
                        "that job", self.name, job, run_id)
            self.state.advance(event.version)
            return
        self.state.commit_event(event.version, [], [(run_id, job, "RESTART", None)])
        self._execute_pending(run_id)

    def _continue_stop(self, run: RunState) -> None:
        running = [r for r in self._running.values() if r.run_id == run.run_id]
        for job in running:
            self._stop_job(job)
        if not running:
            self._stopping_runs.discard(run.run_id)
            self._finish_run(run, "KILLED")

    # --- actions ---------------------------------------------------------------------------------

    def _execute_pending(self, run_id: int) -> None:
        """Carry out the run's pending actions, oldest first. STOP and RESTART begin stopping the job's
        processes and stay pending until they are gone (their exits call this again): a restarted job never
        overlaps its predecessor, and a crash meanwhile leaves the action to finish."""
        if run_id in self._stopping_runs:
            return
        for action in self.state.pending_actions(run_id):
            run = self._runs.get(action.run_id)
            if run is None:
                continue
            if action.action in ("STOP", "RESTART"):
                stopping = [r for r in self._running.values() if r.run_id == run.run_id and r.job == action.job]
                for running in stopping:
                    self._stop_job(running)
                if stopping:
                    continue
            if action.action in ("START", "RESTART"):
                self._start_job(run, action)
            else:
                self.state.action_done(action.id)

    def _start_job(self, run: RunState, action: PendingAction) -> None:
        existing = self.state.job_run_for_action(action.id)
        live = [r for r in self._running.values() if r.run_id == run.run_id and r.job == action.job]
        if existing is None and live:
            if all(r.stop_requested is not None for r in live):
                return  # stopping: start once it is gone (its exit runs the pending actions again)
            self.state.action_done(action.id)  # START of a job that is already running: nothing to do
            return
        workflow = self._workflow(run)
        job = workflow.jobs.get(action.job)
        if job is None:
            log.error("run %s: rule names job %r, which the workflow does not have", run.run_id, action.job)
            self.state.action_done(action.id)
            return
        if existing is not None:  # recovery: the job run was committed before a crash
            job_run_id, attempt = existing.job_run_id, 0
            found = self._find_process(run.run_id, job.name, job_run_id)
            if found is not None:
                self.state.job_started(job_run_id, json.loads(found.record.to_json()), found.record.log_path, action.id)
                self._watch(_Running(run.run_id, job.name, job_run_id, attempt, found))
                return
        else:
            job_run_id, attempt = self.state.new_job_run(run, job.name, job.engine, action.id)
            self._publish_status(run, job.name, job_run_id, attempt, "STARTING")
        resume_from = self.state.previous_savepoint(run.run_id, job.name, job_run_id)
        process = self._launch(run, job, job_run_id, attempt, self._trigger(run, action), resume_from)
        self.state.job_started(job_run_id, json.loads(process.record.to_json()), process.record.log_path, action.id)
        self._publish_status(run, job.name, job_run_id, attempt, "RUNNING",
                             **({"resume_from": resume_from} if resume_from else {}))
        self._watch(_Running(run.run_id, job.name, job_run_id, attempt, process))

    def _trigger(self, run: RunState, action: PendingAction) -> dict[str, Any] | None:
        """The event whose rule decided ``action``, for the job (a serving job serves the model version a
        ``MODEL_*`` event names); for the initial jobs of a run a workflow trigger started, the triggering
        event; None for a submitted run's initial jobs and restarts after a lost process."""
        if action.event_version is None:
            return None
        if action.event_version <= run.since_version and \
                action.event_version != self._run_properties(run).get("event"):  # see schedules.Schedules.evaluate
            return None
        found = self.client.list_events(since_version=action.event_version - 1, limit=1)
        if not found or found[0].version != action.event_version:
            log.warning("run %s: the event %s that started job %r is not on the bus", run.run_id,
                        action.event_version, action.job)
            return None
        event = found[0]
        return {"key": event.key, "value": event.value, "event_type": event.event_type, "namespace": event.namespace,
                "sender": event.sender, "version": event.version, "context": event.context}

    def _launch(self, run: RunState, job, job_run_id: int, attempt: int,
                trigger: dict[str, Any] | None = None, resume_from: str | None = None) -> JobProcess:
        base = self._paths(run.run_id, job.name, job_run_id)
        properties = self._run_properties(run)
        public_url, full_url = _meta_urls(self.store._db.url)
        spec = {"workflow": run.workflow, "project": run.project, "run_id": run.run_id, "job_run_id": job_run_id,
                "attempt": attempt, "job": job.to_dict(include_payload=False), "runner": engine_runner(job.engine),
                "cwd": properties.get("cwd"), "meta_url": public_url, "event_url": self.client.url}
        spec.update(self._payload_reference(job, properties.get("uri")))
        spec["trigger"] = trigger  # the event that fired the rule, for the job runtime
        # A job that can save its state on stop (a streaming Flink job) saves it under a directory of its
        # own run and job (never shared by two live runs), reports the path in its outcome file, and its
        # next start in this run gets that path back.
        spec["savepoint_dir"] = str(self._savepoint_dir(run, job.name))
        spec["resume_from"] = resume_from
        spec["outcome_path"] = str(base.with_suffix(".outcome.json"))
        spec_path = base.with_suffix(".spec.json")
        spec["spec_path"] = str(spec_path)
        if full_url != public_url:
            spec["secrets"] = "stdin"
        _private_dirs(self.home, spec_path.parent)
        _write_private(spec_path, json.dumps(spec))
        _write_private(base.with_suffix(".log"), "", append=True)
        env = {**_job_environment(), **self.job_env, "AIFLOW_META_URL": public_url, "AIFLOW_EVENT_URL": self.client.url,
               "AIFLOW_WORKFLOW": run.workflow, "AIFLOW_JOB": job.name, "AIFLOW_RUN_ID": str(run.run_id),
               "AIFLOW_JOB_RUN_ID": str(job_run_id), "AIFLOW_PROJECT": run.project}
        stdin = _secrets_pipe({"meta_url": full_url}) if full_url != public_url else None
        try:
            return JobProcess.launch([sys.executable, "-m", "aiflow_notebook.engines.job_main", str(spec_path)],
                                     base.with_suffix(".log"), env=env, cwd=spec["cwd"] or None, stdin=stdin)
        finally:
            if stdin is not None:
                os.close(stdin)

    def _payload_reference(self, job, uri: str | None) -> dict[str, Any]:
        """How the job finds its payload: the workflow's blob (verified by the job) or, for a blob store
        without a local root, the payload itself."""
        root = getattr(self.blobs, "root", None)
        if uri and root is not None:
            return {"workflow_uri": uri, "blob_root": str(root)}
        return {"job": job.to_dict(include_payload=True)}

    def _authorized(self, event: Event) -> bool:
        return self.authorize is None or self.authorize(event.sender)

    def _paths(self, run_id: int, job: str, job_run_id: int) -> Path:
        return self.home / "runs" / str(run_id) / f"{job}-{job_run_id}"

    def _find_process(self, run_id: int, job: str, job_run_id: int) -> JobProcess | None:
        """A job process started just before a crash, before its record was committed: still running (its
        launcher names its status file), or already ended (the status file is there; launching removes an
        old one). None: it was never started."""
        import psutil

        status_path = str(self._paths(run_id, job, job_run_id).with_suffix(".status.json"))
        log_path = str(self._paths(run_id, job, job_run_id).with_suffix(".log"))
        for proc in psutil.process_iter(["pid", "cmdline", "create_time"]):
            if status_path in (proc.info["cmdline"] or []):
                return JobProcess.adopt(ProcessRecord(proc.info["pid"], proc.info["create_time"], log_path, status_path))
        if Path(status_path).exists():  # it ran and ended while no scheduler was there to record it
            return JobProcess.ended(log_path, status_path)
        return None

    def _stop_job(self, running: _Running) -> None:
        """Begin stopping a job on a thread of its own (SIGTERM, SIGKILL after the grace period): the loop
        goes on deciding meanwhile. The exit comes back through the job's watcher and is settled KILLED."""
        if running.stop_requested is not None:
            return
        running.stop_requested = time.monotonic()
        run = self._runs.get(running.run_id)
        found = self._workflow(run).jobs.get(running.job) if run is not None else None
        grace = stop_grace(found.engine, found.streaming, found.properties) if found is not None else STOP_GRACE_S

        def stop() -> None:
            try:
                running.process.stop(grace=grace)
            except Exception as exc:  # noqa: BLE001 - reported to the loop, which records it
                self._queue.put(("stop_failed", (running.job_run_id, f"{type(exc).__name__}: {exc}")))

        threading.Thread(target=stop, name=f"aiflow-stop-{running.job_run_id}", daemon=True).start()

    def _watch(self, running: _Running) -> None:
        """Follow the job's process on a thread that ends with the process or with the scheduler."""
        self._running[running.job_run_id] = running

        def wait() -> None:
            while not self._stop.is_set():
                if running.process.wait(timeout=WATCH_POLL_S) is not None:
                    self._queue.put(("exit", running.job_run_id))
                    return

        threading.Thread(target=wait, name=f"aiflow-job-{running.job_run_id}", daemon=True).start()

    def _handle_exit(self, job_run_id: int) -> None:
        running = self._running.get(job_run_id)
        if running is not None:
            self._settle(running, running.process.poll() or ExitStatus(None))

    def _handle_stop_failure(self, item: tuple[int, str]) -> None:
        """A stop that raised: say so on the bus. The job is still watched and settles when it ends; the
        next request to stop it (a STOP action, ``run.stop()``) tries again."""
        job_run_id, error = item
        running = self._running.get(job_run_id)
        log.error("scheduler %s: could not stop job run %s: %s", self.name, job_run_id, error)
        if running is not None:
            running.stop_requested = None
        run = self._runs.get(running.run_id) if running is not None else None
        if run is not None:
            self._send(f"{run.workflow}.{running.job}", error, JOB_STOP_FAILED, "default",
                       {"run": run.run_id, "job_run": job_run_id})

    def _settle(self, running: _Running, status: ExitStatus) -> None:
        """Record how a job run ended and announce it (once)."""
        if running.job_run_id not in self._running:
            return
        if running.stop_requested is not None:
            state, error = "KILLED", None
        elif status.succeeded:
            state, error = "FINISHED", None
        else:
            state = "FAILED"
            why = f"exit code {status.returncode}" if status.returncode is not None else "the process was killed"
            error = f"{why}; log tail:\n{running.process.log_tail(20)}"
        run = self._runs.get(running.run_id)
        outcome = self._outcome(running)
        lost = state == "FAILED" and status.returncode is None  # gone without an exit status
        restart = lost and run is not None and self._job_property(run, running.job, "on_lost") == "restart"
        if restart:
            error += "\n(the process was lost; on_lost='restart' starts a new attempt)"
        self.state.job_ended(running.job_run_id, state, error,
                             restart=(running.run_id, running.job) if restart else None,
                             savepoint=outcome.get("savepoint"))
        self._running.pop(running.job_run_id, None)  # only now: a retried commit above finds it again
        if run is None:
            return
        if outcome.get("savepoint"):
            self._prune_savepoints(run, running.job)
        if state == "FINISHED":
            self._record_outputs(run, running)
        extra = {"stop_seconds": round(time.monotonic() - running.stop_requested, 3)} \
            if running.stop_requested is not None else {}
        extra.update(outcome)
        self._publish_status(run, running.job, running.job_run_id, running.attempt, state, error, **extra)
        if run.run_id in self._stopping_runs:
            self._continue_stop(run)
        else:
            self._execute_pending(run.run_id)  # a STOP/RESTART that waited for this process, a lost-job restart

    def _outcome(self, running: _Running) -> dict[str, Any]:
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

    def _savepoint_dir(self, run: RunState, job: str) -> Path:
        """Where a job of a run puts its savepoints: its own, never shared by two live runs."""
        return self.home / "savepoints" / run.workflow / str(run.run_id) / job

    def _prune_savepoints(self, run: RunState, job: str) -> None:
        """Delete a job's savepoints beyond the newest ``savepoints_kept`` (job property, default 2; 0 keeps
        every one): a streaming job restarted on every validated model for weeks must not fill the disk."""
        value = self._job_property(run, job, "savepoints_kept")
        try:
            kept = SAVEPOINTS_KEPT if value is None else int(value)
        except (TypeError, ValueError):
            log.warning("run %s: job %r: savepoints_kept must be a whole number; keeping %d", run.run_id, job,
                        SAVEPOINTS_KEPT)
            kept = SAVEPOINTS_KEPT
        if kept <= 0:
            return
        for path in prune_savepoints(self.state.savepoints(run.run_id, job), self._savepoint_dir(run, job), kept):
            log.info("run %s: deleted the savepoint %s of job %r (older than the %d kept)", run.run_id, path, job, kept)

    def _record_outputs(self, run: RunState, running: _Running) -> None:
        job = self._workflow(run).jobs.get(running.job)
        for dataset in getattr(job, "inputs", ()):
            self._store.register_dataset(dataset.name, uri=dataset.uri, schema=dataset.schema)
            self._store.record_dataset_read(running.job_run_id, dataset.name)
        for dataset in getattr(job, "outputs", ()):
            self._store.register_dataset(dataset.name, uri=dataset.uri, schema=dataset.schema)
            self._store.record_dataset_write(running.job_run_id, dataset.name)
            self._send(dataset.name, dataset.uri or "", DATASET_UPDATED, "default",
                       {"run": run.run_id, "job_run": running.job_run_id})

    def _check_run_done(self, run_id: int) -> None:
        run = self._runs[run_id]
        if any(r.run_id == run_id for r in self._running.values()) or self.state.pending_actions(run_id):
            return
        if self.schedules.keeps_running(run_id):
            return
        states = self.state.job_states(run_id)
        if "FAILED" in states.values():
            self._finish_run(run, "FAILED")
        elif set(states) >= set(self._workflow(run).jobs):
            self._finish_run(run, "FINISHED")

    def _finish_run(self, run: RunState, state: str) -> None:
        self.state.finish_run(run.run_id, state)
        self._runs.pop(run.run_id, None)
        self._send(run.workflow, state, RUN_STATUS_CHANGED, "default", {"run": run.run_id})

    # --- recovery --------------------------------------------------------------------------------

    def _recover(self) -> None:
        for run in self.state.active_runs():
            self._runs[run.run_id] = run
            if any(isinstance(rule, CustomRule) for rule in run.rules):  # unpickled only from our blob store
                from aiflow_notebook.sdk.workflow import Workflow

                verified = Workflow.from_bytes(self.blobs.get(self._run_properties(run)["uri"]))
                bind(run.rules, [edge.to_dict() for edge in verified.control_edges])
            if self._run_properties(run).get("stop_requested"):
                self._stopping_runs.add(run.run_id)  # a stop the previous scheduler had not finished
        for active in self.state.active_job_runs():
            run = self._runs[active.run_id]
            process = JobProcess.adopt(ProcessRecord(**active.record)) if active.record else \
                self._find_process(run.run_id, active.job, active.job_run_id)
            if process is None:
                continue  # never started: its pending START action starts it below
            running = _Running(run.run_id, active.job, active.job_run_id, active.attempt, process)
            if active.record is None:
                self.state.job_started(active.job_run_id, json.loads(process.record.to_json()),
                                       process.record.log_path, active.action_id)
            self._watch(running)  # a process that already ended is settled at once by its monitor
        self._republish_missing()
        for run_id in list(self._runs):
            if run_id in self._stopping_runs:
                self._continue_stop(self._runs[run_id])
            else:
                self._execute_pending(run_id)

    def _republish_missing(self) -> None:
        """Publish what a crash kept from the bus: the reply to a submission, the latest job states."""
        for run in list(self._runs.values()):
            replies = self.client.list_events(key=command_key(self.name), namespace=CONTROL_NAMESPACE,
                                              event_type=RUN_CREATED, since_version=run.since_version)
            if not any(json.loads(e.context or "{}").get("run") == run.run_id for e in replies):
                request_id = self._run_properties(run).get("request_id")
                self._send(command_key(self.name), json.dumps({"run": run.run_id, "workflow": run.workflow}),
                           RUN_CREATED, CONTROL_NAMESPACE, {"request_id": request_id, "run": run.run_id})
            published: dict[int, set[str]] = {}
            keys = sorted({f"{run.workflow}.{job}" for _, job, _, _ in self.state.job_runs(run.run_id)})
            if not keys:
                continue
            for event in self.client.list_events(key=keys, event_type=JOB_STATUS_CHANGED,
                                                 since_version=run.since_version):
                context = json.loads(event.context or "{}")
                if context.get("run") == run.run_id:
                    published.setdefault(context.get("job_run"), set()).add(event.value)
            for job_run_id, job, state, attempt in self.state.job_runs(run.run_id):
                if state not in published.get(job_run_id, set()):
                    error = self._store.get_job_run(job_run_id).error if state == "FAILED" else None
                    self._publish_status(run, job, job_run_id, attempt, state, error)

    # --- helpers ---------------------------------------------------------------------------------

    def _workflow(self, run: RunState):
        if run.run_id not in self._workflows:
            from aiflow_notebook.sdk.workflow import Workflow

            self._workflows[run.run_id] = Workflow.from_bytes(self._store.get_workflow_snapshot(run.snapshot_id))
        return self._workflows[run.run_id]

    def _job_property(self, run: RunState, job: str, name: str) -> Any:
        found = self._workflow(run).jobs.get(job)
        return (found.properties or {}).get(name) if found is not None else None

    def _run_properties(self, run: RunState) -> dict[str, Any]:
        return self.state.run_properties(run.run_id)

    def _publish_status(self, run: RunState, job: str, job_run_id: int, attempt: int, state: str,
                        error: str | None = None, **extra: Any) -> None:
        context = {"run": run.run_id, "job_run": job_run_id, "attempt": attempt, **extra}
        if error:
            context["error"] = error[-4000:]
        self._send(f"{run.workflow}.{job}", state, JOB_STATUS_CHANGED, "default", context)

    def _send(self, key: str, value: str, event_type: str, namespace: str, context: dict[str, Any]) -> Event:
        return self.client.send_event(Event(key=key, value=value, event_type=event_type, namespace=namespace,
                                            sender=SENDER, context=json.dumps(context)))


def sent_from_run(event: Event) -> dict | None:
    """The run whose job sent ``event`` (``EventClient.from_environment`` in a job names it in the context:
    ``{"run": 7, "workflow": "ctr", "project": "demo"}``), else None: the event is global."""
    if not event.context or '"workflow"' not in event.context or event.sender == SENDER:
        return None
    try:
        context = json.loads(event.context)
    except ValueError:
        return None
    if not isinstance(context, dict) or not isinstance(context.get("run"), int):
        return None
    return context if isinstance(context.get("workflow"), str) else None


def run_of(event: Event) -> int | None:
    """The run a scheduler's status event belongs to (its context names it), else None."""
    try:
        run = json.loads(event.context).get("run") if event.context else None
    except (ValueError, AttributeError):
        return None
    return run if isinstance(run, int) else None


def _meta_urls(url) -> tuple[str, str]:
    """``(without password, full)`` renderings of the metadata URL: jobs see the first; the second only
    travels over their stdin pipe."""
    full = url.render_as_string(hide_password=False)
    if url.password is None:
        return full, full
    return url._replace(password=None).render_as_string(hide_password=False), full  # set() ignores None


def _secrets_pipe(secrets: dict[str, str]) -> int:
    """The read end of a pipe that holds ``secrets`` (JSON) and then ends: the job's stdin."""
    data = json.dumps(secrets).encode()
    read, write = os.pipe()
    try:
        if len(data) > 60_000:  # a pipe holds 64 KiB: never block here
            raise AIFlowError("the secrets for a job are too large for its stdin pipe")
        os.write(write, data)
    finally:
        os.close(write)
    return read


def _private_dirs(home: Path, directory: Path) -> None:
    """``directory`` and every directory between it and ``home``, mode 0700 (job specs and logs live there)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    current = directory
    while current != home and home in current.parents:
        if stat.S_IMODE(current.stat().st_mode) != 0o700:
            os.chmod(current, 0o700)
        current = current.parent


def _write_private(path: Path, text: str, append: bool = False) -> None:
    """Write a file that only this user may read (mode 0600, also when it existed with wider rights)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)


# This process's own CURVE identity for some other bus (a kernel connected to a remote server): a job gets
# the keys of its scheduler's bus from the scheduler (``job_env``), or none.
OWN_BUS_KEYS = frozenset({"AIFLOW_EVENT_SERVER_KEY", "AIFLOW_EVENT_CLIENT_KEY"})


def _job_environment() -> dict[str, str]:
    """This process's environment for a job, without PyFlink worker internals it may have picked up and
    without this process's own bus keys."""
    return {key: value for key, value in os.environ.items()
            if key not in PYFLINK_WORKER_VARIABLES and key not in OWN_BUS_KEYS}


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
