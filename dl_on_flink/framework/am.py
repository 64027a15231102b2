"""The application master (AM): one per cluster, the single place that decides what every node does.

It runs inside the AM operator (a Flink source of parallelism 1), binds a ZeroMQ ROUTER socket on a port
the kernel picks at bind time (port 0 — nothing is reserved and released), and publishes that address in
the :mod:`address book <.address_book>`. Two kinds of clients talk to it, both over DEALER sockets with
JSON requests:

- **node runners** (one per node, in the node's operator) send a heartbeat every ``heartbeat_interval``
  with the state of their child process and its progress, and get back what to do: ``run`` (attempt
  N), ``stop`` or ``fail``. Silence longer than ``heartbeat_timeout`` counts as a node failure (lost
  heartbeat); so does being stuck (below).
- **child processes** send ``rendezvous`` with their host and advertised properties and get the whole
  cluster spec once every node of the attempt registered; and ``barrier`` (a name) when a framework must
  hold every node at one point until all of them reached it (TensorFlow's collective server update).

The messages and their wire form are :mod:`.am_protocol`'s. Anything can reach the AM's port, so every
request is parsed (:func:`~.am_protocol.parse_request`) before it is acted on: a malformed one (wrong
frame count, too large, not a JSON object, a missing or ill-typed field) is answered with
:class:`~.am_protocol.Rejected`, logged, and otherwise ignored — garbage must not take the cluster down.

A node is *stuck* when it heartbeats but shows no progress for ``progress_timeout`` seconds while the
cluster is RUNNING. Progress is a row read from or written to Flink, a ``ctx.report_progress()`` call, a
change of phase (setup, entry, ...), CPU use of at least 5 % of a core, or waiting for Flink (blocked
reading input, or writing output under back-pressure: Flink's turn, not the node's). Nodes wait for each
other (a collective waits for its slowest peer; a ps serves its chief), so a node counts as stuck only
when no node of the cluster is making progress either — or when its operator has been unable to hand
it input for that long (then Flink is waiting for this very node). A stuck node fails like a crashed
one: failover, and after ``max_failover`` the job fails with a message that names each stuck node, its
attempt, for how long, and what it was last doing.

The decisions themselves are the :class:`~.state_machine.AMStateMachine`'s. When the cluster is done the
AM waits (bounded) until every runner has heard the verdict, then returns — or raises
:class:`~dl_on_flink.errors.ClusterFailedError`, which fails the Flink job with the node's error.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import zmq

from aiflow_notebook.core.waiting import Deadline
from dl_on_flink.errors import ClusterCancelledError, ClusterFailedError
from dl_on_flink.framework.address_book import AddressBook
from dl_on_flink.framework.am_protocol import (
    MAX_FRAME_BYTES,
    BadMessage,
    Barrier,
    BarrierReply,
    FinishedWorkers,
    FinishedWorkersReply,
    Heartbeat,
    Progress,
    Rejected,
    Rendezvous,
    RendezvousReply,
    Reply,
    Request,
    Verdict,
    encode_reply,
    parse_request,
    preview,
)
from dl_on_flink.framework.cluster import ClusterConfig
from dl_on_flink.framework.state_machine import AMStateMachine, ClusterState, NodeId, NodeInfo
from dl_on_flink.framework.status import CLUSTER_STATUS, NODE_STATUS, StatusEvent

log = logging.getLogger(__name__)

CPU_SHARE = 0.05  # a node using at least this share of one core is busy; a hung one uses about nothing
PHASES = {
    "start": "starting",
    "prepare": "in the framework's prepare hook (before rendezvous)",
    "rendezvous": "waiting for the cluster to assemble",
    "setup": "in the framework's setup hook (init_process_group, TF_CONFIG)",
    "entry": "in its entry function",
    "teardown": "in the framework's teardown hook",
}
CANCELLED = "CANCELLED"  # the cluster status published when Flink cancelled the job


@dataclass
class _NodeTrack:
    last_heartbeat: float | None = None
    child: str = "none"
    attempt: int | None = None
    told_verdict: bool = False
    progress: Progress = field(default_factory=Progress)  # the child's last progress report
    progress_key: tuple | None = None
    mark: float = 0.0  # when the node last made progress
    mark_cpu: float = 0.0  # its CPU seconds then


class ApplicationMaster:
    """Serves one cluster until it is FINISHED (returns) or FAILED (raises ClusterFailedError)."""

    def __init__(
        self,
        job_key: str,
        config: ClusterConfig,
        address_book: AddressBook,
        has_input: bool,
        am_attempt: int = 0,
    ) -> None:
        self.job_key = job_key
        self.config = config
        self.address_book = address_book
        self.am_attempt = am_attempt
        self.bind_host = config.get_property("bind_host", "127.0.0.1")
        self.heartbeat_timeout = config.float_property("heartbeat_timeout", 30.0)
        self.rendezvous_timeout = config.float_property("rendezvous_timeout", 180.0)
        self.stop_grace = config.float_property("stop_grace", 15.0)
        self.progress_timeout = config.float_property("progress_timeout", 600.0)  # <= 0: never stuck
        self.cancel_grace = max(1.0, 4 * config.float_property("heartbeat_interval", 0.5))
        self._cancelling: Deadline | None = None  # since the cluster learnt that Flink cancelled the job
        self._publisher = config.get_status_publisher()
        self.sm: AMStateMachine = config.state_machine(has_input)
        self.sm.on_transition = self._on_transition
        self._tracks: dict[NodeId, _NodeTrack] = {node: _NodeTrack() for node in self.sm.nodes}
        self._attempt_started = time.monotonic()
        self._running_since = 0.0  # when the current attempt became RUNNING
        self._cluster_mark = 0.0  # when a node of the current attempt last made progress (or finished)
        self._barriers: dict[str, set[NodeId]] = {}  # of the current attempt
        self.address: str | None = None

    def run(self, stop_after: float | None = None, cancelled: Callable[[], bool] | None = None) -> None:
        """Serve until the cluster is done; ``stop_after`` (seconds) bounds the whole run (tests).

        ``cancelled``: polled every loop (≈ 100 ms); once it says True — Flink cancelled the job — or a
        node runner reports that it noticed the cancel (Flink tears the tasks of a cancelled job down one
        after the other, up to 30 s apart), the cluster is cancelled: no further failover, every runner
        still heartbeating is told ``cancel`` (and kills its child) within ``cancel_grace`` seconds, then
        the AM withdraws its address and raises ClusterCancelledError.
        """
        sock = zmq.Context.instance().socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
        try:
            sock.bind(f"tcp://{self.bind_host}:0")
            self.address = sock.getsockopt_string(zmq.LAST_ENDPOINT)
            self.address_book.publish(self.job_key, self.am_attempt, self.address)
            self._publish(self.job_key, self.sm.state.value, CLUSTER_STATUS, attempt=0, address=self.address)
            self._serve_until_done(sock, Deadline(stop_after), cancelled)
        finally:
            sock.close()
            self.address_book.remove(self.job_key)
        if self.sm.state is ClusterState.FAILED:
            raise ClusterFailedError(self._failure_message())

    def _serve_until_done(self, sock: zmq.Socket, bound: Deadline, cancelled: Callable[[], bool] | None) -> None:
        """Answer requests and watch the clock until the cluster is done and every runner heard it."""
        done: Deadline | None = None
        while True:
            if sock.poll(100, zmq.POLLIN):
                self._answer_waiting(sock)
            now = time.monotonic()
            if cancelled is not None and self._cancelling is None and cancelled():
                self._cancel()
            if self._cancelling is not None:
                self._end_if_cancelled()
                continue
            self._check_timeouts(now)
            if self.sm.done:
                done = done or Deadline(self.stop_grace)
                if done.passed or all(t.told_verdict for t in self._tracks.values()):
                    return
            if bound.passed:
                raise ClusterFailedError(f"cluster {self.job_key}: AM gave up after {bound.seconds} s")

    def _answer_waiting(self, sock: zmq.Socket) -> None:
        """Answer every request that arrived (without waiting for more)."""
        while True:
            try:
                ident, *frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            sock.send_multipart([ident, self._serve(ident, frames)])

    def _end_if_cancelled(self) -> None:
        """Once every runner still heartbeating was told to cancel (or the grace passed): ClusterCancelledError."""
        told = all(t.told_verdict or t.last_heartbeat is None for t in self._tracks.values())
        if told or self._cancelling.passed:
            raise ClusterCancelledError(f"dl_on_flink cluster {self.job_key}: the Flink job was cancelled")

    # --- requests ---
    def _serve(self, ident: bytes, frames: list[bytes]) -> bytes:
        """The reply to one request; a bad request gets an error and a log line, never an exception."""
        try:
            request, rid = parse_request(frames)
        except BadMessage as exc:
            log.warning(
                "cluster %s: AM rejected a request from peer %s: %s; request: %s",
                self.job_key, ident.hex()[:16], exc, preview(frames),
            )
            return encode_reply(Rejected(f"bad request: {exc}"), None)
        try:
            reply = self._handle(request)
        except Exception as exc:  # noqa: BLE001 - one request must not take the cluster down
            log.exception("cluster %s: AM failed to handle %s", self.job_key, preview(frames))
            reply = Rejected(f"the application master failed on {request.op}: {type(exc).__name__}: {exc}")
        return encode_reply(reply, rid)

    def _handle(self, request: Request) -> Reply:
        node = request.node
        if node not in self._tracks:
            return Rejected(f"unknown node {node[0]} {node[1]}")
        if isinstance(request, Heartbeat):
            return self._heartbeat(request)
        if isinstance(request, Barrier):
            return self._barrier(request)
        if isinstance(request, FinishedWorkers):
            return FinishedWorkersReply(tuple(sorted(i for t, i in self.sm.finished if t == "worker")))
        return self._rendezvous(request)

    def _heartbeat(self, hb: Heartbeat) -> Verdict:
        track = self._tracks[hb.node]
        now = track.last_heartbeat = time.monotonic()
        if hb.cancelled and self._cancelling is None:
            self._cancel()
        if self._cancelling is not None:
            track.told_verdict = True
            return Verdict("cancel")
        if (hb.child, hb.attempt) != (track.child, track.attempt):
            self._child_changed(hb, track, now)
        if hb.child == "running" and hb.progress is not None:
            self._note_progress(track, hb.progress, now)
        if self.sm.state is ClusterState.FAILED:
            track.told_verdict = True
            return Verdict("fail", error=self._failure_message())
        if self.sm.state is ClusterState.FINISHED:
            track.told_verdict = True
            return Verdict("stop")
        return Verdict("run", attempt=self.sm.attempt)

    def _child_changed(self, hb: Heartbeat, track: _NodeTrack, now: float) -> None:
        """A node's child started, exited or was replaced: publish it and tell the state machine."""
        node, child, attempt = hb.node, hb.child, hb.attempt
        track.child, track.attempt = child, attempt
        track.progress, track.progress_key, track.mark, track.mark_cpu = Progress(), None, now, 0.0
        self._cluster_mark = now
        self._publish(f"{self.job_key}.{node[0]}.{node[1]}", child.upper(), NODE_STATUS, attempt=attempt)
        if attempt is not None and child == "finished":
            self.sm.node_finished(node, attempt)
        elif attempt is not None and child == "failed":
            self.sm.node_failed(node, attempt, hb.error or f"{node[0]} {node[1]} failed")

    def _rendezvous(self, request: Rendezvous) -> RendezvousReply:
        if request.attempt != self.sm.attempt or self.sm.done:
            return RendezvousReply(stale=True)
        if request.node not in self.sm.registered:
            self.sm.register(request.node, request.attempt, NodeInfo(host=request.host, props=dict(request.props)))
        spec = self.sm.cluster_spec()
        return RendezvousReply(cluster=spec) if spec is not None else RendezvousReply(wait=True)

    def _barrier(self, request: Barrier) -> BarrierReply:
        if request.attempt != self.sm.attempt or self.sm.done:
            return BarrierReply(stale=True)
        arrived = self._barriers.setdefault(request.name, set())
        arrived.add(request.node)
        missing = tuple(n for n in self.sm.nodes if n not in arrived)
        return BarrierReply(wait=True, missing=missing) if missing else BarrierReply(go=True)

    # --- progress ---
    def _note_progress(self, track: _NodeTrack, progress: Progress, now: float) -> None:
        key = (progress.phase, progress.reports, progress.rows_read, progress.rows_written)
        cpu = float(progress.cpu or 0.0)
        busy = cpu - track.mark_cpu >= CPU_SHARE * max(now - track.mark, 10.0)
        if key != track.progress_key or progress.waiting or busy:
            track.mark, track.mark_cpu = now, cpu
            self._cluster_mark = now
        track.progress_key, track.progress = key, progress

    def _check_progress(self, now: float) -> None:
        """Fail the stuck nodes of a RUNNING attempt (see the module docstring)."""
        timeout = self.progress_timeout
        if timeout <= 0 or self.sm.state is not ClusterState.RUNNING:
            return
        running = {
            node: track for node, track in self._tracks.items()
            if track.child == "running" and track.attempt == self.sm.attempt and node not in self.sm.finished
        }
        idle = {node: now - max(track.mark, self._running_since) for node, track in running.items()}
        if running and now - max(self._cluster_mark, self._running_since) >= timeout:
            stuck = list(running)  # the whole cluster is quiet: every node still running is stuck
        else:  # Flink waits for a node that takes no input: stuck whatever the others do
            stuck = [
                node for node, track in running.items()
                if idle[node] >= timeout and (track.progress.input_blocked or 0) >= timeout
            ]
        if stuck:
            self.sm.node_failed(stuck[0], self.sm.attempt, "; ".join(self._stuck(n, idle[n]) for n in stuck))

    def _stuck(self, node: NodeId, idle: float) -> str:
        """Why ``node`` counts as stuck, with what is known of what it was doing."""
        p = self._tracks[node].progress
        phase = p.phase or "start"
        doing = f"waiting at {phase[8:]!r} for the other nodes" if phase.startswith("barrier ") else PHASES.get(phase, phase)
        text = (
            f"{node[0]} {node[1]} (attempt {self.sm.attempt}) is stuck: no progress for {idle:.0f} s "
            f"(progress_timeout {self.progress_timeout:g} s), last {doing}"
        )
        if p.message:
            text += f", last report_progress: {p.message!r}"
        text += f"; {p.rows_read or 0} rows read from Flink, {p.rows_written or 0} written"
        if p.input_blocked:
            text += f"; its input could not be delivered for {p.input_blocked:.0f} s"
        return text

    # --- timeouts ---
    def _check_timeouts(self, now: float) -> None:
        if self.sm.done:
            return
        self._check_progress(now)
        if self.sm.done:
            return
        for node, track in self._tracks.items():
            if track.last_heartbeat is None:
                if now - self._attempt_started > self.rendezvous_timeout:
                    self.sm.node_failed(
                        node, self.sm.attempt,
                        f"{node[0]} {node[1]} never contacted the AM within {self.rendezvous_timeout:.0f} s",
                    )
                    return
            elif now - track.last_heartbeat > self.heartbeat_timeout:
                self.sm.node_failed(
                    node, self.sm.attempt,
                    f"{node[0]} {node[1]} (attempt {self.sm.attempt}) lost heartbeat: silent for "
                    f"{now - track.last_heartbeat:.0f} s",
                )
                return
        if self.sm.state is ClusterState.INIT and now - self._attempt_started > self.rendezvous_timeout:
            missing = [n for n in self.sm.nodes if n not in self.sm.registered]
            node = missing[0]
            self.sm.node_failed(
                node, self.sm.attempt,
                f"{node[0]} {node[1]} (attempt {self.sm.attempt}) did not register within "
                f"{self.rendezvous_timeout:.0f} s",
            )

    def _cancel(self) -> None:
        self._cancelling = Deadline(self.cancel_grace)
        for track in self._tracks.values():
            track.told_verdict = False
        self._publish(self.job_key, CANCELLED, CLUSTER_STATUS, attempt=self.sm.attempt)

    # --- status ---
    def _on_transition(self, state: ClusterState, attempt: int, reason: str) -> None:
        if state is ClusterState.INIT:
            self._attempt_started = time.monotonic()
            self._barriers.clear()
        elif state is ClusterState.RUNNING:
            self._running_since = time.monotonic()
        self._publish(self.job_key, state.value, CLUSTER_STATUS, attempt=attempt, reason=reason)

    def _failure_message(self) -> str:
        return f"dl_on_flink cluster {self.job_key} failed after {self.sm.max_failover} failover(s): {self.sm.error}"

    def _publish(self, key: str, value: str, event_type: str, **context: Any) -> None:
        try:
            self._publisher(StatusEvent(key, value, event_type, context))
        except Exception:  # a broken publisher must not take the cluster down
            log.exception("status publisher failed for %s=%s", key, value)
