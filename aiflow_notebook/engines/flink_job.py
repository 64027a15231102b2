"""The flink engine: build the job's PyFlink program and run it.

``platform`` ``local`` (default) runs it on the local mini-cluster inside this job process; a platform
``flink://HOST:PORT`` (a standalone cluster's REST address) submits it with ``flink run`` in detached
mode, then follows the cluster job until it ends. When this process is stopped, a streaming job stops
with a savepoint and its next start resumes from it, on both platforms (``flink_savepoints``); a batch
job on a cluster is cancelled.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from aiflow_notebook.core.errors import AIFlowError
from aiflow_notebook.core.stop_signal import StopSignal
from aiflow_notebook.engines.flink_program import build_program, stateful_operators
from aiflow_notebook.engines.flink_savepoints import (
    Outcome,
    local_path,
    report_stop,
    resume_decision,
    run_streaming,
    savepoint_created,
    savepoint_deadline,
    write_program,
)
from aiflow_notebook.engines.model_io import serving_predictor
from aiflow_notebook.sdk.capture import load_payload

REMOTE_PREFIX = "flink://"
FLINK_PROPERTY_PREFIX = "flink."


class ClusterJobFailed(AIFlowError):
    """The job on the Flink cluster ended FAILED; the message carries the cluster's root exception."""


def run_job(spec: dict[str, Any]) -> None:
    platform = spec["job"].get("platform") or "local"
    if platform.startswith(REMOTE_PREFIX):
        run_on_cluster(spec, platform[len(REMOTE_PREFIX):])
    elif spec["job"].get("streaming") and spec.get("savepoint_dir"):
        run_streaming(spec, lambda extra: _environment(spec, extra), stateful_operators(spec["job"]["nodes"]))
    else:
        env = _environment(spec)
        env.execute(f"{spec['workflow']}.{spec['job']['name']}")


def new_environment(spec: dict[str, Any], extra: dict[str, str] | None = None):
    """A local execution environment for the job: its Python workers run this interpreter. The job's
    ``flink.*`` properties are Flink settings (:func:`flink_settings`); ``extra``: more of them (e.g. the
    savepoint a streaming job resumes from)."""
    from pyflink.common import Configuration
    from pyflink.datastream import StreamExecutionEnvironment

    config = Configuration()
    config.set_string("python.executable", sys.executable)  # else workers run `python` from PATH
    for key, value in {**flink_settings(spec["job"].get("properties")), **(extra or {})}.items():
        config.set_string(key, value)
    env = StreamExecutionEnvironment.get_execution_environment(config)
    env.set_parallelism(int(spec["job"].get("parallelism") or 1))
    return env


def flink_settings(properties: dict[str, Any] | None) -> dict[str, str]:
    """Job properties named ``flink.<option>`` are Flink configuration options for the job's program, as
    in Flink's own config file: ``properties={"flink.python.execution-mode": "thread"}`` (or the magic's
    ``--property flink.python.execution-mode=thread``) runs its Python functions inside Flink's JVM, which
    saves the per-row hand-over to a separate Python worker. That embedded interpreter is told this
    process's import path (``python.pythonpath``), or it would not find the packages of this virtualenv."""
    settings = {key[len(FLINK_PROPERTY_PREFIX):]: str(value) for key, value in (properties or {}).items()
                if key.startswith(FLINK_PROPERTY_PREFIX)}
    if settings.get("python.execution-mode") == "thread" and "python.pythonpath" not in settings:
        # sys.path, and where this package lives: an editable install is found through a .pth hook that the
        # embedded interpreter does not run
        package_root = str(Path(__file__).resolve().parents[2])
        paths = [path for path in sys.path if path and Path(path).is_dir()]
        settings["python.pythonpath"] = os.pathsep.join(dict.fromkeys([*paths, package_root]))
    return settings


def _environment(spec: dict[str, Any], extra: dict[str, str] | None = None):
    env = new_environment(spec, extra)
    job = spec["job"]
    callables = dict(load_payload(base64.b64decode(job["payload"]))["callables"])
    for node in job["nodes"]:
        if node["kind"] == "predict" and node["name"] not in callables and node.get("model"):
            callables[node["name"]] = serving_predictor(node["model"], node.get("model_version"),
                                                        node.get("model_stage"), spec, node["name"],
                                                        with_version=bool((node.get("properties") or {}).get("with_version")))
    build_program(env, job["name"], job["nodes"], callables, streaming=bool(job.get("streaming")),
                  base_dir=spec.get("cwd") or ".")
    return env


