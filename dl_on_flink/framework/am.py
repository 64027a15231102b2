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

Anything can reach the AM's port, so every request is checked (:func:`parse_request`) before it is
acted on: a malformed one (wrong frame count, too large, not a JSON object, a missing or ill-typed field)
is answered with an ``error``, logged, and otherwise ignored — garbage must not take the cluster down.

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

import itertools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import zmq

from dl_on_flink.errors import ClusterCancelledError, ClusterFailedError, NodeFailedError, RendezvousError
from dl_on_flink.framework.address_book import AddressBook
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
MAX_REQUEST_BYTES = 1 << 20  # a node's request is a few hundred bytes; larger ones are answered with an error
MAX_FRAME_BYTES = 16 << 20  # larger frames are not even read: ZeroMQ drops the connection that sends one
CHILD_STATES = ("none", "running", "finished", "failed")
CANCELLED = "CANCELLED"  # the cluster status published when Flink cancelled the job


@dataclass
class _NodeTrack:
    last_heartbeat: float | None = None
    child: str = "none"
    attempt: int | None = None
    told_verdict: bool = False
    progress: dict[str, Any] = field(default_factory=dict)  # the child's last progress report
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
        self._cancelled_at: float | None = None  # when the cluster learnt that Flink cancelled the job
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
            started = time.monotonic()
            done_at: float | None = None
            while True:
                if sock.poll(100, zmq.POLLIN):
                    while True:
                        try:
                            ident, *frames = sock.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        reply = self._serve(ident, frames)
                        sock.send_multipart([ident, json.dumps(reply).encode()])
                now = time.monotonic()
                if cancelled is not None and self._cancelled_at is None and cancelled():
                    self._cancel(now)
                if self._cancelled_at is not None:
                    told = all(t.told_verdict or t.last_heartbeat is None for t in self._tracks.values())
                    if told or now - self._cancelled_at > self.cancel_grace:
                        raise ClusterCancelledError(f"dl_on_flink cluster {self.job_key}: the Flink job was cancelled")
                    continue
                self._check_timeouts(now)
                if self.sm.done:
                    done_at = done_at or now
                    told = all(t.told_verdict for t in self._tracks.values())
                    if told or now - done_at > self.stop_grace:
                        break
                if stop_after is not None and now - started > stop_after:
                    raise ClusterFailedError(f"cluster {self.job_key}: AM gave up after {stop_after} s")
        finally:
            sock.close()
            self.address_book.remove(self.job_key)
        if self.sm.state is ClusterState.FAILED:
            raise ClusterFailedError(
                f"dl_on_flink cluster {self.job_key} failed after {self.sm.max_failover} failover(s): "
                f"{self.sm.error}"
            )

    # --- requests ---
    def _serve(self, ident: bytes, frames: list[bytes]) -> dict[str, Any]:
        """The reply to one request; a bad request gets an error and a log line, never an exception."""
        try:
            msg = parse_request(frames)
        except BadRequest as exc:
            log.warning(
                "cluster %s: AM rejected a request from peer %s: %s; request: %s",
                self.job_key, ident.hex()[:16], exc, _preview(frames),
            )
            return {"error": f"bad request: {exc}"}
        try:
            reply = self._handle(msg)
        except Exception as exc:  # noqa: BLE001 - one request must not take the cluster down
            log.exception("cluster %s: AM failed to handle %s", self.job_key, _preview(frames))
            reply = {"error": f"the application master failed on {msg['op']}: {type(exc).__name__}: {exc}"}
        return {**reply, "rid": msg.get("rid")}

    def _handle(self, msg: dict[str, Any]) -> dict[str, Any]:
        node: NodeId = (msg["node"][0], msg["node"][1])
        if node not in self._tracks:
            return {"error": f"unknown node {node[0]} {node[1]}"}
        if msg["op"] == "hb":
            return self._heartbeat(node, msg)
        if msg["op"] == "barrier":
            return self._barrier(node, msg)
        if msg["op"] == "finished":
            return {"workers": sorted(i for t, i in self.sm.finished if t == "worker")}
        return self._rendezvous(node, msg)

    def _heartbeat(self, node: NodeId, msg: dict[str, Any]) -> dict[str, Any]:
        track = self._tracks[node]
        now = track.last_heartbeat = time.monotonic()
        if msg.get("cancelled") and self._cancelled_at is None:
            self._cancel(now)
        if self._cancelled_at is not None:
            track.told_verdict = True
            return {"action": "cancel"}
        attempt, child = msg.get("attempt"), msg.get("child") or "none"
        if (child, attempt) != (track.child, track.attempt):
            track.child, track.attempt = child, attempt
            track.progress, track.progress_key, track.mark, track.mark_cpu = {}, None, now, 0.0
            self._cluster_mark = now
            self._publish(f"{self.job_key}.{node[0]}.{node[1]}", child.upper(), NODE_STATUS, attempt=attempt)
            if attempt is not None and child == "finished":
                self.sm.node_finished(node, attempt)
            elif attempt is not None and child == "failed":
                self.sm.node_failed(node, attempt, msg.get("error") or f"{node[0]} {node[1]} failed")
        if child == "running" and msg.get("progress") is not None:
            self._note_progress(track, msg["progress"], now)
        if self.sm.state is ClusterState.FAILED:
            track.told_verdict = True
            return {"action": "fail", "error": self._failure_message()}
        if self.sm.state is ClusterState.FINISHED:
            track.told_verdict = True
            return {"action": "stop"}
        return {"action": "run", "attempt": self.sm.attempt}

    def _rendezvous(self, node: NodeId, msg: dict[str, Any]) -> dict[str, Any]:
        attempt = msg["attempt"]
        if attempt != self.sm.attempt or self.sm.done:
            return {"stale": True}
        if node not in self.sm.registered:
            self.sm.register(node, attempt, NodeInfo(host=msg["host"], props=dict(msg.get("props") or {})))
        spec = self.sm.cluster_spec()
        return {"cluster": spec} if spec is not None else {"wait": True}

    def _barrier(self, node: NodeId, msg: dict[str, Any]) -> dict[str, Any]:
        if msg["attempt"] != self.sm.attempt or self.sm.done:
            return {"stale": True}
        arrived = self._barriers.setdefault(msg["name"], set())
        arrived.add(node)
        missing = [list(n) for n in self.sm.nodes if n not in arrived]
        return {"wait": True, "missing": missing} if missing else {"go": True}

    # --- progress ---
    def _note_progress(self, track: _NodeTrack, progress: dict[str, Any], now: float) -> None:
        key = tuple(progress.get(k) for k in ("phase", "reports", "rows_read", "rows_written"))
        cpu = float(progress.get("cpu") or 0.0)
        busy = cpu - track.mark_cpu >= CPU_SHARE * max(now - track.mark, 10.0)
        if key != track.progress_key or progress.get("waiting") or busy:
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
                if idle[node] >= timeout and (track.progress.get("input_blocked") or 0) >= timeout
            ]
        if stuck:
            self.sm.node_failed(stuck[0], self.sm.attempt, "; ".join(self._stuck(n, idle[n]) for n in stuck))

    def _stuck(self, node: NodeId, idle: float) -> str:
        """Why ``node`` counts as stuck, with what is known of what it was doing."""
        p = self._tracks[node].progress
        phase = str(p.get("phase") or "start")
        doing = f"waiting at {phase[8:]!r} for the other nodes" if phase.startswith("barrier ") else PHASES.get(phase, phase)
        text = (
            f"{node[0]} {node[1]} (attempt {self.sm.attempt}) is stuck: no progress for {idle:.0f} s "
            f"(progress_timeout {self.progress_timeout:g} s), last {doing}"
        )
        if p.get("message"):
            text += f", last report_progress: {p['message']!r}"
        text += f"; {p.get('rows_read', 0)} rows read from Flink, {p.get('rows_written', 0)} written"
        if p.get("input_blocked"):
            text += f"; its input could not be delivered for {p['input_blocked']:.0f} s"
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

    def _cancel(self, now: float) -> None:
        self._cancelled_at = now
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


