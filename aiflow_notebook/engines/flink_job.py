"""The flink engine: build the job's PyFlink program and run it.

``platform`` ``local`` (default) runs it on the local mini-cluster inside this job process; a platform
``flink://HOST:PORT`` (a standalone cluster's REST address) submits it with ``flink run`` in detached
mode, then follows the cluster job until it ends — and cancels it when this process is stopped, so
STOP/RESTART of a streaming job work the same on both.
"""

from __future__ import annotations

import base64
import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from aiflow_notebook.capture import load_payload
from aiflow_notebook.engines.flink_program import build_program, stateful_operators
from aiflow_notebook.engines.flink_savepoints import run_streaming
from aiflow_notebook.engines.model_io import serving_predictor
from aiflow_notebook.errors import AIFlowError

REMOTE_PREFIX = "flink://"


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
    """A local execution environment for the job: its Python workers run this interpreter. ``extra``:
    more Flink settings (e.g. the savepoint a streaming job resumes from)."""
    from pyflink.common import Configuration
    from pyflink.datastream import StreamExecutionEnvironment

    config = Configuration()
    config.set_string("python.executable", sys.executable)  # else workers run `python` from PATH
    for key, value in (extra or {}).items():
        config.set_string(key, value)
    env = StreamExecutionEnvironment.get_execution_environment(config)
    env.set_parallelism(int(spec["job"].get("parallelism") or 1))
    return env


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
    """Submit with ``flink run -d``, then poll the REST API; SIGTERM cancels the cluster job.

    ``flink run`` calls :func:`main` in a client process of its own, which builds the program for the
    job's engine (flink, pytorch, tensorflow) and hands it to the cluster.
    """
    import pyflink

    flink = Path(pyflink.__file__).parent / "bin" / "flink"
    spec_path = Path(spec["spec_path"]) if "spec_path" in spec else None
    if spec_path is None:
        raise AIFlowError("internal: remote submission needs the spec file path")
    submit = subprocess.run(
        [str(flink), "run", "-d", "-m", address, "-pyclientexec", sys.executable, "-pyexec", sys.executable,
         "-pym", "aiflow_notebook.engines.flink_job", str(spec_path)],
        capture_output=True, text=True, timeout=300)
    print(submit.stdout, submit.stderr, flush=True)
    match = re.search(r"JobID ([0-9a-f]{32})", submit.stdout + submit.stderr)
    if submit.returncode != 0 or not match:
        raise AIFlowError(f"flink run to {address} failed (exit {submit.returncode}); see the log above")
    job_id = match.group(1)
    cancelled = False

    def cancel(_signum, _frame) -> None:
        nonlocal cancelled
        cancelled = True
        _rest(address, f"/jobs/{job_id}?mode=cancel", "PATCH")

    signal.signal(signal.SIGTERM, cancel)
    while True:
        state = _rest(address, f"/jobs/{job_id}").get("state")
        if state == "FINISHED":
            return
        if state in ("FAILED", "CANCELED"):
            if cancelled:
                sys.exit(143)
            raise ClusterJobFailed(f"Flink job {job_id} on {address} ended {state}: {_root_exception(address, job_id)}")
        time.sleep(0.5)


def _root_exception(address: str, job_id: str) -> str:
    """The cluster's record of why the job failed (its root exception), or a pointer to its logs."""
    try:
        text = _rest(address, f"/jobs/{job_id}/exceptions").get("root-exception")
    except OSError:
        text = None
    return text or "see the cluster's logs"


def _rest(address: str, path: str, method: str = "GET") -> dict:
    request = urllib.request.Request(f"http://{address}{path}", method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
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
