"""The flink engine: build the job's PyFlink program and run it.

``platform`` ``local`` (default) runs it on the local mini-cluster inside this job process; a platform
``flink://HOST:PORT`` (a standalone cluster's REST address) submits it with ``flink run`` in detached
mode, then follows the cluster job until it ends (``flink_remote``). When this process is stopped, a
streaming job stops with a savepoint and its next start resumes from it, on both platforms
(``flink_savepoints``); a batch job on a cluster is cancelled.
"""

from __future__ import annotations

import base64
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from aiflow_notebook.core.stop_signal import StopSignal
from aiflow_notebook.core.waiting import Deadline
from aiflow_notebook.engines.flink_environment import new_environment, program_name
from aiflow_notebook.engines.flink_program import build_program, stateful_operators
from aiflow_notebook.engines.flink_remote import follow, run_on_cluster, spec_path, submit
from aiflow_notebook.engines.flink_rest import FlinkJobState, FlinkRest, cluster_address
from aiflow_notebook.engines.flink_savepoints import (
    POLL_S,
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


def run_job(spec: dict[str, Any]) -> None:
    """Run the job here or on its cluster; a streaming job with a savepoint directory stops with a savepoint."""
    address = cluster_address(spec["job"].get("platform"))
    streaming = bool(spec["job"].get("streaming") and spec.get("savepoint_dir"))
    if address is not None and streaming:
        _run_streaming_on_cluster(spec, address)
    elif address is not None:
        run_on_cluster(spec, address)
    elif streaming:
        run_streaming(spec, lambda extra: build_environment(spec, extra), stateful_operators(spec["job"]["nodes"]))
    else:
        build_environment(spec).execute(program_name(spec))


def build_environment(spec: dict[str, Any], extra: dict[str, str] | None = None):
    """The job's program in a new environment (``flink_environment``): its nodes as Flink operators, a
    predict node without a function serving the model version it chose; a job that only scores a dataset
    as the vectorized program of ``flink_scoring``."""
    env = new_environment(spec, extra)
    job = spec["job"]
    callables = dict(load_payload(base64.b64decode(job["payload"]))["callables"])
    for node in job["nodes"]:
        if node["kind"] == "predict" and node["name"] not in callables and node.get("model"):
            callables[node["name"]] = serving_predictor(node["model"], node.get("model_version"),
                                                        node.get("model_stage"), spec, node["name"],
                                                        with_version=bool((node.get("properties") or {}).get("with_version")))
    streaming, base_dir = bool(job.get("streaming")), spec.get("cwd") or "."
    from aiflow_notebook.engines.flink_scoring import (  # PyFlink: job process only
        build_scoring,
        scoring_chain,
    )

    chain = scoring_chain(job, callables)
    if chain is None or build_scoring(env, job["name"], *chain, streaming=streaming, base_dir=base_dir) is None:
        build_program(env, job["name"], job["nodes"], callables, streaming=streaming, base_dir=base_dir)
    return env


def _run_streaming_on_cluster(spec: dict[str, Any], address: str) -> None:
    """A streaming job on a cluster: resumed from the savepoint its last stop took (``flink run -s``); a stop
    (SIGTERM) stops it with a new savepoint (REST ``POST /jobs/<id>/stop``), see ``flink_savepoints``."""
    path = spec_path(spec)
    stop = StopSignal()
    stateful = stateful_operators(spec["job"]["nodes"])
    outcome = Outcome(spec.get("outcome_path"))
    resume_from, note = resume_decision(spec.get("resume_from"), stateful)
    print(f"[aiflow] resuming from savepoint {resume_from}" if resume_from else f"[aiflow] {note}" if note else "",
          flush=True)
    outcome.update(resumed_from=resume_from, **({"resume_note": note} if note else {}))
    restore = ["-s", resume_from, "-n"] if resume_from else []  # -n: allowNonRestoredState (see resume_decision)
    rest = FlinkRest(address)
    job_id = submit(address, path, restore)
    if follow(rest, job_id, stop):
        return
    began = time.monotonic()
    savepoint, error = _stop_on_cluster(rest, job_id, spec["savepoint_dir"], savepoint_deadline(spec))
    if savepoint is not None:
        try:
            write_program(savepoint, stateful)
        except OSError as exc:  # the cluster wrote it where this machine cannot: the next start is fresh
            print(f"[aiflow] cannot annotate savepoint {savepoint}: {exc}", flush=True)
    report_stop(outcome, savepoint, error, began)
    sys.exit(143)


def _stop_on_cluster(rest: FlinkRest, job_id: str, directory: str, seconds: float) -> tuple[str | None, str | None]:
    """REST stop-with-savepoint (no drain), its trigger polled until ``seconds``; a failure or a timeout
    cancels the job. A stop refused because the job's tasks are not all running yet (a stop right after
    the start) is tried again until the deadline. Returns like ``flink_savepoints.stop_with_savepoint``."""
    deadline = Deadline(seconds)
    error = f"the savepoint took longer than {seconds:.1f} s"

    def timeout() -> float:  # of one request: what is left of the deadline, at least 1 s, at most 10 s
        return min(10.0, max(1.0, deadline.left()))

    try:
        while not deadline.passed:
            trigger = rest.request(f"/jobs/{job_id}/stop", "POST", {"targetDirectory": directory, "drain": False},
                                   timeout=timeout())
            answer = _savepoint_answer(rest, f"/jobs/{job_id}/savepoints/{trigger['request-id']}", deadline, timeout)
            if answer is None:
                break
            operation = answer.get("operation") or {}
            if operation.get("location"):
                return local_path(operation["location"]), None
            failure = (operation.get("failure-cause") or {}).get("stack-trace") or json.dumps(operation)
            created = savepoint_created(failure)
            if created is not None:
                rest.cancel(job_id, timeout=timeout())
                return created, "the job failed while stopping, after its savepoint was complete"
            error = next((line.strip() for line in failure.splitlines() if "Caused by" in line), failure[:500])[:500]
            if ("not all required tasks" not in failure.lower()
                    or rest.job(job_id, timeout=timeout()).get("state") != FlinkJobState.RUNNING):
                break
            deadline.sleep(POLL_S)
    except OSError as exc:
        error = f"{type(exc).__name__}: {exc}"
    try:
        rest.cancel(job_id, timeout=3)
    except OSError:
        pass
    return None, error


def _savepoint_answer(rest: FlinkRest, trigger: str, deadline: Deadline,
                      timeout: Callable[[], float]) -> dict | None:
    """Poll the savepoint ``trigger`` until Flink says it COMPLETED (its answer), or the deadline passed (None)."""
    while not deadline.passed:
        answer = rest.request(trigger, timeout=timeout())
        if answer.get("status", {}).get("id") == "COMPLETED":
            return answer
        deadline.sleep(POLL_S)
    return None