class BadRequest(ValueError):
    """A request the AM cannot act on (the message says what is wrong with it)."""


def parse_request(frames: list[bytes]) -> dict[str, Any]:
    """The request in ``frames`` (what followed the sender's identity), checked; BadRequest if malformed."""
    if len(frames) != 1:
        raise BadRequest(f"expected 1 frame after the identity, got {len(frames)}")
    payload = frames[0]
    if len(payload) > MAX_REQUEST_BYTES:
        raise BadRequest(f"request of {len(payload)} bytes, more than {MAX_REQUEST_BYTES}")
    try:
        msg = json.loads(payload)
    except ValueError as exc:  # also UnicodeDecodeError
        raise BadRequest(f"not JSON ({exc})") from None
    if not isinstance(msg, dict):
        raise BadRequest(f"not a JSON object but {type(msg).__name__}")
    node = msg.get("node")
    if not (isinstance(node, list) and len(node) == 2 and isinstance(node[0], str) and _is_int(node[1])):
        raise BadRequest(f"'node' must be [node type, index], got {_short(node)}")
    op = msg.get("op")
    if op == "hb":
        _field(msg, "attempt", _is_int, "an int or null", optional=True)
        _field(msg, "child", lambda v: v in CHILD_STATES, f"one of {CHILD_STATES}", optional=True)
        _field(msg, "error", lambda v: isinstance(v, str), "a string or null", optional=True)
        _field(msg, "progress", _is_progress, "a progress object", optional=True)
        _field(msg, "cancelled", lambda v: isinstance(v, bool), "a boolean", optional=True)
    elif op == "rendezvous":
        _field(msg, "attempt", _is_int, "an int")
        _field(msg, "host", lambda v: isinstance(v, str) and v != "", "a non-empty string")
        _field(
            msg, "props",
            lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()),
            "an object of strings", optional=True,
        )
    elif op == "finished":
        _field(msg, "attempt", _is_int, "an int")
    elif op == "barrier":
        _field(msg, "attempt", _is_int, "an int")
        _field(msg, "name", lambda v: isinstance(v, str) and 0 < len(v) <= 200, "a string of 1 to 200 characters")
    else:
        raise BadRequest(f"unknown op {_short(op)}")
    return msg


