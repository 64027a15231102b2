"""What the REST handlers ask, answered from the metadata store and the event bus, as JSON-ready dicts.

Every method is blocking (a database query, a bus request) and is called on a worker thread of the
extension, never on the server's event loop. The store opens a session per call and the event client a
socket per thread, so the worker threads share nothing but these two objects.

Bad input raises :class:`RequestError` with the HTTP status the handler answers (400 for a malformed
request, 404 for something that does not exist, 409 for a request that no longer fits the run's state).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiflow_notebook.core.vocabulary import (
    DEFAULT_PROJECT,
    DEFAULT_SCHEDULER,
    FINAL_STATES,
    JobState,
    run_in_context,
)
from aiflow_notebook.events import Event, EventClient
from aiflow_notebook.meta import (
    InvalidStageError,
    MetadataStore,
    NotFoundError,
    StageTransitionError,
    WorkflowRunRecord,
)
from aiflow_notebook.meta.models import JobRun
from aiflow_notebook.meta.remote import RemoteStore
from aiflow_notebook.meta.runs import MAX_LOG_LINES  # noqa: F401 - the handlers' bound on ?tail=
from aiflow_notebook.scheduler.client import SchedulerClient

WORKFLOW_CACHE = 64  # compiled workflows kept in memory, by snapshot


@dataclass
class RequestError(Exception):
    """A request the service cannot answer: ``status`` (4xx) and a message that says why."""

    status: int
    message: str

    def __str__(self) -> str:
        return self.message


class AIFlowService:
    """Runs, jobs, logs, events, models and lineage over one store and one event client.

    ``scheduler_name`` is the scheduler that commands go to unless a run names its own."""

    def __init__(self, store: MetadataStore, client: EventClient, scheduler_name: str = DEFAULT_SCHEDULER):
        self.store, self.client, self.scheduler_name = store, client, scheduler_name
        self._workflows: dict[int, Any] = {}  # snapshot id -> Workflow (snapshots never change)
        self._workflows_lock = threading.Lock()

    # --- workflows and runs ----------------------------------------------------------------------------

    def workflows(self) -> list[dict[str, Any]]:
        """Workflows that have runs, the most recently run first, each with its run count and latest run."""
        return [{"name": workflow, "project": project, "runs": count,
                 "latest_run": _run(self.store.get_workflow_run(latest))}
                for project, workflow, count, latest in self.store.count_workflow_runs()]

    def runs(self, workflow: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        return [_run(run) for run in self.store.list_workflow_runs(workflow=workflow, limit=limit)]

    def run(self, run_id: int) -> dict[str, Any]:
        """The run with each job of its workflow: latest state, attempts, start and end of the latest."""
        run = self._find_run(run_id)
        job_runs = self.store.list_job_runs(run_id)
        workflow = self._workflow(run)
        names = list(workflow.jobs) if workflow is not None else []
        names += [jr.job for jr in job_runs if jr.job not in names]
        jobs = []
        for name in names:
            attempts = [jr for jr in job_runs if jr.job == name]
            latest = attempts[-1] if attempts else None
            spec = workflow.jobs.get(name) if workflow is not None else None
            jobs.append({
                "name": name,
                "state": latest.state if latest else JobState.INIT,
                "attempts": len(attempts),
                "attempt": latest.attempt if latest else None,
                "job_run_id": latest.id if latest else None,
                "started_at": _time(latest.started_at) if latest else None,
                "ended_at": _time(latest.ended_at) if latest else None,
                "error": latest.error if latest else None,
                "engine": spec.engine if spec else None,
                "streaming": spec.streaming if spec else None,
                "job_runs": [_job_run(jr) for jr in attempts],
            })
        edges = [edge.to_dict() for edge in workflow.control_edges] if workflow is not None else []
        return {**_run(run), "jobs": jobs, "control_edges": edges}

    def stop_run(self, run_id: int) -> dict[str, Any]:
        run = self._find_run(run_id)
        if run.state in FINAL_STATES:
            return {"run": run_id, "state": run.state, "requested": False}
        request = self._scheduler(run).stop_run(run_id)
        return {"run": run_id, "state": run.state, "requested": True, "request_version": request.version}

    def restart_job(self, run_id: int, job: str) -> dict[str, Any]:
        run = self._find_run(run_id)
        workflow = self._workflow(run)
        if workflow is not None and job not in workflow.jobs:
            raise RequestError(404, f"workflow {run.workflow!r} of run {run_id} has no job {job!r}; its jobs: "
                                    f"{', '.join(workflow.jobs)}")
        if run.state in FINAL_STATES:
            raise RequestError(409, f"run {run_id} already ended {run.state}, so its jobs cannot be restarted; "
                                    "submit the workflow again")
        request = self._scheduler(run).restart_job(run_id, job)
        return {"run": run_id, "job": job, "requested": True, "request_version": request.version}

    def rerun(self, run_id: int) -> dict[str, Any]:
        """Run the workflow of run ``run_id`` again: its recorded snapshot (the same code, not what the
        notebook holds now), in the same project and working directory, as a new run."""
        run = self._find_run(run_id)
        workflow = self._workflow(run)
        if workflow is None:
            raise RequestError(409, f"run {run_id} recorded no workflow, so it cannot be run again; submit the "
                                    "workflow from its notebook")
        cwd = (run.properties or {}).get("cwd")
        new = self._scheduler(run).submit(workflow, project=workflow.project or DEFAULT_PROJECT, cwd=cwd)
        return {"run": new.run_id, "rerun_of": run_id, "workflow": workflow.name}

    def job_log(self, run_id: int, job: str, tail: int) -> dict[str, Any]:
        """The last ``tail`` lines of the log of the job's latest attempt."""
        self._find_run(run_id)
        attempts = [jr for jr in self.store.list_job_runs(run_id) if jr.job == job]
        if not attempts:
            raise RequestError(404, f"job {job!r} of run {run_id} has not run (no attempt, so no log)")
        latest = attempts[-1]
        text = self.store.job_log(latest.id, tail)  # (read where the store runs: also a connected server's)
        return {"run": run_id, "job": job, "job_run_id": latest.id, "attempt": latest.attempt, "state": latest.state,
                "log": text}

    # --- events ----------------------------------------------------------------------------------------

    def events(self, key: str | None, since_version: int | None, limit: int) -> dict[str, Any]:
        """Events in version order: the oldest ``limit`` after ``since_version`` when it is given (to page
        forward), else the newest ``limit``. ``latest_version`` lets a caller follow on from there."""
        latest = self.client.latest_version()
        if since_version is not None:
            found = self.client.list_events(key=key, since_version=since_version, limit=limit)
        else:
            found = self._newest(key, latest, limit)
        return {"events": [event_dict(event) for event in found], "latest_version": latest}

    def _newest(self, key: str | None, latest: int, limit: int) -> list[Event]:
        """The newest ``limit`` events of ``key``: look back in growing windows (the log has no reverse read)."""
        window, found = limit, []
        while True:
            since = max(0, latest - window)
            found = self.client.list_events(key=key, since_version=since, until_version=latest)
            if len(found) >= limit or since == 0:
                return found[-limit:]
            window *= 4

    # --- models and lineage ----------------------------------------------------------------------------

    def models(self) -> list[dict[str, Any]]:
        answer = []
        for model in self.store.list_models():
            versions = self.store.list_model_versions(model.name)
            stages: dict[str, int] = {}
            for version in versions:
                stages[version.stage.value] = stages.get(version.stage.value, 0) + 1
            answer.append({"name": model.name, "description": model.description,
                           "created_at": _time(model.created_at), "versions": len(versions), "stages": stages,
                           "latest_version": versions[-1].to_dict() if versions else None})
        return answer

    def model_versions(self, model: str) -> list[dict[str, Any]]:
        """Newest first."""
        try:
            return [version.to_dict() for version in reversed(self.store.list_model_versions(model))]
        except NotFoundError as exc:
            raise RequestError(404, str(exc)) from None

    def set_stage(self, model: str, version: int, stage: Any) -> dict[str, Any]:
        """Move a version to ``stage`` through the model center, which publishes ``MODEL_<STAGE>``."""
        if not isinstance(stage, str):
            raise RequestError(400, f'the body must be {{"stage": NAME}} with a stage name, got stage={stage!r}')
        try:
            return self.store.update_model_version(model, version, stage).to_dict()
        except NotFoundError as exc:
            raise RequestError(404, str(exc)) from None
        except InvalidStageError as exc:
            raise RequestError(400, str(exc)) from None
        except StageTransitionError as exc:
            raise RequestError(409, str(exc)) from None

    def lineage(self, model: str, version: int) -> dict[str, Any]:
        try:
            graph = self.store.lineage(model, version)
        except NotFoundError as exc:
            raise RequestError(404, str(exc)) from None
        return {"title": graph.title,
                "nodes": [{"key": node.key, "kind": node.kind, "id": node.id, "label": node.label,
                           "attrs": node.attrs} for node in graph.nodes.values()],
                "edges": [{"source": src, "target": dst, "relation": relation} for src, dst, relation in graph.edges]}

    # --- helpers ---------------------------------------------------------------------------------------

    def _find_run(self, run_id: int) -> WorkflowRunRecord:
        try:
            return self.store.get_workflow_run(run_id)
        except NotFoundError:
            raise RequestError(404, f"run {run_id} does not exist") from None

    def _workflow(self, run: WorkflowRunRecord):
        """The compiled workflow the run runs (JSON; nothing is unpickled), or None if it was not recorded."""
        if run.snapshot_id is None:
            return None
        with self._workflows_lock:
            found = self._workflows.get(run.snapshot_id)
        if found is None:
            from aiflow_notebook.sdk.workflow import Workflow

            found = Workflow.from_bytes(self.store.get_workflow_snapshot(run.snapshot_id))
            with self._workflows_lock:
                if len(self._workflows) >= WORKFLOW_CACHE:
                    self._workflows.pop(next(iter(self._workflows)))
                self._workflows[run.snapshot_id] = found
        return found

    def _scheduler(self, run: WorkflowRunRecord) -> SchedulerClient:
        """Commands to the run's scheduler; a re-run's payload goes where that scheduler loads it from: the
        local blob store, or over the connection into a connected server's (``RemoteStore``)."""
        blobs = None
        if isinstance(self.store, RemoteStore):
            from aiflow_notebook.storage.blobs import RemoteBlobStore

            blobs = RemoteBlobStore(self.client)
        return SchedulerClient(self.client, run.scheduler or self.scheduler_name, blob_store=blobs)