def run_on_cluster(spec: dict[str, Any], address: str) -> None:
    """Submit with ``flink run -d``, then poll the REST API. SIGTERM stops a streaming flink-engine job with
    a savepoint (REST ``POST /jobs/<id>/stop``; its next start resumes with ``flink run -s``, see
    ``flink_savepoints``) and cancels any other job.

    ``flink run`` calls :func:`main` in a client process of its own, which builds the program for the
    job's engine (flink, pytorch, tensorflow) and hands it to the cluster.
    """
    import pyflink

    flink = Path(pyflink.__file__).parent / "bin" / "flink"
    spec_path = Path(spec["spec_path"]) if "spec_path" in spec else None
    if spec_path is None:
        raise AIFlowError("internal: remote submission needs the spec file path")
    if spec["job"].get("engine", "flink") == "flink" and spec["job"].get("streaming") and spec.get("savepoint_dir"):
        _run_streaming_on_cluster(spec, address, flink, spec_path)
        return
    stop = StopSignal()
    job_id = _submit(flink, address, spec_path)
    while not stop.wait(0.5):
        state = _rest(address, f"/jobs/{job_id}").get("state")
        if state == "FINISHED":
            return
        if state in ("FAILED", "CANCELED"):
            raise ClusterJobFailed(f"Flink job {job_id} on {address} ended {state}: {_root_exception(address, job_id)}")
    _cancel_on_cluster(address, job_id)
    sys.exit(143)  # stopped on request, as a SIGTERM would have ended it


