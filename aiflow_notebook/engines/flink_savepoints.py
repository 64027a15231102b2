"""Loss-free stops and restarts of a streaming Flink job: stop-with-savepoint, resume from it.

A streaming job runs until the scheduler stops it (SIGTERM to the job's process group, SIGKILL after the
job's ``stop_grace``). Killing it would lose what the file sink had not committed and make the next start
read every file of the monitored directory again. Instead:

- the job process submits the program with ``execute_async`` and keeps the ``JobClient``; the JVM that
  runs the local mini-cluster is started with SIGTERM ignored, so the stop signal reaches only Python;
- on SIGTERM it stops the job **with a savepoint** into ``spec["savepoint_dir"]`` (a directory of this
  run and job, under ``AIFLOW_HOME/savepoints``): sources stop, the file sink commits its part files on
  that terminal savepoint, and the savepoint holds the source's position (files done, offsets in files);
- it reports the path in its outcome file (``spec["outcome_path"]``); the scheduler records it on the job
  run and hands it back to the next start of the job in the same run (``spec["resume_from"]``), which
  resumes there (``execution.state-recovery.path``): every record is written exactly once across restarts;
- a savepoint that fails or does not finish before the deadline (``stop_grace`` less a margin) is given
  up: the job is cancelled, the outcome says ``savepoint: None`` with the reason, and the next start is
  fresh (it reads the directory from the beginning) — said in the job log and the KILLED status event.

A savepoint is used only if the stateful operators (file sources and sinks: their uids and datasets) of
the new program are those that wrote it; see :func:`resume_decision`.
"""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path
from typing import Any

from aiflow_notebook.core.files import write_atomic
from aiflow_notebook.core.stop_signal import StopSignal
from aiflow_notebook.core.waiting import Deadline, polling, wait_until
from aiflow_notebook.engines.flink_environment import program_name
from aiflow_notebook.engines.flink_rest import ENDED_STATES
from aiflow_notebook.engines.process import stop_grace

RESTORE_PATH_KEY = "execution.state-recovery.path"  # Flink 2.x (1.x: execution.savepoint.path)
RESTORE_IGNORE_UNCLAIMED_KEY = "execution.state-recovery.ignore-unclaimed-state"  # allowNonRestoredState
PROGRAM_FILE = "aiflow-program.json"  # written next to Flink's _metadata: the stateful operators it holds
STOP_MARGIN_S = 3.0  # of the grace period, kept for cancelling and exiting after a savepoint gave up
POLL_S = 0.25


def run_streaming(spec: dict[str, Any], build_environment, stateful: dict[str, str]) -> None:
    """Run the streaming program that ``build_environment(extra_config)`` builds until it ends or the job
    process is asked to stop; then stop it with a savepoint (see the module's docstring).

    ``stateful``: the program's stateful operators, uid -> dataset uri (``flink_program.stateful_operators``).
    """
    stop = StopSignal()  # SIGTERM: the scheduler's stop (the launcher forwards it too)
    outcome = Outcome(spec.get("outcome_path"))
    resume_from, note = resume_decision(spec.get("resume_from"), stateful)
    extra: dict[str, str] = {}
    if resume_from:
        extra[RESTORE_PATH_KEY] = resume_from
        # Only state of stateless operators can go unclaimed here (resume_decision checked the rest).
        extra[RESTORE_IGNORE_UNCLAIMED_KEY] = "true"
        print(f"[aiflow] resuming from savepoint {resume_from}", flush=True)
    elif note:
        print(f"[aiflow] {note}", flush=True)
    outcome.update(resumed_from=resume_from, **({"resume_note": note} if note else {}))
    jvm_ignores_sigterm()
    env = build_environment(extra)
    if stop.requested:  # stopped before anything ran: the state to resume from is still the old one
        outcome.update(savepoint=resume_from)
        raise SystemExit(143)
    client = env.execute_async(program_name(spec))
    print(f"[aiflow] Flink job {client.get_job_id()} running", flush=True)
    while not stop.wait(POLL_S):
        state = str(client.get_job_status().result())
        if state in ENDED_STATES:
            client.get_job_execution_result().result()  # raises with Flink's error when it failed
            return
    began = time.monotonic()
    savepoint, error = stop_with_savepoint(client, spec["savepoint_dir"], savepoint_deadline(spec))
    if savepoint is not None:
        write_program(savepoint, stateful)
    report_stop(outcome, savepoint, error, began)
    raise SystemExit(143)  # stopped on request, as a SIGTERM would have ended it