def event_dict(event: Event) -> dict[str, Any]:
    """An event as the REST API and the push channel show it: ``create_time`` in seconds since the epoch,
    ``run_id`` from a scheduler status event's context (else None)."""
    return {"version": event.version, "key": event.key, "value": event.value, "event_type": event.event_type,
            "namespace": event.namespace, "sender": event.sender, "context": event.context,
            "create_time": event.create_time / 1000 if event.create_time is not None else None,
            "run_id": run_in_context(event.context)}


def _run(run: WorkflowRunRecord) -> dict[str, Any]:
    return {"id": run.id, "workflow": run.workflow, "project": run.project, "state": run.state,
            "created_at": _time(run.created_at), "ended_at": _time(run.ended_at), "scheduler": run.scheduler}


def _job_run(job_run: JobRun) -> dict[str, Any]:
    return {"id": job_run.id, "attempt": job_run.attempt, "state": job_run.state,
            "started_at": _time(job_run.started_at), "ended_at": _time(job_run.ended_at), "error": job_run.error,
            "savepoint": job_run.savepoint}  # where a streaming Flink job's next start resumes (docs/streaming.md)


def _time(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def parse_json_object(body: bytes) -> dict[str, Any]:
    """A request body that must be a JSON object."""
    try:
        data = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RequestError(400, f"the request body must be a JSON object, got {type(data).__name__}")
    return data