def _cancel_on_cluster(address: str, job_id: str, seconds: float = 8.0) -> None:
    """Cancel the cluster job and wait until Flink says it ended, asking again if a request failed (a busy
    JobManager); within the default stop grace period (10 s) of a batch job."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if _rest(address, f"/jobs/{job_id}", timeout=3).get("state") in ("CANCELED", "FAILED", "FINISHED"):
                return
            _rest(address, f"/jobs/{job_id}?mode=cancel", "PATCH", timeout=3)
        except OSError:
            pass
        time.sleep(0.5)


def _run_streaming_on_cluster(spec: dict[str, Any], address: str, flink: Path, spec_path: Path) -> None:
    stop = StopSignal()
    stateful = stateful_operators(spec["job"]["nodes"])
    outcome = Outcome(spec.get("outcome_path"))
    resume_from, note = resume_decision(spec.get("resume_from"), stateful)
    print(f"[aiflow] resuming from savepoint {resume_from}" if resume_from else f"[aiflow] {note}" if note else "",
          flush=True)
    outcome.update(resumed_from=resume_from, **({"resume_note": note} if note else {}))
    restore = ["-s", resume_from, "-n"] if resume_from else []  # -n: allowNonRestoredState (see resume_decision)
    job_id = _submit(flink, address, spec_path, restore)
    while not stop.wait(0.5):
        state = _rest(address, f"/jobs/{job_id}").get("state")
        if state == "FINISHED":
            return
        if state in ("FAILED", "CANCELED"):
            raise ClusterJobFailed(f"Flink job {job_id} on {address} ended {state}: {_root_exception(address, job_id)}")
    began = time.monotonic()
    savepoint, error = _stop_on_cluster(address, job_id, spec["savepoint_dir"], savepoint_deadline(spec))
    if savepoint is not None:
        try:
            write_program(savepoint, stateful)
        except OSError as exc:  # the cluster wrote it where this machine cannot: the next start is fresh
            print(f"[aiflow] cannot annotate savepoint {savepoint}: {exc}", flush=True)
    report_stop(outcome, savepoint, error, began)
    sys.exit(143)


def _submit(flink: Path, address: str, spec_path: Path, options: list[str] | None = None) -> str:
    """``flink run -d`` of this module's :func:`main` for the spec at ``spec_path``; returns the job id.

    The client runs with SIGTERM ignored (its JVM and Python client inherit that): a stop that arrives
    while it submits must not kill it half way, which could leave a job on the cluster that nobody
    follows. The caller sees the stop once the job id is known, and stops that job. SIGKILL still ends it."""
    ignoring_sigterm = ["/bin/sh", "-c", 'trap "" TERM; exec "$@"', "sh"]  # an ignored signal stays so across exec
    submit = subprocess.run(
        [*ignoring_sigterm, str(flink), "run", "-d", "-m", address, *(options or []), "-pyclientexec", sys.executable,
         "-pyexec", sys.executable, "-pym", "aiflow_notebook.engines.flink_job", str(spec_path)],
        capture_output=True, text=True, timeout=300)
    print(submit.stdout, submit.stderr, flush=True)
    match = re.search(r"JobID ([0-9a-f]{32})", submit.stdout + submit.stderr)
    if submit.returncode != 0 or not match:
        raise AIFlowError(f"flink run to {address} failed (exit {submit.returncode}); see the log above")
    return match.group(1)


def _stop_on_cluster(address: str, job_id: str, directory: str, seconds: float) -> tuple[str | None, str | None]:
    """REST stop-with-savepoint (no drain), its trigger polled until ``seconds``; a failure or a timeout
    cancels the job. A stop refused because the job's tasks are not all running yet (a stop right after
    the start) is tried again until the deadline. Returns like ``flink_savepoints.stop_with_savepoint``."""
    deadline = time.monotonic() + seconds
    error = f"the savepoint took longer than {seconds:.1f} s"

    def rest(path: str, method: str = "GET", body: dict | None = None) -> dict:
        return _rest(address, path, method, body, timeout=min(10.0, max(1.0, deadline - time.monotonic())))

    try:
        while time.monotonic() < deadline:
            trigger = rest(f"/jobs/{job_id}/stop", "POST", {"targetDirectory": directory, "drain": False})
            while time.monotonic() < deadline:
                answer = rest(f"/jobs/{job_id}/savepoints/{trigger['request-id']}")
                if answer.get("status", {}).get("id") == "COMPLETED":
                    break
                time.sleep(0.25)
            else:
                break
            operation = answer.get("operation") or {}
            if operation.get("location"):
                return local_path(operation["location"]), None
            failure = (operation.get("failure-cause") or {}).get("stack-trace") or json.dumps(operation)
            created = savepoint_created(failure)
            if created is not None:
                rest(f"/jobs/{job_id}?mode=cancel", "PATCH")
                return created, "the job failed while stopping, after its savepoint was complete"
            error = next((line.strip() for line in failure.splitlines() if "Caused by" in line), failure[:500])[:500]
            if "not all required tasks" not in failure.lower() or rest(f"/jobs/{job_id}").get("state") != "RUNNING":
                break
            time.sleep(0.25)
    except OSError as exc:
        error = f"{type(exc).__name__}: {exc}"
    try:
        _rest(address, f"/jobs/{job_id}?mode=cancel", "PATCH", timeout=3)
    except OSError:
        pass
    return None, error


def _root_exception(address: str, job_id: str) -> str:
    """The cluster's record of why the job failed (its root exception), or a pointer to its logs."""
    try:
        text = _rest(address, f"/jobs/{job_id}/exceptions").get("root-exception")
    except OSError:
        text = None
    return text or "see the cluster's logs"


def _rest(address: str, path: str, method: str = "GET", body: dict | None = None, timeout: float = 10.0) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://{address}{path}", method=method, data=data,
                                     headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body = response.read()
    return json.loads(body) if body else {}


def main(argv: list[str]) -> None:
    """Entry used by ``flink run -pym``: build the program from the spec and execute it on the cluster."""
    from aiflow_notebook.engines.job_spec import read_spec

    spec = read_spec(argv[0])
    engine = spec["job"].get("engine")
    if engine in ("pytorch", "tensorflow"):
        from aiflow_notebook.engines import dl_job
        from dl_on_flink.framework.address_book import BusAddressBook

        env = dl_job.build_program(spec, engine, address_book=BusAddressBook.from_environment())
    else:
        env = _environment(spec)
    env.execute(f"{spec['workflow']}.{spec['job']['name']}")


if __name__ == "__main__":
    main(sys.argv[1:])