def report_stop(outcome: Outcome, savepoint: str | None, error: str | None, began: float) -> None:
    """Say in the job log and the outcome file how the stop went: the savepoint (and a note), or why none."""
    if savepoint is not None:
        print(f"[aiflow] stopped with savepoint {savepoint} in {time.monotonic() - began:.1f} s"
              + (f"; note: {error}" if error else ""), flush=True)
        outcome.update(savepoint=savepoint, **({"savepoint_note": error} if error else {}))
    else:
        print(f"[aiflow] savepoint failed: {error}; the job was cancelled and its next start is fresh "
              "(it reads its input from the beginning)", flush=True)
        outcome.update(savepoint=None, savepoint_error=error)


def stop_with_savepoint(client, directory: str, seconds: float) -> tuple[str | None, str | None]:
    """Stop the job with a savepoint under ``directory`` within ``seconds``: ``(path, None)``; else cancel
    it and return ``(None, why)``. A savepoint refused because tasks are not running yet (a stop just after
    the start) is tried again until the deadline. A job that failed while stopping *after* its savepoint
    was complete gives ``(path, what happened)``: Flink calls that savepoint consistent, and restoring it
    commits the sink's pending files."""
    deadline = Deadline(seconds)
    error = "no time was left for a savepoint"
    while not deadline.passed:
        try:
            future = _stop_with_savepoint_async(client, directory)
            _await(future, deadline, f"the savepoint took longer than {seconds:.1f} s")
            return local_path(future.result()), None
        except TimeoutError as exc:
            error = str(exc)
            break
        except Exception as exc:  # noqa: BLE001 - Flink's reason, reported in the outcome and the log
            created = savepoint_created(str(exc))
            if created is not None:  # complete and consistent: its restore commits what it holds
                _cancel(client)  # a failed job may be restarting (from a checkpoint): it must not go on
                return created, f"the job failed while stopping, after its savepoint was complete ({_reason(exc)})"
            error = _reason(exc)
            state = _job_state(client)
            if state in ENDED_STATES or "not all required tasks" not in str(exc).lower():
                break
            deadline.sleep(POLL_S)
    _cancel(client)
    return None, error


def savepoint_created(message: str) -> str | None:
    """The savepoint that Flink's ``StopWithSavepointStoppingException`` says was created, if ``message``
    holds one ("A savepoint has been created at: PATH, but the corresponding job … failed during stopping")."""
    found = re.search(r"StopWithSavepointStoppingException: A savepoint has been created at: (\S+?), but", message)
    return local_path(found.group(1)) if found else None


def savepoint_deadline(spec: dict[str, Any]) -> float:
    """Seconds a stop may spend on its savepoint: the job's stop grace period less a margin."""
    job = spec["job"]
    grace = stop_grace(job.get("engine", "flink"), bool(job.get("streaming")), job.get("properties"))
    return max(0.5, grace - STOP_MARGIN_S)


