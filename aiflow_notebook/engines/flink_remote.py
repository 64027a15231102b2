"""A job on a standalone Flink cluster: submitted with ``flink run -d``, followed over REST, cancelled on a stop.

Every engine that runs on Flink (flink, pytorch, tensorflow) goes this way when its platform is
``flink://HOST:PORT``. ``flink run`` calls ``flink_main`` in a client process of its own, which builds the
program for the job's engine and hands it to the cluster; the job process meanwhile polls the cluster
job's state (``flink_rest``). A streaming flink job stops with a savepoint instead of a cancel
(``flink_job``).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from aiflow_notebook.core.errors import AIFlowError
from aiflow_notebook.core.stop_signal import StopSignal
from aiflow_notebook.core.waiting import polling
from aiflow_notebook.engines.flink_rest import ENDED_STATES, FlinkJobState, FlinkRest

ENTRY_MODULE = "aiflow_notebook.engines.flink_main"  # named, not imported: it imports every engine
POLL_S = 0.5
CANCEL_S = 8.0  # within the default stop grace period (10 s) of a batch job


class ClusterJobFailed(AIFlowError):
    """The job on the Flink cluster ended FAILED; the message carries the cluster's root exception."""


def run_on_cluster(spec: dict[str, Any], address: str) -> None:
    """Submit the job to the cluster at ``address``, then follow it until it ends. SIGTERM (the scheduler's
    stop) cancels the cluster job and ends this process with 143, as the signal would have."""
    path = spec_path(spec)
    stop = StopSignal()
    rest = FlinkRest(address)
    job_id = submit(address, path)
    if not follow(rest, job_id, stop):
        cancel(rest, job_id)
        sys.exit(143)


def spec_path(spec: dict[str, Any]) -> Path:
    """The job's spec file, which ``flink run`` hands to the client that builds the program."""
    if "spec_path" not in spec:
        raise AIFlowError("internal: remote submission needs the spec file path")
    return Path(spec["spec_path"])


def submit(address: str, spec_file: Path, options: list[str] | None = None) -> str:
    """``flink run -d`` of :data:`ENTRY_MODULE` for the spec at ``spec_file``; returns the job id.

    The client runs with SIGTERM ignored (its JVM and Python client inherit that): a stop that arrives
    while it submits must not kill it half way, which could leave a job on the cluster that nobody
    follows. The caller sees the stop once the job id is known, and stops that job. SIGKILL still ends it."""
    import pyflink

    flink = Path(pyflink.__file__).parent / "bin" / "flink"
    ignoring_sigterm = ["/bin/sh", "-c", 'trap "" TERM; exec "$@"', "sh"]  # an ignored signal stays so across exec
    submitted = subprocess.run(
        [*ignoring_sigterm, str(flink), "run", "-d", "-m", address, *(options or []), "-pyclientexec", sys.executable,
         "-pyexec", sys.executable, "-pym", ENTRY_MODULE, str(spec_file)],
        capture_output=True, text=True, timeout=300)
    print(submitted.stdout, submitted.stderr, flush=True)
    match = re.search(r"JobID ([0-9a-f]{32})", submitted.stdout + submitted.stderr)
    if submitted.returncode != 0 or not match:
        raise AIFlowError(f"flink run to {address} failed (exit {submitted.returncode}); see the log above")
    return match.group(1)


def follow(rest: FlinkRest, job_id: str, stop: StopSignal) -> bool:
    """Poll the cluster job until it FINISHED (True) or a stop is requested (False); a job that ended FAILED
    or CANCELED raises :class:`ClusterJobFailed` with the cluster's reason."""
    while not stop.wait(POLL_S):
        state = rest.job(job_id).get("state")
        if state == FlinkJobState.FINISHED:
            return True
        if state in (FlinkJobState.FAILED, FlinkJobState.CANCELED):
            raise ClusterJobFailed(f"Flink job {job_id} on {rest.address} ended {state}: "
                                   f"{_root_exception(rest, job_id)}")
    return False


def cancel(rest: FlinkRest, job_id: str, seconds: float = CANCEL_S) -> None:
    """Cancel the cluster job and wait until Flink says it ended, asking again if a request failed (a busy
    JobManager)."""
    for _ in polling(seconds, POLL_S):
        try:
            if rest.job(job_id, timeout=3).get("state") in ENDED_STATES:
                return
            rest.cancel(job_id, timeout=3)
        except OSError:
            pass


def _root_exception(rest: FlinkRest, job_id: str) -> str:
    """The cluster's record of why the job failed (its root exception), or a pointer to its logs."""
    try:
        text = rest.request(f"/jobs/{job_id}/exceptions").get("root-exception")
    except OSError:
        text = None
    return text or "see the cluster's logs"
