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
"""

from __future__ import annotations

import json
import logging
import os
import queue
import stat
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiflow_notebook.blobs import BlobStore, LocalBlobStore
from aiflow_notebook.config import aiflow_home
from aiflow_notebook.engines import engine_runner
from aiflow_notebook.engines.process import ExitStatus, JobProcess, ProcessRecord
from aiflow_notebook.errors import AIFlowError
from aiflow_notebook.events import Event, EventClient
from aiflow_notebook.meta.store import MetadataStore
from aiflow_notebook.scheduler.state import PendingAction, RunState, SchedulerState
from aiflow_notebook.vocabulary import DATASET_UPDATED, JOB_STATUS_CHANGED, RUN_STATUS_CHANGED
from aiflow_notebook.vocabulary import FINAL_STATES as FINAL_JOB_STATES

log = logging.getLogger(__name__)

CONTROL_NAMESPACE = "aiflow"
SUBMIT_WORKFLOW = "SUBMIT_WORKFLOW"
STOP_WORKFLOW_RUN = "STOP_WORKFLOW_RUN"
RUN_CREATED = "WORKFLOW_RUN_CREATED"
SUBMIT_REJECTED = "WORKFLOW_SUBMIT_REJECTED"
SENDER = "scheduler"
MAX_BATCH = 512  # events decided in one transaction at most
# Set by PyFlink's Python worker in the process that ran a local job (loopback mode) and inherited by
# every child: a job process that inherits them believes it is a UDF worker and refuses to start Flink.
PYFLINK_WORKER_VARIABLES = frozenset({
    "PYFLINK_GATEWAY_DISABLED", "PYFLINK_GATEWAY_PORT", "_PYFLINK_CONN_INFO_PATH", "PYTHON_LOOPBACK_SERVER_ADDRESS",
    "SEMI_PERSISTENT_DIRECTORY", "BOOT_LOG_DIR", "_PYTHON_WORKER_MEMORY_LIMIT", "TABLE_LOCAL_TIME_ZONE", "WORKER_ID",
    "PIPELINE_OPTIONS", "LOGGING_API_SERVICE_DESCRIPTOR", "CONTROL_API_SERVICE_DESCRIPTOR", "FLINK_BOOT_TESTING",
    "python",
})


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
    stop_requested: bool = False


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
        self.state = SchedulerState(store, name)
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
        self._stop = threading.Event()
        self._lag_since = 0.0
        # seconds from an event's arrival here to its actions being committed (benchmarks turn it on)
        self.decision_seconds: list[float] | None = [] if record_decisions else None

    # --- life cycle ------------------------------------------------------------------------------

    def start(self) -> Scheduler:
        self._recover()
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
        if kill_jobs:
            for running in list(self._running.values()):
                running.process.stop(grace=5)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # --- the loop --------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                batch = [self._queue.get(timeout=0.2)]
            except queue.Empty:
                continue
            while len(batch) < MAX_BATCH:  # group commit: what queued up meanwhile is decided together
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            events: list[tuple[Event, float]] = []
            for kind, item in batch:
                if kind == "event" and not self._is_command(item[0]):
                    events.append(item)
                    continue
                self._guarded(self._handle_events, events)
                events = []
                if kind == "event":
                    self._guarded(self._handle_command, item[0])
                else:
                    self._guarded(self._handle_exit, item)
            self._guarded(self._handle_events, events)

    def _guarded(self, handler, item) -> None:
        try:
            handler(item)
        except Exception:  # a bug must not kill the scheduler; the event is handled again after a restart
            log.exception("scheduler %s: failed to handle %r", self.name, item)

    def _is_command(self, event: Event) -> bool:
        return event.namespace == CONTROL_NAMESPACE and event.key == command_key(self.name)

    def _handle_command(self, event: Event) -> None:
        if event.event_type == SUBMIT_WORKFLOW:
            self._submit(event)
        elif event.event_type == STOP_WORKFLOW_RUN and not self._authorized(event):
            log.warning("scheduler %s: ignored a request to stop a run from %r, not an admitted client",
                        self.name, event.sender)
            self.state.advance(event.version)
        elif event.event_type == STOP_WORKFLOW_RUN:
            self._stop_run(int(json.loads(event.value)["run"]), event.version)
        else:
            self.state.advance(event.version)

    def _handle_events(self, events: list[tuple[Event, float]]) -> None:
        """Evaluate rules on ``events`` in version order; commit the outcome once, then act."""
        if not events:
            return
        touched: dict[int, RunState] = {}
        actions: list[tuple[int, str, str, int]] = []
        decided: list[float] = []
        for event, arrived in events:
            fired = False
            for run in self._runs.values():
                if event.version <= run.since_version:
                    continue
                for rule in run.rules:
                    before = list(rule.met)
                    if rule.on_event(event):
                        actions.append((run.run_id, rule.job, rule.action, event.version))
                        fired = True
                    if rule.met != before:
                        touched[run.run_id] = run
            if fired:
                decided.append(arrived)
        last = events[-1][0].version
        if touched or actions:
            self.state.commit_event(last, list(touched.values()), actions)
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
                run_id = json.loads(event.context).get("run")
                if run_id in self._runs:
                    self._check_run_done(run_id)

    # --- commands --------------------------------------------------------------------------------

    def _submit(self, event: Event) -> None:
        from aiflow_notebook.workflow import Workflow

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
        snapshot_id = self.store.save_workflow_snapshot(workflow.name, workflow.content_hash, payload, project=project)
        edges = [edge.to_dict() for edge in workflow.control_edges]
        started_by_rule = {edge["job"] for edge in edges if edge["action"] == "START"}
        initial = [name for name in workflow.jobs if name not in started_by_rule]
        properties = {"request_id": request.get("request_id"), "cwd": request.get("cwd"),
                      "submitted_by": event.sender, "uri": request["uri"]}
        run_id = self.state.create_run(workflow.name, project, snapshot_id, edges, initial, event.version,
                                       properties)
        run = next(r for r in self.state.active_runs() if r.run_id == run_id)
        self._runs[run_id] = run
        self._workflows[run_id] = workflow
        self._send(command_key(self.name), json.dumps({"run": run_id, "workflow": workflow.name}), RUN_CREATED,
                   CONTROL_NAMESPACE, {"request_id": request.get("request_id"), "run": run_id})
        self._send(workflow.name, "RUNNING", RUN_STATUS_CHANGED, "default", {"run": run_id})
        self._execute_pending(run_id)

    def _stop_run(self, run_id: int, version: int | None = None) -> None:
        run = self._runs.get(run_id)
        if run is None:
            return
        self._stopping_runs.add(run_id)
        for running in [r for r in self._running.values() if r.run_id == run_id]:
            self._stop_job(running)
        self._finish_run(run, "KILLED")
        if version is not None:
            self.state.advance(version)

    # --- actions ---------------------------------------------------------------------------------

    def _execute_pending(self, run_id: int) -> None:
        for action in self.state.pending_actions(run_id):
            run = self._runs.get(action.run_id)
            if run is None:
                continue
            if action.action in ("STOP", "RESTART"):
                for running in [r for r in self._running.values() if r.run_id == run.run_id and r.job == action.job]:
                    self._stop_job(running)
            if action.action in ("START", "RESTART"):
                self._start_job(run, action)
            else:
                self.state.action_done(action.id)

    def _start_job(self, run: RunState, action: PendingAction) -> None:
        existing = self.state.job_run_for_action(action.id)
        if existing is None and any(r.run_id == run.run_id and r.job == action.job for r in self._running.values()):
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
        process = self._launch(run, job, job_run_id, attempt, self._trigger(run, action))
        self.state.job_started(job_run_id, json.loads(process.record.to_json()), process.record.log_path, action.id)
        self._publish_status(run, job.name, job_run_id, attempt, "RUNNING")
        self._watch(_Running(run.run_id, job.name, job_run_id, attempt, process))

    def _trigger(self, run: RunState, action: PendingAction) -> dict[str, Any] | None:
        """The event whose rule decided ``action``, for the job (a serving job serves the model version a
        ``MODEL_*`` event names); None for a run's initial jobs and restarts after a lost process."""
        if action.event_version is None or action.event_version <= run.since_version:
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
                trigger: dict[str, Any] | None = None) -> JobProcess:
        base = self._paths(run.run_id, job.name, job_run_id)
        properties = self._run_properties(run)
        public_url, full_url = _meta_urls(self.store._db.url)
        spec = {"workflow": run.workflow, "project": run.project, "run_id": run.run_id, "job_run_id": job_run_id,
                "attempt": attempt, "job": job.to_dict(include_payload=False), "runner": engine_runner(job.engine),
                "cwd": properties.get("cwd"), "meta_url": public_url, "event_url": self.client.url}
        spec.update(self._payload_reference(job, properties.get("uri")))
        spec["trigger"] = trigger  # the event that fired the rule, for the job runtime
        spec_path = base.with_suffix(".spec.json")
        spec["spec_path"] = str(spec_path)
        if full_url != public_url:
            spec["secrets"] = "stdin"
        _private_dirs(self.home, spec_path.parent)
        _write_private(spec_path, json.dumps(spec))
        _write_private(base.with_suffix(".log"), "", append=True)
        env = {**_job_environment(), **self.job_env, "AIFLOW_META_URL": public_url, "AIFLOW_EVENT_URL": self.client.url,
               "AIFLOW_WORKFLOW": run.workflow, "AIFLOW_JOB": job.name, "AIFLOW_JOB_RUN_ID": str(job_run_id)}
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
        """A job process started just before a crash, before its record was committed."""
        import psutil

        status_path = str(self._paths(run_id, job, job_run_id).with_suffix(".status.json"))
        for proc in psutil.process_iter(["pid", "cmdline", "create_time"]):
            if status_path in (proc.info["cmdline"] or []):
                log_path = str(self._paths(run_id, job, job_run_id).with_suffix(".log"))
                return JobProcess.adopt(ProcessRecord(proc.info["pid"], proc.info["create_time"], log_path, status_path))
        return None

    def _stop_job(self, running: _Running) -> None:
        running.stop_requested = True
        status = running.process.stop()
        self._settle(running, status)

    def _watch(self, running: _Running) -> None:
        self._running[running.job_run_id] = running

        def wait() -> None:
            running.process.wait()
            self._queue.put(("exit", running.job_run_id))

        threading.Thread(target=wait, name=f"aiflow-job-{running.job_run_id}", daemon=True).start()

    def _handle_exit(self, job_run_id: int) -> None:
        running = self._running.get(job_run_id)
        if running is not None:
            self._settle(running, running.process.poll() or ExitStatus(None))

    def _settle(self, running: _Running, status: ExitStatus) -> None:
        """Record how a job run ended and announce it (once)."""
        if self._running.pop(running.job_run_id, None) is None:
            return
        if running.stop_requested:
            state, error = "KILLED", None
        elif status.succeeded:
            state, error = "FINISHED", None
        else:
            state = "FAILED"
            why = f"exit code {status.returncode}" if status.returncode is not None else "the process was killed"
            error = f"{why}; log tail:\n{running.process.log_tail(20)}"
        run = self._runs.get(running.run_id)
        lost = state == "FAILED" and status.returncode is None  # gone without an exit status
        restart = lost and run is not None and self._job_property(run, running.job, "on_lost") == "restart"
        if restart:
            error += "\n(the process was lost; on_lost='restart' starts a new attempt)"
        self.state.job_ended(running.job_run_id, state, error,
                             restart=(running.run_id, running.job) if restart else None)
        if run is None:
            return
        if state == "FINISHED":
            self._record_outputs(run, running)
        self._publish_status(run, running.job, running.job_run_id, running.attempt, state, error)
        if restart:
            self._execute_pending(run.run_id)

    def _record_outputs(self, run: RunState, running: _Running) -> None:
        job = self._workflow(run).jobs.get(running.job)
        for dataset in getattr(job, "inputs", ()):
            self.store.register_dataset(dataset.name, uri=dataset.uri, schema=dataset.schema)
            self.store.record_dataset_read(running.job_run_id, dataset.name)
        for dataset in getattr(job, "outputs", ()):
            self.store.register_dataset(dataset.name, uri=dataset.uri, schema=dataset.schema)
            self.store.record_dataset_write(running.job_run_id, dataset.name)
            self._send(dataset.name, dataset.uri or "", DATASET_UPDATED, "default",
                       {"run": run.run_id, "job_run": running.job_run_id})

    def _check_run_done(self, run_id: int) -> None:
        run = self._runs[run_id]
        if any(r.run_id == run_id for r in self._running.values()) or self.state.pending_actions(run_id):
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
                    error = self.store.get_job_run(job_run_id).error if state == "FAILED" else None
                    self._publish_status(run, job, job_run_id, attempt, state, error)

    # --- helpers ---------------------------------------------------------------------------------

    def _workflow(self, run: RunState):
        if run.run_id not in self._workflows:
            from aiflow_notebook.workflow import Workflow

            self._workflows[run.run_id] = Workflow.from_bytes(self.store.get_workflow_snapshot(run.snapshot_id))
        return self._workflows[run.run_id]

    def _job_property(self, run: RunState, job: str, name: str) -> Any:
        found = self._workflow(run).jobs.get(job)
        return (found.properties or {}).get(name) if found is not None else None

    def _run_properties(self, run: RunState) -> dict[str, Any]:
        from aiflow_notebook.meta import orm

        with self.store._db.reading() as session:
            return dict(session.get(orm.WorkflowRun, run.run_id).properties or {})

    def _publish_status(self, run: RunState, job: str, job_run_id: int, attempt: int, state: str,
                        error: str | None = None) -> None:
        context = {"run": run.run_id, "job_run": job_run_id, "attempt": attempt}
        if error:
            context["error"] = error[-4000:]
        self._send(f"{run.workflow}.{job}", state, JOB_STATUS_CHANGED, "default", context)

    def _send(self, key: str, value: str, event_type: str, namespace: str, context: dict[str, Any]) -> Event:
        return self.client.send_event(Event(key=key, value=value, event_type=event_type, namespace=namespace,
                                            sender=SENDER, context=json.dumps(context)))


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
