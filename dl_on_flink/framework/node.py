"""NodeRunner: the operator side of one node — its child process, its heartbeat, its data.

One runner lives in each subtask of a role operator. Two threads share it:

- the **supervisor** (a thread of ours) finds the AM in the address book, heartbeats it, and does what
  the AM says: start the child for attempt N (killing the previous one), stop, or fail. It reports the
  child's exit — code 0 is "finished", anything else "failed" with the tail of the child's output — and
  its progress: what the child's reporter wrote, the CPU time of the child's processes, and for how
  long the operator has been unable to deliver input to it.
- the **operator thread** (PyFlink's) moves data: rows in (``write`` / ``end_input``), rows out
  (``take_output``), and follows the supervisor to each new attempt. Every attempt has its own channel
  endpoints, so nothing meant for a killed child reaches its successor.

Input replay: with ``max_epoch > 1`` (or the property ``replay_input_on_failover``) every input frame is
also appended to a spill file in the node's private directory. Later epochs are read back from it, and a
restarted attempt is first sent everything spilled so far, so every attempt sees the whole input, each
row once per epoch. Without it, rows in flight when a node fails are lost (as in dl-on-flink).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cloudpickle
import psutil
import zmq

from dl_on_flink.errors import ClusterFailedError, DLOnFlinkError, RendezvousError
from dl_on_flink.framework.address_book import AddressBook
from dl_on_flink.framework.am import AMClient, failure_reason
from dl_on_flink.framework.channel import (
    DATA,
    END_OF_EPOCH,
    END_OF_INPUT,
    END_OF_OUTPUT,
    FrameBuilder,
    Receiver,
    Sender,
    iter_rows,
)
from dl_on_flink.framework.child import EXIT_SUPERSEDED
from dl_on_flink.framework.cluster import ClusterConfig
from dl_on_flink.framework.codec import RowCodec, Schema
from dl_on_flink.framework.context import NodeLaunch
from dl_on_flink.framework.process import ChildProcess

log = logging.getLogger(__name__)


@dataclass
class NodePlan:
    """What every subtask of one role operator needs (pickled into the PyFlink function)."""

    job_key: str
    config: ClusterConfig
    node_type: str
    address_book: AddressBook
    input_schema: Schema | None = None
    output_schema: Schema | None = None
    max_epoch: int = 1


class NodeRunner:
    """Runs node ``plan.node_type`` ``index``; see the module docstring for the two threads."""

    def __init__(self, plan: NodePlan, index: int, cancelled: Callable[[], bool] | None = None) -> None:
        self.plan = plan
        self.index = index
        # polled by the supervisor: True once Flink cancelled the job (see dl_on_flink.operator.harness)
        self._cancelled = cancelled or (lambda: False)
        self.node = (plan.node_type, index)
        cfg = plan.config
        self.heartbeat_interval = cfg.float_property("heartbeat_interval", 0.5)
        self.heartbeat_timeout = cfg.float_property("heartbeat_timeout", 30.0)
        self.rendezvous_timeout = cfg.float_property("rendezvous_timeout", 180.0)
        self.host = cfg.get_property("bind_host", "127.0.0.1")
        self.workdir = Path(tempfile.mkdtemp(prefix=f"dlf-{plan.node_type}{index}-"))
        # removed by close(); also when the runner is collected or the process exits without close()
        self._remove_workdir = weakref.finalize(self, shutil.rmtree, self.workdir, ignore_errors=True)
        # written by the supervisor, read by the operator thread
        self._child_attempt: int | None = None
        self._exited_attempt: int | None = None
        self._outcome: str | None = None  # "stopped" | "failed" | "cancelled"
        self._error: str | None = None
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._launching = threading.Lock()  # a launch and the removal of the workdir never overlap
        self._thread: threading.Thread | None = None
        # operator thread only
        self._data_attempt: int | None = None
        self._sender: Sender | None = None
        self._receiver: Receiver | None = None
        self._frames = FrameBuilder()
        self._blocked_since: float | None = None  # when a frame for the child first could not be sent
        self._input_ended = False
        self._output_ended = False
        self._pending_out: list[tuple] = []
        self._out_codec = RowCodec(plan.output_schema, arrays_as="list") if plan.output_schema else None
        replay = plan.max_epoch > 1 or cfg.bool_property("replay_input_on_failover")
        self._spill = _SpillFile(self.workdir / "input.spill") if plan.input_schema and replay else None

    # --- lifecycle ---
    def start(self) -> NodeRunner:
        self._thread = threading.Thread(
            target=self._supervise, name=f"dl-on-flink-{self.node[0]}-{self.index}", daemon=True
        )
        self._thread.start()
        return self

    @property
    def outcome(self) -> str | None:
        """None while the cluster runs; "stopped" when it finished; "failed" when it gave up; "cancelled"
        when Flink cancelled the job."""
        return self._outcome

    def raise_if_failed(self) -> None:
        if self._outcome == "failed":
            raise ClusterFailedError(self._error or f"{self.node[0]} {self.index}: cluster failed")

    def wait(self, timeout: float) -> bool:
        """Wait until the cluster's verdict is known (True) or ``timeout`` passed (False)."""
        deadline = time.monotonic() + timeout
        while self._outcome is None and time.monotonic() < deadline:
            self._changed.wait(min(0.1, max(0.0, deadline - time.monotonic())))
            self._changed.clear()
        return self._outcome is not None

    def close(self) -> None:
        """Stop heartbeating, kill the child, close the channels, remove the private directory."""
        with self._launching:
            self._stop.set()  # from now on the supervisor launches nothing
        if self._thread is not None:
            self._thread.join(30)
        for sock in (self._sender, self._receiver):
            if sock is not None:
                sock.close()
        self._sender = self._receiver = None
        if self._spill is not None:
            self._spill.close()
        with self._launching:
            self._remove_workdir()

    # --- data plane (operator thread) ---
    def write(self, row_bytes: bytes) -> None:
        """One encoded input row (batched into frames; blocks under back-pressure)."""
        frame = self._frames.add(row_bytes)
        if frame is not None:
            self._send_live(frame)

    def flush(self) -> None:
        """Send the partial frame now (called on the operator's timer, so a trickle is not held back)."""
        frame = self._frames.take()
        if frame is not None:
            self._send_live(frame)

    def end_input(self) -> None:
        """The bounded input ended: send end-of-epoch, replay further epochs, then end-of-input."""
        self.flush()
        self._input_ended = True
        self._ensure_current()
        if self._outcome is None and not self._send_tail():
            self._ensure_current()  # the new attempt's replay already includes the tail

    def take_output(self) -> list[tuple]:
        """Output rows received so far (never waits for more)."""
        if self._outcome is None:
            self._ensure_current()
        self._drain_output()
        rows, self._pending_out = self._pending_out, []
        return rows

    def finish(self, poll: float = 0.1) -> Iterator[list[tuple]]:
        """After the input ended (or for a node without input): yield output until the verdict.

        Raises ClusterFailedError when the cluster failed.
        """
        while self._outcome is None:
            self._ensure_current()
            if self._receiver is not None:
                self._receiver.socket.poll(int(poll * 1000), zmq.POLLIN)
            else:
                self._changed.wait(poll)
                self._changed.clear()
            rows = self.take_output()
            if rows:
                yield rows
        self.raise_if_failed()
        if self._outcome == "cancelled":
            return  # nobody reads the output of a cancelled job
        # the cluster finished: collect what the last child sent before it exited
        deadline = time.monotonic() + 5.0
        while self._receiver is not None and not self._output_ended and time.monotonic() < deadline:
            if self._receiver.socket.poll(100, zmq.POLLIN):
                self._drain_output()
        rows, self._pending_out = self._pending_out, []
        if rows:
            yield rows

    def _send_live(self, frame: bytes) -> None:
        self._ensure_current()
        if self._spill is not None:
            self._spill.append(frame)
        while not self._try_send(frame):
            self._ensure_current()
            if self._spill is not None:
                return  # the replay to the new attempt included this frame

    def _ensure_current(self) -> None:
        """Follow the supervisor to the newest child: fresh endpoints, then replay what it must see."""
        while True:
            self._wait_for_first_child()
            attempt = self._child_attempt
            if attempt is None or attempt == self._data_attempt or self._outcome is not None:
                return
            self._rebind(attempt)
            if self._replay():
                return

    def _wait_for_first_child(self) -> None:
        while self._child_attempt is None and self._outcome is None:
            self._changed.wait(0.1)
            self._changed.clear()
        self.raise_if_failed()

    def _rebind(self, attempt: int) -> None:
        for sock in (self._sender, self._receiver):
            if sock is not None:
                sock.close()
        self._sender = self._receiver = None
        self._data_attempt = attempt
        self._output_ended = False
        self._blocked_since = None  # the new child has not refused anything yet
        if self.plan.input_schema is not None:
            self._sender = Sender(self._endpoint("in", attempt), bind=True)
        if self.plan.output_schema is not None:
            self._receiver = Receiver(self._endpoint("out", attempt), bind=True)

    def _replay(self) -> bool:
        if self._sender is None:
            return True
        if self._spill is not None:
            for frame in self._spill.frames():
                if not self._try_send(frame):
                    return False
        return self._send_tail() if self._input_ended else True

    def _send_tail(self) -> bool:
        if self._sender is None:
            return True
        if not self._try_send(END_OF_EPOCH):
            return False
        for _ in range(self.plan.max_epoch - 1):
            if self._spill is not None:
                for frame in self._spill.frames():
                    if not self._try_send(frame):
                        return False
            if not self._try_send(END_OF_EPOCH):
                return False
        return self._try_send(END_OF_INPUT)

    def _try_send(self, frame: bytes) -> bool:
        """Send to the current child, draining its output while waiting (no deadlock on full queues).

        False when a new attempt replaced the child meanwhile; frames for a child that exited, or after
        the cluster finished, are dropped (True).
        """
        attempt = self._data_attempt
        sender = self._sender
        if sender is None:
            return True
        poller = zmq.Poller()
        poller.register(sender.socket, zmq.POLLOUT)
        if self._receiver is not None:
            poller.register(self._receiver.socket, zmq.POLLIN)
        while True:
            if sender.try_send(frame):
                self._blocked_since = None
                return True
            if self._blocked_since is None:
                self._blocked_since = time.monotonic()
            self.raise_if_failed()
            if self._outcome in ("stopped", "cancelled") or self._exited_attempt == attempt:
                self._blocked_since = None
                return True
            if self._child_attempt != attempt:
                return False
            ready = dict(poller.poll(100))
            if self._receiver is not None and self._receiver.socket in ready:
                self._drain_output()

    def _drain_output(self) -> None:
        if self._receiver is None:
            return
        decode = self._out_codec.decode if self._out_codec is not None else None
        while (frame := self._receiver.try_recv()) is not None:
            kind = frame[:1]
            if kind == DATA and decode is not None:
                self._pending_out.extend(decode(row) for row in iter_rows(frame))
            elif kind == END_OF_OUTPUT:
                self._output_ended = True

    def _endpoint(self, direction: str, attempt: int) -> str:
        return f"ipc://{self.workdir}/{direction}-{attempt}"

    # --- supervisor thread ---
    def _supervise(self) -> None:
        child: ChildProcess | None = None
        am: AMClient | None = None
        try:
            address = self._find_am()
            if address is None:
                return
            am = AMClient(address, timeout=max(2.0, self.heartbeat_interval * 4))
            attempt: int | None = None
            state, error = "none", None
            last_contact = time.monotonic()
            while not self._stop.is_set():
                if self._cancelled():
                    self._on_cancel(child)
                    self._tell_am_cancelled(am)
                    return
                if child is not None and state == "running":
                    code = child.poll()
                    if code is not None:
                        self._exited_attempt = attempt
                        if code == 0:
                            state = "finished"
                        elif code == EXIT_SUPERSEDED:
                            state = "none"
                        else:
                            state, error = "failed", failure_reason(self.node, attempt, code, child.tail())
                        self._changed.set()
                request = {"op": "hb", "node": list(self.node), "attempt": attempt, "child": state, "error": error}
                if child is not None and state == "running":
                    request["progress"] = self._progress(child, attempt)
                try:
                    reply = am.call(request)
                    last_contact = time.monotonic()
                except RendezvousError:
                    if time.monotonic() - last_contact > self.heartbeat_timeout:
                        raise RendezvousError(
                            f"{self.node[0]} {self.index} lost the application master at {address}"
                        ) from None
                    continue
                action = reply.get("action")
                if action is None and "error" in reply:
                    raise DLOnFlinkError(f"the application master rejected a heartbeat: {reply['error']}")
                if action == "fail":
                    self._decide("failed", reply.get("error"))
                    return
                if action == "stop":
                    self._decide("stopped")
                    return
                if action == "cancel":  # another role of the cluster noticed that Flink cancelled the job
                    self._on_cancel(child)
                    return
                if action == "run" and reply["attempt"] != attempt:
                    if child is not None:
                        child.kill()
                    attempt = int(reply["attempt"])
                    child = self._launch(address, attempt)
                    if child is None:  # closed or cancelled meanwhile
                        return
                    state, error = "running", None
                    self._child_attempt = attempt
                    self._changed.set()
                if child is not None and state == "running":
                    child.wait(self.heartbeat_interval)
                else:
                    self._stop.wait(self.heartbeat_interval)
        except BaseException as exc:  # noqa: BLE001 - any supervisor failure fails this node's operator
            if self._cancelled():
                self._on_cancel(child)
            elif self._outcome is None and not self._stop.is_set():
                message = str(exc) if isinstance(exc, DLOnFlinkError) else f"{type(exc).__name__}: {exc}"
                self._decide("failed", f"{self.node[0]} {self.index}: {message}")
        finally:
            if child is not None:
                child.kill()
            if am is not None:
                am.close()

    def _progress(self, child: ChildProcess, attempt: int) -> dict:
        """The running child's progress for the heartbeat (see :meth:`.Context._progress`)."""
        try:
            progress = json.loads((self.workdir / f"attempt-{attempt}.progress").read_text())
        except (OSError, ValueError):
            progress = {}  # not written yet (or being replaced): the AM keeps what it knew
        progress["cpu"] = _cpu_seconds(child.pid)
        blocked = self._blocked_since
        progress["input_blocked"] = None if blocked is None else round(time.monotonic() - blocked, 1)
        return progress

    def _find_am(self) -> str | None:
        """The AM's address from the address book; None when closed or cancelled while waiting."""
        deadline = time.monotonic() + self.rendezvous_timeout
        while not self._stop.is_set():
            if self._cancelled():
                self._on_cancel(None)
                return None
            try:
                return self.plan.address_book.wait_for(
                    self.plan.job_key, None, min(1.0, max(0.0, deadline - time.monotonic()))
                )[1]
            except RendezvousError:
                if time.monotonic() >= deadline:
                    raise
        return None

    def _tell_am_cancelled(self, am: AMClient) -> None:
        """Best effort: the AM tells every other node at once (their own tasks may be torn down later)."""
        try:
            am.call({"op": "hb", "node": list(self.node), "child": "none", "cancelled": True}, timeout=1.0)
        except RendezvousError:
            pass

    def _on_cancel(self, child: ChildProcess | None) -> None:
        """Flink cancelled the job: kill the child now (no further attempt) and end this node."""
        if child is not None:
            child.kill()
        log.info("%s %s: the Flink job was cancelled; child killed", self.node[0], self.index)
        if self._outcome is None:
            self._decide("cancelled")

    def _decide(self, outcome: str, error: str | None = None) -> None:
        self._error = error
        self._outcome = outcome
        self._changed.set()

    def _launch(self, am_address: str, attempt: int) -> ChildProcess | None:
        """Start the child of ``attempt``; None when the runner was closed (or the job cancelled) first."""
        with self._launching:
            if self._stop.is_set() or self._cancelled():
                return None
            return self._start_child(am_address, attempt)

    def _start_child(self, am_address: str, attempt: int) -> ChildProcess:
        plan, cfg = self.plan, self.plan.config
        launch = NodeLaunch(
            job_key=plan.job_key,
            node_type=plan.node_type,
            index=self.index,
            attempt=attempt,
            node_type_count_map=cfg.get_node_type_count_map(),
            properties=cfg.get_properties(),
            entry=cfg.get_entry(),
            hooks=cfg.node_hooks(),
            am_address=am_address,
            host=self.host,
            input_endpoint=self._endpoint("in", attempt) if plan.input_schema is not None else None,
            output_endpoint=self._endpoint("out", attempt) if plan.output_schema is not None else None,
            input_schema=plan.input_schema,
            output_schema=plan.output_schema,
            rendezvous_timeout=self.rendezvous_timeout,
            progress_path=str(self.workdir / f"attempt-{attempt}.progress"),
        )
        launch_path = self.workdir / f"attempt-{attempt}.launch"
        with open(launch_path, "wb") as fh:
            cloudpickle.dump(launch, fh)
        argv = [sys.executable, "-m", "dl_on_flink.framework.child", str(launch_path)]
        log.info("starting %s %s attempt %s: %s", plan.node_type, self.index, attempt, " ".join(argv))
        return ChildProcess(argv, child_environment(cfg), self.workdir / f"attempt-{attempt}.log", cwd=self.workdir)


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


def child_environment(config: ClusterConfig) -> dict[str, str]:
    """The operator's environment, its import path (so the child imports what the operator can) and
    small thread pools (a shared machine: one thread per child unless ``num_threads`` says otherwise)."""
    env = dict(os.environ)
    paths = [p for p in sys.path if p and os.path.exists(p)]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    threads = config.get_property("num_threads", "1")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env.setdefault(var, threads)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONUNBUFFERED"] = "1"
    return env


_LEN = struct.Struct("<I")


class _SpillFile:
    """Input frames on local disk, appended once and read back for later epochs and failovers."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh = open(path, "w+b")  # noqa: SIM115 - lives as long as the runner

    def append(self, frame: bytes) -> None:
        self._fh.write(_LEN.pack(len(frame)))
        self._fh.write(frame)

    def frames(self) -> Iterator[bytes]:
        self._fh.flush()
        with open(self.path, "rb") as fh:
            while header := fh.read(4):
                (length,) = _LEN.unpack(header)
                yield fh.read(length)

    def close(self) -> None:
        self._fh.close()
