"""Role and cluster status, published through a hook.

The application master reports every state change of the cluster (``INIT``, ``RUNNING``, ``FAILOVER``,
``FINISHED``, ``FAILED``; context: attempt, reason) and of each node (``RUNNING`` — its child process
started, ``FINISHED``, ``FAILED``, ``NONE`` — no child; context: attempt) to a :class:`StatusPublisher`.
The default logs them; the aiflow event bus plugs in later as another publisher
(``ClusterConfig.Builder.set_status_publisher``), without dl_on_flink importing it. Publishers run inside
the AM's operator, so they must be picklable.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

CLUSTER_STATUS = "DL_CLUSTER_STATUS"
NODE_STATUS = "DL_NODE_STATUS"

log = logging.getLogger("dl_on_flink.status")


@dataclass(frozen=True)
class StatusEvent:
    """``key`` is ``<job>`` for the cluster and ``<job>.<node_type>.<index>`` for a node."""

    key: str
    value: str
    event_type: str
    context: dict[str, Any] = field(default_factory=dict)


class StatusPublisher(Protocol):
    def __call__(self, event: StatusEvent) -> None: ...


def logging_publisher(event: StatusEvent) -> None:
    """The default publisher: one INFO log line per status change."""
    log.info("%s %s=%s %s", event.event_type, event.key, event.value, event.context or "")
