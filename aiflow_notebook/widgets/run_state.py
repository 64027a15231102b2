"""What the run panels know about one run: each job's state, attempts, duration, progress, log tail and the
model version it serves after a swap, taken from the run's status events (their context names the run, so runs of one workflow stay apart)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from aiflow_notebook.core.vocabulary import (
    FINAL_STATES,
    JOB_PROGRESS,
    JOB_STATUS_CHANGED,
    MODEL_SWAP_FAILED,
    MODEL_SWAPPED,
    RUN_STATUS_CHANGED,
    SCHEDULER_SENDER,
    JobState,
    RunState,
    run_in_context,
)

LOG_TAIL_LINES = 20
LOG_TAIL_BYTES = 16_384


def blank_job() -> dict[str, Any]:
    return {"state": JobState.INIT, "attempt": None, "attempts": 0, "job_run": None, "started": None, "ended": None,
            "duration_s": None, "progress": None, "error": None, "log_tail": "", "serving": None, "swap_error": None}


class RunTracker:
    """The state of run ``run`` (a ``WorkflowRun``) as plain JSON-ready data, fed with bus events."""

    def __init__(self, run: Any):
        self.run = run
        self.workflow = run.workflow.name
        self.status: str = RunState.RUNNING
        self.jobs: dict[str, dict[str, Any]] = {job: blank_job() for job in run.workflow.jobs}
        self._logs: dict[int, Path] = {}  # job run id -> its log file
        self._read_to_end: set[int] = set()  # job runs whose log was read after they ended

    @property
    def keys(self) -> list[str]:
        return [self.workflow] + [f"{self.workflow}.{job}" for job in self.jobs]

    def apply(self, event: Any) -> bool:
        """Take one event; True when it changed something."""
        if run_in_context(event.context) != self.run.run_id:
            return False
        if event.event_type == RUN_STATUS_CHANGED and event.key == self.workflow and event.sender == SCHEDULER_SENDER:
            self.status = event.value
            return True
        job = event.key[len(self.workflow) + 1:] if event.key.startswith(self.workflow + ".") else None
        if job not in self.jobs:
            return False
        info = self.jobs[job]
        context = json.loads(event.context or "{}")
        if event.event_type == JOB_PROGRESS:
            try:
                info["progress"] = min(1.0, max(0.0, float(event.value)))
            except ValueError:
                return False
            return True
        if event.event_type in (MODEL_SWAPPED, MODEL_SWAP_FAILED):
            return _swap(info, event)
        if event.event_type != JOB_STATUS_CHANGED or event.sender != SCHEDULER_SENDER:
            return False
        seconds = event.create_time / 1000 if event.create_time else time.time()
        if context.get("job_run") != info["job_run"]:  # a new job run: a start or a restart
            info.update(job_run=context.get("job_run"), attempts=info["attempts"] + 1, started=seconds, ended=None,
                        progress=None, error=None, log_tail="")
        info.update(state=event.value, attempt=context.get("attempt"))
        if event.value in FINAL_STATES:
            info["ended"] = seconds
            info["error"] = context.get("error")
            if event.value == JobState.FINISHED and info["progress"] is not None:
                info["progress"] = 1.0
        self._duration(info)
        return True

    def refresh_durations(self) -> None:
        for info in self.jobs.values():
            self._duration(info)

    def refresh_logs(self) -> bool:
        """Read the log tail of every job run that runs (or just ended); True when one changed."""
        changed = False
        for info in self.jobs.values():
            if info["job_run"] is None or info["job_run"] in self._read_to_end:
                continue
            if info["state"] in FINAL_STATES:  # its process is gone: this read sees the whole log
                self._read_to_end.add(info["job_run"])
            tail = self.log_tail(info["job_run"])
            if tail != info["log_tail"]:
                info["log_tail"], changed = tail, True
        return changed

    def log_tail(self, job_run: int) -> str:
        """The last lines of a job run's log (from a connected server: its store reads it there)."""
        from aiflow_notebook.session.submit import connected

        if connected():
            from aiflow_notebook.meta import default_store
            from aiflow_notebook.meta.errors import NotFoundError

            try:
                return default_store().job_log(job_run, LOG_TAIL_LINES)
            except NotFoundError:
                return ""
        path = self._logs.get(job_run)
        if path is None:
            path = _log_path(job_run)  # known once the job's process started
            if path is None:
                return ""
            self._logs[job_run] = path
        if not path.exists():
            return ""
        with path.open("rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - LOG_TAIL_BYTES))
            data = fh.read().decode("utf-8", "replace")
        return "\n".join(data.splitlines()[-LOG_TAIL_LINES:])

    @staticmethod
    def _duration(info: dict[str, Any]) -> None:
        if info["started"] is not None:
            end = info["ended"] if info["ended"] is not None else time.time()
            info["duration_s"] = round(max(0.0, end - info["started"]), 1)


def _swap(info: dict[str, Any], event: Any) -> bool:
    """A model swap of a running job (action SWAP): the version it serves now, or the one it could not load."""
    try:
        value = json.loads(event.value)
        model, version = str(value["model"]), int(value["version"])
    except (ValueError, TypeError, KeyError):
        return False
    if event.event_type == MODEL_SWAPPED:
        info.update(serving=f"{model} v{version}", swap_error=None)
    else:
        info["swap_error"] = f"{model} v{version}: {str(value.get('error', ''))[:200]}"
    return True


def _log_path(job_run: int) -> Path | None:
    """Where the scheduler writes a job run's log, from the metadata store of this process."""
    from aiflow_notebook.meta import default_store
    from aiflow_notebook.meta.errors import NotFoundError

    try:
        uri = default_store().get_job_run(job_run).log_uri
    except NotFoundError:
        return None
    return Path(uri.removeprefix("file://")) if uri else None