def _field(msg: dict[str, Any], key: str, valid, expected: str, optional: bool = False) -> None:
    value = msg.get(key)
    if value is None and optional:
        return
    if value is None or not valid(value):
        raise BadRequest(f"{msg['op']}: {key!r} must be {expected}, got {_short(value)}")


_PROGRESS_FIELDS = {
    "phase": lambda v: isinstance(v, str),
    "message": lambda v: v is None or isinstance(v, str),
    "reports": lambda v: _is_int(v) and v >= 0,
    "rows_read": lambda v: _is_int(v) and v >= 0,
    "rows_written": lambda v: _is_int(v) and v >= 0,
    "waiting": lambda v: isinstance(v, bool),
    "cpu": lambda v: _is_number(v) and v >= 0,
    "input_blocked": lambda v: v is None or (_is_number(v) and v >= 0),
}


def _is_progress(value: Any) -> bool:
    return isinstance(value, dict) and all(k in _PROGRESS_FIELDS and _PROGRESS_FIELDS[k](v) for k, v in value.items())


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value  # not NaN


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def _preview(frames: list[bytes], limit: int = 200) -> str:
    """A request's frames for a log line: sizes, and the start of each."""
    return ", ".join(f"{len(f)} bytes {_short(bytes(f[:limit]), limit + 10)}" for f in frames) or "no frames"


class AMClient:
    """A request/reply client of the AM (a DEALER socket; one per thread)."""

    _ids = itertools.count()

    def __init__(self, address: str, timeout: float = 10.0) -> None:
        self.address = address
        self.timeout = timeout
        self._sock: zmq.Socket | None = None

    def call(self, msg: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """Send one request and wait for its reply; RendezvousError when none comes in time."""
        if self._sock is None:
            self._sock = zmq.Context.instance().socket(zmq.DEALER)
            self._sock.setsockopt(zmq.LINGER, 0)
            self._sock.connect(self.address)
        rid = next(self._ids)
        self._sock.send(json.dumps({**msg, "rid": rid}).encode())
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._sock.poll(int(remaining * 1000) + 1, zmq.POLLIN):
                self.close()  # drop the socket so a late reply cannot be mistaken for the next one
                raise RendezvousError(f"the application master at {self.address} did not answer in time")
            reply = json.loads(self._sock.recv())
            if reply.get("rid", rid) == rid:
                return reply

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def failure_reason(node: NodeId, attempt: int, exit_code: int, tail: str) -> str:
    """The message a node runner reports for a child that exited with ``exit_code``."""
    return str(NodeFailedError(node[0], node[1], attempt, f"exited with code {exit_code}", tail))
