"""Which TensorFlow task each node is, and the TF cluster it belongs to.

Nodes are ``worker`` and ``ps``; TensorFlow's jobs are ``worker``, ``ps`` and — when worker 0 is the chief
(:data:`CHIEF_PROPERTY`, set by ``TFClusterConfig.Builder.set_is_worker_zero_chief``) — ``chief``: then
worker 0 is chief 0 and workers 1..n-1 are TF workers 0..n-2. The config's builder writes the property,
the child's hooks and ``TFContext`` read the mapping here.
"""

from __future__ import annotations

from dl_on_flink.framework.context import Context

CHIEF_PROPERTY = "tf_is_worker_zero_chief"


def tf_task(ctx: Context) -> tuple[str, int]:
    """This node's TF task (type, index): worker 0 becomes chief 0 when worker 0 is the chief."""
    node_type, index = ctx.get_node_type(), ctx.get_index()
    if node_type == "worker" and ctx.get_property(CHIEF_PROPERTY, "false") == "true":
        return ("chief", 0) if index == 0 else ("worker", index - 1)
    return node_type, index


def tf_cluster(ctx: Context, spec: dict[str, list[dict]] | None = None) -> dict[str, list[str]]:
    """The TF cluster dict (job → ["host:port", ...]); placeholders ``host:0`` before rendezvous."""
    counts = ctx.get_node_type_count_map()
    chief = ctx.get_property(CHIEF_PROPERTY, "false") == "true"

    def address(node_type: str, i: int) -> str:
        if spec is None:
            return f"{ctx.get_host()}:0"
        node = spec[node_type][i]
        return f"{node['host']}:{node['props']['tf_port']}"

    workers = [address("worker", i) for i in range(counts["worker"])]
    cluster = {"chief": workers[:1], "worker": workers[1:]} if chief else {"worker": workers}
    if counts.get("ps"):
        cluster["ps"] = [address("ps", i) for i in range(counts["ps"])]
    return {job: tasks for job, tasks in cluster.items() if tasks}