def resume_decision(savepoint: str | None, stateful: dict[str, str]) -> tuple[str | None, str | None]:
    """Whether to resume from ``savepoint``: ``(path, None)``, or ``(None, why not)``.

    Safe only when every stateful operator whose state the savepoint holds is in the new program with the
    same dataset (same uid and uri): then nothing that matters is left unrestored, and the state of
    stateless operators that went away may be dropped (allowNonRestoredState). A source or sink that was
    removed or points at another dataset (the user edited the job) makes the job start fresh: restoring
    would drop a source's position or a sink's pending files silently, or apply them to another dataset.
    A source or sink that is new starts empty (it reads or writes only what comes after the restart).
    """
    if not savepoint:
        return None, None
    try:
        saved = json.loads((Path(savepoint) / PROGRAM_FILE).read_text())
    except (OSError, ValueError) as exc:
        return None, f"savepoint {savepoint} is not usable ({type(exc).__name__}: {exc}); started fresh"
    changed = sorted(uid for uid, uri in saved.items() if stateful.get(uid) != uri)
    if changed:
        return None, (f"savepoint {savepoint} not used: the job's graph changed (stateful operators "
                      f"{', '.join(changed)} are gone or read/write another dataset); started fresh")
    return savepoint, None


def jvm_ignores_sigterm() -> None:
    """Start PyFlink's JVM with SIGTERM ignored: the scheduler's stop signal goes to the whole process group,
    and a JVM that got it would shut the mini-cluster down before the savepoint. An ignored signal stays
    ignored across ``exec``, and the JVM then installs no handler of its own for it; SIGKILL still ends it."""
    import pyflink.java_gateway as gateway

    original = gateway.launch_gateway_server_process
    if getattr(original, "aiflow_ignores_sigterm", False):
        return

    def launch(env, args):
        previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            return original(env, args)
        finally:
            signal.signal(signal.SIGTERM, previous)

    launch.aiflow_ignores_sigterm = True
    gateway.launch_gateway_server_process = launch


class Outcome:
    """The job's outcome file (JSON, replaced atomically): what the scheduler records when the job ends."""

    def __init__(self, path: str | None):
        self.path = Path(path) if path else None
        self.values: dict[str, Any] = {}

    def update(self, **values: Any) -> None:
        self.values.update(values)
        if self.path is None:
            return
        write_atomic(self.path, json.dumps(self.values))


def _stop_with_savepoint_async(client, directory: str):
    """``JobClient.stop_with_savepoint`` as PyFlink 2.3.0 should have it: its wrapper passes two arguments
    to the Java method, which takes three in Flink 2.x (the savepoint format), and always fails."""
    from pyflink.common.completable_future import CompletableFuture
    from pyflink.java_gateway import get_gateway

    default_format = get_gateway().jvm.org.apache.flink.core.execution.SavepointFormatType.DEFAULT
    return CompletableFuture(client._j_job_client.stopWithSavepoint(False, directory, default_format), str)


def write_program(savepoint: str, stateful: dict[str, str]) -> None:
    (Path(savepoint) / PROGRAM_FILE).write_text(json.dumps(stateful, sort_keys=True))


def local_path(uri: str) -> str:
    """Flink answers ``file:/dir/savepoint-…``; the store, the log and ``Path`` want ``/dir/savepoint-…``."""
    for prefix in ("file://", "file:"):
        if uri.startswith(prefix):
            return uri[len(prefix):]
    return uri


def _await(future, deadline: Deadline, late: str) -> None:
    """Wait until ``future`` is done; when the deadline comes first, cancel it and raise ``TimeoutError(late)``."""
    try:
        wait_until(future.done, deadline.left(), interval=0.05)
    except TimeoutError:
        future.cancel()
        raise TimeoutError(late) from None


def _job_state(client) -> str:
    try:
        return str(client.get_job_status().result())
    except Exception:  # noqa: BLE001 - the job is gone
        return "UNKNOWN"


def _cancel(client) -> None:
    try:
        future = client.cancel()
        for _ in polling(STOP_MARGIN_S, 0.05):
            if future.done():
                break
    except Exception:  # noqa: BLE001 - already ended; the process exits next anyway
        pass


def _reason(exc: BaseException) -> str:
    """The innermost Java cause of a Py4J error, in one line (Flink wraps the reason several times)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    causes = [line for line in lines if line.startswith("Caused by:")]
    messages = [line for line in lines if not line.startswith(("at ", "An error occurred while calling"))]
    line = causes[-1] if causes else messages[0] if messages else type(exc).__name__
    return line[:500]
