"""The supervisor of one node: a thread that keeps the node's child process in step with the AM.

It finds the application master in the address book, heartbeats it every ``heartbeat_interval``, and
does what the AM says: start the child for attempt N (killing the previous one), stop, fail, or cancel.
It reports the child's exit — code 0 is "finished", anything else "failed" with the tail of the child's
output — and its progress: what the child's reporter wrote, the CPU time of the child's processes, and
for how long the operator has been unable to deliver input to it. Once Flink cancelled the job (polled
through ``cancelled``) it kills the child at once and tells the AM, which tells every other node.

The operator thread follows it through :attr:`Supervisor.attempt`, :attr:`~Supervisor.exited_attempt`,
:attr:`~Supervisor.outcome` and :meth:`~Supervisor.wait_for_change` (see :mod:`.feed`).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import psutil

from aiflow_notebook.core.waiting import Deadline
from dl_on_flink.errors import ClusterFailedError, DLOnFlinkError, NodeFailedError, RendezvousError
from dl_on_flink.framework.am_protocol import AMClient, Heartbeat, Progress, Rejected, Verdict
from dl_on_flink.framework.channel import endpoint
from dl_on_flink.framework.child import EXIT_SUPERSEDED, MODULE, NodeLaunch
from dl_on_flink.framework.cluster import ClusterConfig
from dl_on_flink.framework.context import NodeSpec
from dl_on_flink.framework.plan import NodePlan
from dl_on_flink.framework.process import ChildProcess, import_root
from dl_on_flink.framework.state_machine import NodeId

log = logging.getLogger(__name__)

THREAD_NAME = "dl-on-flink-supervisor"  # of every supervisor thread: ``<THREAD_NAME>-<node type>-<index>``


class Supervisor:
    """Supervises node ``plan.node_type`` ``index`` from a thread of its own (see the module docstring)."""

    def __init__(self, plan: NodePlan, index: int, workdir: Path, cancelled: Callable[[], bool],
                 input_blocked: Callable[[], float | None]) -> None:
        self.plan, self.index, self.workdir = plan, index, workdir
        self.node: NodeId = (plan.node_type, index)
        self._cancelled = cancelled  # True once Flink cancelled the job (see dl_on_flink.operator.harness)
        self._input_blocked = input_blocked  # seconds the operator has been unable to hand the child input
        cfg = plan.config
        self.heartbeat_interval = cfg.float_property("heartbeat_interval", 0.5)
        self.heartbeat_timeout = cfg.float_property("heartbeat_timeout", 30.0)
        self.rendezvous_timeout = cfg.float_property("rendezvous_timeout", 180.0)
        self.host = cfg.get_property("bind_host", "127.0.0.1")
        # written by the supervisor, read by the operator thread
        self.attempt: int | None = None  # of the newest child started
        self.exited_attempt: int | None = None  # of the newest child that exited
        self.outcome: str | None = None  # "stopped" | "failed" | "cancelled"
        self.error: str | None = None
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._launching = threading.Lock()  # a launch and stop() never overlap
        self._thread: threading.Thread | None = None
        # the supervisor thread only
        self._am: AMClient | None = None
        self._child: ChildProcess | None = None
        self._child_state = "none"  # as the heartbeat reports it: none, running, finished, failed
        self._child_error: str | None = None
        self._last_contact = 0.0

    # --- for the operator thread ---
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"{THREAD_NAME}-{self.node[0]}-{self.index}",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop heartbeating and kill the child; no child is started after this returns."""
        with self._launching:
            self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def raise_if_failed(self) -> None:
        if self.outcome == "failed":
            raise ClusterFailedError(self.error or f"{self.node[0]} {self.index}: cluster failed")

    def wait(self, timeout: float) -> bool:
        """Wait until the cluster's verdict is known (True) or ``timeout`` passed (False)."""
        deadline = Deadline(timeout)
        while self.outcome is None and not deadline.passed:
            self.wait_for_change(min(0.1, deadline.left()))
        return self.outcome is not None

    def wait_for_change(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for a new child, a child's exit or the verdict."""
        self._changed.wait(timeout)
        self._changed.clear()

    # --- the supervisor thread ---
    def _run(self) -> None:
        try:
            address = self._find_am()
            if address is not None:
                self._am = AMClient(address, timeout=max(2.0, self.heartbeat_interval * 4))
                self._follow_the_am()
        except BaseException as exc:  # noqa: BLE001 - any supervisor failure fails this node's operator
            self._crashed(exc)
        finally:
            if self._child is not None:
                self._child.kill()
            if self._am is not None:
                self._am.close()

    def _find_am(self) -> str | None:
        """The AM's address from the address book; None when stopped or cancelled while waiting."""
        deadline = Deadline(self.rendezvous_timeout)
        while not self._stop.is_set():
            if self._cancelled():
                self._on_cancel()
                return None
            try:
                return self.plan.address_book.wait_for(self.plan.job_key, None, min(1.0, deadline.left()))[1]
            except RendezvousError:
                if deadline.passed:
                    raise
        return None

    def _follow_the_am(self) -> None:
        """Heartbeat and obey until a verdict, a stop or Flink's cancel ends this node."""
        self._last_contact = time.monotonic()
        while not self._stop.is_set():
            if self._cancelled():
                self._on_cancel()
                self._tell_am_cancelled()
                return
            self._note_exit()
            verdict = self._heartbeat()
            if verdict is None:
                continue  # the AM did not answer in time: ask again at once
            if not self._obey(verdict):
                return
            if self._child is not None and self._child_state == "running":
                self._child.wait(self.heartbeat_interval)
            else:
                self._stop.wait(self.heartbeat_interval)

    def _note_exit(self) -> None:
        """Take note when the running child exited: finished, superseded, or failed (with its tail)."""
        child = self._child
        code = child.poll() if child is not None and self._child_state == "running" else None
        if code is None:
            return
        self.exited_attempt = self.attempt
        if code == 0:
            self._child_state = "finished"
        elif code == EXIT_SUPERSEDED:
            self._child_state = "none"
        else:
            self._child_state = "failed"
            self._child_error = failure_reason(self.node, self.attempt, code, child.tail())
        self._changed.set()

    def _heartbeat(self) -> Verdict | Rejected | None:
        """The AM's answer to this node's report; None when it did not answer in time (RendezvousError
        once it has been silent for ``heartbeat_timeout``)."""
        running = self._child is not None and self._child_state == "running"
        report = Heartbeat(self.node, self.attempt, self._child_state, self._child_error,
                           progress=self._progress() if running else None)
        try:
            verdict = self._am.call(report)
        except RendezvousError:
            if time.monotonic() - self._last_contact > self.heartbeat_timeout:
                raise RendezvousError(f"{self.node[0]} {self.index} lost the application master at "
                                      f"{self._am.address}") from None
            return None
        self._last_contact = time.monotonic()
        return verdict

    def _obey(self, verdict: Verdict | Rejected) -> bool:
        """Act on the AM's verdict; False once this node is done."""
        if isinstance(verdict, Rejected):
            raise DLOnFlinkError(f"the application master rejected a heartbeat: {verdict.error}")
        if verdict.action == "fail":
            self._decide("failed", verdict.error)
        elif verdict.action == "stop":
            self._decide("stopped")
        elif verdict.action == "cancel":  # another role of the cluster noticed that Flink cancelled the job
            self._on_cancel()
        elif verdict.attempt != self.attempt:
            return self._restart(verdict.attempt)
        return verdict.action == "run"

    def _restart(self, attempt: int) -> bool:
        """Replace the child by one of ``attempt``; False when stopped or cancelled meanwhile."""
        if self._child is not None:
            self._child.kill()
        child = self._launch(attempt)
        if child is None:
            return False
        self._child, self._child_state, self._child_error = child, "running", None
        self.attempt = attempt
        self._changed.set()
        return True

    def _launch(self, attempt: int) -> ChildProcess | None:
        """Start the child of ``attempt``; None when stopped (or the job cancelled) first."""
        with self._launching:
            if self._stop.is_set() or self._cancelled():
                return None
            return self._start_child(attempt)

    def _start_child(self, attempt: int) -> ChildProcess:
        plan, cfg = self.plan, self.plan.config
        spec = NodeSpec(
            job_key=plan.job_key,
            node_type=plan.node_type,
            index=self.index,
            attempt=attempt,
            node_type_count_map=cfg.get_node_type_count_map(),
            properties=cfg.get_properties(),
            am_address=self._am.address,
            host=self.host,
            input_endpoint=endpoint(self.workdir, "in", attempt) if plan.input_schema is not None else None,
            output_endpoint=endpoint(self.workdir, "out", attempt) if plan.output_schema is not None else None,
            input_schema=plan.input_schema,
            output_schema=plan.output_schema,
            rendezvous_timeout=self.rendezvous_timeout,
        )
        launch_path = self._file(attempt, "launch")
        NodeLaunch(spec, cfg.get_entry(), cfg.node_hooks(), progress_path=str(self._file(attempt, "progress"))).write(
            launch_path)
        argv = [sys.executable, "-m", MODULE, str(launch_path)]
        log.info("starting %s %s attempt %s: %s", plan.node_type, self.index, attempt, " ".join(argv))
        return ChildProcess(argv, child_environment(cfg), self._file(attempt, "log"), cwd=self.workdir)

    def _file(self, attempt: int, kind: str) -> Path:
        """The child's ``launch`` file, its output ``log`` and its ``progress`` report."""
        return self.workdir / f"attempt-{attempt}.{kind}"

    def _progress(self) -> Progress:
        """The running child's progress for the heartbeat (see :meth:`.Context._progress`)."""
        try:
            progress = Progress.from_json(self._file(self.attempt, "progress").read_text())
        except (OSError, ValueError):
            progress = Progress()  # not written yet (or being replaced): the AM keeps what it knew
        blocked = self._input_blocked()
        return replace(progress, cpu=_cpu_seconds(self._child.pid),
                       input_blocked=None if blocked is None else round(blocked, 1))

    def _tell_am_cancelled(self) -> None:
        """Best effort: the AM tells every other node at once (their own tasks may be torn down later)."""
        try:
            self._am.call(Heartbeat(self.node, cancelled=True), timeout=1.0)
        except RendezvousError:
            pass

    def _on_cancel(self) -> None:
        """Flink cancelled the job: kill the child now (no further attempt) and end this node."""
        if self._child is not None:
            self._child.kill()
        log.info("%s %s: the Flink job was cancelled; child killed", self.node[0], self.index)
        if self.outcome is None:
            self._decide("cancelled")

    def _crashed(self, exc: BaseException) -> None:
        if self._cancelled():
            self._on_cancel()
        elif self.outcome is None and not self._stop.is_set():
            message = str(exc) if isinstance(exc, DLOnFlinkError) else f"{type(exc).__name__}: {exc}"
            self._decide("failed", f"{self.node[0]} {self.index}: {message}")

    def _decide(self, outcome: str, error: str | None = None) -> None:
        self.error = error
        self.outcome = outcome
        self._changed.set()


def failure_reason(node: NodeId, attempt: int, exit_code: int, tail: str) -> str:
    """What a node runner reports for a child that exited with ``exit_code``."""
    return str(NodeFailedError(node[0], node[1], attempt, f"exited with code {exit_code}", tail))


def child_environment(config: ClusterConfig) -> dict[str, str]:
    """The operator's environment; its import path (so the child imports what the operator can), ending
    with the folder dl_on_flink is imported from (:func:`.process.import_root`); and small thread pools (a
    shared machine: one thread per child unless ``num_threads`` says otherwise)."""
    env = dict(os.environ)
    paths = [p for p in sys.path if p and os.path.exists(p)]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([*paths, import_root()]))
    threads = config.get_property("num_threads", "1")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env.setdefault(var, threads)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _cpu_seconds(pid: int) -> float:
    """CPU time used so far by process ``pid`` and its live descendants (0 once it is gone)."""
    total = 0.0
    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return total
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            pass
    return round(total, 2)
