"""Starting a job's process, and finding one that a crash kept from being recorded.

A job runs as ``python -m aiflow_notebook.engines.job_main SPEC`` in a process group of its own. Its spec
and log are private files under the scheduler's home (see ``paths``); its environment names its run, its
bus and its metadata database — without the password, which travels only over its stdin pipe.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from aiflow_notebook.core.errors import AIFlowError
from aiflow_notebook.core.files import private_dir, write_private
from aiflow_notebook.engines import engine_runner
from aiflow_notebook.engines.process import PYFLINK_WORKER_VARIABLES, JobProcess, ProcessRecord
from aiflow_notebook.scheduler.paths import Paths
from aiflow_notebook.scheduler.state import ActiveRun
from aiflow_notebook.storage.blobs import BlobStore

# This process's own CURVE identity for some other bus (a kernel connected to a remote server): a job gets
# the keys of its scheduler's bus from the scheduler (``job_env``), or none.
OWN_BUS_KEYS = frozenset({"AIFLOW_EVENT_SERVER_KEY", "AIFLOW_EVENT_CLIENT_KEY"})
SECRETS_MAX_BYTES = 60_000  # a pipe holds 64 KiB: writing the secrets must never block


class Launcher:
    """Launches the jobs of one scheduler: ``meta_url`` (a SQLAlchemy URL) and ``event_url`` are what its
    jobs connect to, ``job_env`` what they get besides this process's environment."""

    def __init__(self, paths: Paths, blobs: BlobStore, meta_url: Any, event_url: str, job_env: dict[str, str]):
        self.paths, self.blobs, self.meta_url, self.event_url, self.job_env = paths, blobs, meta_url, event_url, job_env

    def launch(self, run: ActiveRun, job: Any, job_run_id: int, attempt: int, properties: dict[str, Any],
               trigger: dict[str, Any] | None = None, resume_from: str | None = None) -> JobProcess:
        """Start job run ``job_run_id`` of ``job`` (a graph Job) in ``run``, whose ``properties`` give the
        working directory and the workflow's blob; ``trigger``: the event that fired its rule;
        ``resume_from``: the savepoint its previous attempt left."""
        base = self.paths.job_run(run.run_id, job.name, job_run_id)
        public_url, full_url = _meta_urls(self.meta_url)
        spec = self._spec(run, job, job_run_id, attempt, properties, public_url, base)
        spec.update(trigger=trigger, savepoint_dir=str(self.paths.savepoints(run.workflow, run.run_id, job.name)),
                    resume_from=resume_from, outcome_path=str(base.with_suffix(".outcome.json")),
                    spec_path=str(base.with_suffix(".spec.json")))
        if full_url != public_url:
            spec["secrets"] = "stdin"
        private_dir(base.parent, within=self.paths.home)
        write_private(base.with_suffix(".spec.json"), json.dumps(spec))
        write_private(base.with_suffix(".log"), "", append=True)
        env = self._environment(run, job.name, job_run_id, public_url)
        stdin = _secrets_pipe({"meta_url": full_url}) if full_url != public_url else None
        try:
            return JobProcess.launch([sys.executable, "-m", "aiflow_notebook.engines.job_main", spec["spec_path"]],
                                     base.with_suffix(".log"), env=env, cwd=spec["cwd"] or None, stdin=stdin)
        finally:
            if stdin is not None:
                os.close(stdin)

    def find(self, run_id: int, job: str, job_run_id: int) -> JobProcess | None:
        """A job process started just before a crash, before its record was committed: still running (its
        launcher names its status file), or already ended (the status file is there; launching removes an
        old one). None: it was never started."""
        import psutil

        base = self.paths.job_run(run_id, job, job_run_id)
        status_path, log_path = str(base.with_suffix(".status.json")), str(base.with_suffix(".log"))
        for proc in psutil.process_iter(["pid", "cmdline", "create_time"]):
            if status_path in (proc.info["cmdline"] or []):
                return JobProcess.adopt(ProcessRecord(proc.info["pid"], proc.info["create_time"], log_path, status_path))
        if Path(status_path).exists():  # it ran and ended while no scheduler was there to record it
            return JobProcess.ended(log_path, status_path)
        return None

    def _spec(self, run: ActiveRun, job: Any, job_run_id: int, attempt: int, properties: dict[str, Any],
              meta_url: str, base: Path) -> dict[str, Any]:
        """What the job process reads first: who it is, where its payload is, what to connect to.

        A job that can save its state on stop (a streaming Flink job) saves it under ``savepoint_dir`` and
        reports the path in its outcome file; its next start in this run gets that path (``resume_from``)."""
        spec = {"workflow": run.workflow, "project": run.project, "run_id": run.run_id, "job_run_id": job_run_id,
                "attempt": attempt, "job": job.to_dict(include_payload=False), "runner": engine_runner(job.engine),
                "cwd": properties.get("cwd"), "meta_url": meta_url, "event_url": self.event_url}
        spec.update(self._payload_reference(job, properties.get("uri")))
        return spec

    def _payload_reference(self, job: Any, uri: str | None) -> dict[str, Any]:
        """How the job finds its payload: the workflow's blob (verified by the job) or, for a blob store
        without a local root, the payload itself."""
        root = getattr(self.blobs, "root", None)
        if uri and root is not None:
            return {"workflow_uri": uri, "blob_root": str(root)}
        return {"job": job.to_dict(include_payload=True)}

    def _environment(self, run: ActiveRun, job: str, job_run_id: int, meta_url: str) -> dict[str, str]:
        return {**_job_environment(), **self.job_env, "AIFLOW_META_URL": meta_url, "AIFLOW_EVENT_URL": self.event_url,
                "AIFLOW_WORKFLOW": run.workflow, "AIFLOW_JOB": job, "AIFLOW_RUN_ID": str(run.run_id),
                "AIFLOW_JOB_RUN_ID": str(job_run_id), "AIFLOW_PROJECT": run.project}


def _job_environment() -> dict[str, str]:
    """This process's environment for a job, without PyFlink worker internals it may have picked up and
    without this process's own bus keys."""
    return {key: value for key, value in os.environ.items()
            if key not in PYFLINK_WORKER_VARIABLES and key not in OWN_BUS_KEYS}


def _meta_urls(url: Any) -> tuple[str, str]:
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
        if len(data) > SECRETS_MAX_BYTES:
            raise AIFlowError("the secrets for a job are too large for its stdin pipe")
        os.write(write, data)
    finally:
        os.close(write)
    return read
