"""Errors raised by dl_on_flink.

Every error names the node (type and index) and the attempt at fault where one is known, and carries the
tail of that node's output, so a failed Flink job says *why* without a trip to the TaskManager logs.
"""

from __future__ import annotations


class DLOnFlinkError(Exception):
    """Base class of every dl_on_flink error."""


class ConfigError(DLOnFlinkError, ValueError):
    """A cluster config, schema or argument that cannot work (raised before any process starts)."""


class CodecError(DLOnFlinkError, ValueError):
    """A row that does not fit its schema (names the field and the value)."""


class ChannelError(DLOnFlinkError):
    """The data channel between an operator and its child process broke."""


class RendezvousError(DLOnFlinkError):
    """A node could not reach the application master or the cluster did not assemble in time."""


class NodeFailedError(DLOnFlinkError):
    """One node's entry failed (non-zero exit or lost heartbeat)."""

    def __init__(self, node_type: str, index: int, attempt: int, reason: str, tail: str = "") -> None:
        self.node_type, self.index, self.attempt, self.reason, self.tail = node_type, index, attempt, reason, tail
        message = f"{node_type} {index} (attempt {attempt}) {reason}"
        if tail:
            message += f"\n--- last output of {node_type} {index} ---\n{tail.rstrip()}"
        super().__init__(message)


class ClusterFailedError(DLOnFlinkError):
    """The cluster gave up: a node failed more often than max_failover allows (the message says which)."""


class ClusterCancelledError(DLOnFlinkError):
    """Flink cancelled the job: the cluster stopped at once (no failover), every node child was killed."""
