"""The application master's state machine: INIT → RUNNING → FINISHED, or FAILOVER → INIT … / FAILED.

It is pure bookkeeping (no sockets, no clocks) so every transition is unit-tested; :mod:`.am` feeds it
registrations, finishes and failures. A framework plugs in by overriding :meth:`is_cluster_finished`
(PyTorch: every worker finished; TensorFlow batch: worker 0 finished).

Attempts: the cluster starts at attempt 0. A node failure in INIT or RUNNING moves to FAILOVER, which
increments the attempt and returns to INIT at once (every node must restart and register again); the
failure that would need attempt ``max_failover + 1`` moves to FAILED instead. Reports about an older
attempt are ignored, so a slow node of a replaced attempt cannot disturb the new one.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

NodeId = tuple[str, int]


class ClusterState(enum.StrEnum):
    INIT = "INIT"
    RUNNING = "RUNNING"
    FAILOVER = "FAILOVER"
    FINISHED = "FINISHED"
    FAILED = "FAILED"


@dataclass
class NodeInfo:
    host: str
    props: dict[str, str] = field(default_factory=dict)


class AMStateMachine:
    """Tracks one cluster's attempts. ``on_transition(state, attempt, reason)`` sees every state change."""

    def __init__(
        self,
        node_type_count_map: dict[str, int],
        max_failover: int,
        has_input: bool = False,
        on_transition: Callable[[ClusterState, int, str], None] | None = None,
    ) -> None:
        self.counts = dict(node_type_count_map)
        self.max_failover = max_failover
        self.has_input = has_input
        self.on_transition = on_transition
        self.nodes: list[NodeId] = [(t, i) for t, n in self.counts.items() for i in range(n)]
        self.state = ClusterState.INIT
        self.attempt = 0
        self.error: str | None = None
        self.registered: dict[NodeId, NodeInfo] = {}
        self.finished: set[NodeId] = set()
        self.history: list[tuple[ClusterState, int]] = [(ClusterState.INIT, 0)]

    @property
    def done(self) -> bool:
        return self.state in (ClusterState.FINISHED, ClusterState.FAILED)

    def register(self, node: NodeId, attempt: int, info: NodeInfo) -> bool:
        """A node's child is up for ``attempt``; False when the report is stale or unknown."""
        if attempt != self.attempt or node not in self.nodes or self.done:
            return False
        self.registered[node] = info
        if self.state is ClusterState.INIT and len(self.registered) == len(self.nodes):
            self._move(ClusterState.RUNNING, "all nodes registered")
        return True

    def cluster_spec(self) -> dict[str, list[dict]] | None:
        """Every node's host and properties, by node type in index order (None until RUNNING)."""
        if self.state is not ClusterState.RUNNING and not (
            self.state is ClusterState.FINISHED and len(self.registered) == len(self.nodes)
        ):
            return None
        return {
            t: [{"host": self.registered[(t, i)].host, "props": self.registered[(t, i)].props} for i in range(n)]
            for t, n in self.counts.items()
        }

    def node_finished(self, node: NodeId, attempt: int) -> None:
        if attempt != self.attempt or self.done or node not in self.nodes:
            return
        self.finished.add(node)
        if self.state is ClusterState.RUNNING and self.is_cluster_finished():
            self._move(ClusterState.FINISHED, f"{node[0]} {node[1]} finished")

    def node_failed(self, node: NodeId, attempt: int, reason: str) -> None:
        """A node of ``attempt`` failed: fail over, or give up after ``max_failover`` restarts."""
        if attempt != self.attempt or self.done:
            return
        if self.attempt >= self.max_failover:
            self.error = reason
            self._move(ClusterState.FAILED, reason)
            return
        self._move(ClusterState.FAILOVER, reason)
        self.attempt += 1
        self.registered.clear()
        self.finished.clear()
        self._move(ClusterState.INIT, f"restarting every node as attempt {self.attempt}")

    def is_cluster_finished(self) -> bool:
        """Default: every node finished. Frameworks override."""
        return len(self.finished) == len(self.nodes)

    def _move(self, state: ClusterState, reason: str) -> None:
        self.state = state
        self.history.append((state, self.attempt))
        if self.on_transition is not None:
            self.on_transition(state, self.attempt, reason)


class AllWorkersStateMachine(AMStateMachine):
    """Finished when every ``worker`` finished (PyTorch; TensorFlow fed by Flink input)."""

    def is_cluster_finished(self) -> bool:
        workers = [n for n in self.nodes if n[0] == "worker"]
        return bool(workers) and all(n in self.finished for n in workers)


class WorkerZeroStateMachine(AMStateMachine):
    """Finished when worker 0 finished (TensorFlow batch mode: ps and other workers may run forever)."""

    def is_cluster_finished(self) -> bool:
        return ("worker", 0) in self.finished
