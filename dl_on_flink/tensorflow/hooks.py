"""TensorFlow in each child: a gRPC server on a port the process binds itself, then ``TF_CONFIG``.

TF_CONFIG must list every task's ``host:port`` before a strategy starts, yet reserving a port and
releasing it for TensorFlow to bind later is a race (another process may take it meanwhile). Instead,
before rendezvous each child starts its TensorFlow server on port 0 — the kernel picks a free port at
bind time and the server keeps it — with a placeholder cluster, and advertises the bound port:

- **parameter-server mode** (``ps`` nodes present): ps and worker tasks start a ``tf.distribute.Server``;
  the coordinator (the chief, worker 0) sends the real cluster to them when it connects, and binds its
  own port the same way (port 0 in its TF_CONFIG entry). The server is ``TFContext.get_tf_server()``
  (do not create a second one on the same port: ``server.join()`` it).
- **collective mode** (no ps: MultiWorkerMirroredStrategy): the eager context's collective server is
  started on port 0, with the collective settings MultiWorkerMirroredStrategy will ask for; when the
  entry creates the strategy from TF_CONFIG, TensorFlow updates that running server with the real
  cluster instead of binding again.

  That update (``GrpcServer::UpdateServerDef``) replaces the server's collective executor manager, and
  each worker does it when *its* entry creates the strategy. A worker that got there first sends its
  first collective request (the broadcast of the first variable's initial value) to a peer still on
  the placeholder cluster: the peer's old manager takes it, the update then throws it away, and both
  wait for each other forever (no error, no CPU). TensorFlow's own start-up barriers do not run here
  (the coordination service needs a context not yet initialised, and the strategy skips its health-check
  barrier when a coordination service is configured). So every update is followed by a barrier through
  the AM: no worker leaves ``MultiWorkerMirroredStrategy()`` before every worker has updated its server.
"""

from __future__ import annotations

import json
import os

from dl_on_flink.framework.context import Context
from dl_on_flink.framework.hooks import NodeHooks
from dl_on_flink.tensorflow.tasks import tf_cluster, tf_task

SERVER_KEY = "_tf_server"


class TFHooks(NodeHooks):
    def prepare(self, ctx: Context) -> dict[str, str]:
        import tensorflow as tf

        # intra-op pools as small as asked; inter-op pools need >= 2 threads, or a function blocked on a
        # remote tensor (parameter-server training) holds the only thread its producer needs
        threads = int(ctx.get_property("num_threads", "1"))
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(max(2, threads))
        task_type, task_index = tf_task(ctx)
        placeholder = tf.train.ClusterSpec(tf_cluster(ctx))
        if "ps" in ctx.get_node_type_count_map():
            if task_type == "chief":
                return {"tf_port": "0"}  # the coordinator binds its port when it connects to the cluster
            server = tf.distribute.Server(placeholder, job_name=task_type, task_index=task_index, start=True)
            ctx._state[SERVER_KEY] = server
            return {"tf_port": server.target.rsplit(":", 1)[1]}
        port = _start_collective_server(placeholder, task_type, task_index)
        _hold_each_update_until_every_worker_updated(ctx)
        return {"tf_port": str(port)}

    def setup(self, ctx: Context) -> None:
        task_type, task_index = tf_task(ctx)
        os.environ["TF_CONFIG"] = json.dumps(
            {"cluster": tf_cluster(ctx, ctx.get_cluster_spec()), "task": {"type": task_type, "index": task_index}}
        )


def _start_collective_server(placeholder, task_type: str, task_index: int) -> int:
    import psutil
    from tensorflow.core.protobuf import tensorflow_server_pb2
    from tensorflow.python.distribute import multi_worker_util
    from tensorflow.python.eager import context

    eager = context.context()
    eager.configure_collective_ops(
        collective_leader=multi_worker_util.collective_leader(placeholder, task_type, task_index),
        scoped_allocator_enabled_ops=("CollectiveReduce",),
        device_filters=(f"/job:{task_type}/task:{task_index}",),
    )
    before = _listening_ports(psutil)
    eager.enable_collective_ops(
        tensorflow_server_pb2.ServerDef(
            cluster=placeholder.as_cluster_def(), job_name=task_type, task_index=task_index, protocol="grpc"
        )
    )
    eager.ensure_initialized()
    new = _listening_ports(psutil) - before
    if len(new) != 1:
        raise RuntimeError(f"could not tell which port TensorFlow's server bound (new listening ports: {new})")
    return new.pop()


def _hold_each_update_until_every_worker_updated(ctx: Context) -> None:
    """After each later ``enable_collective_ops`` (the strategy adopting the real cluster), wait at a
    barrier until every worker did the same, so that no collective reaches a server before its update
    (see the module docstring)."""
    import itertools

    from tensorflow.python.eager import context

    eager = context.context()
    update = eager.enable_collective_ops
    updates = itertools.count(1)

    def enable_collective_ops(server_def) -> None:
        update(server_def)
        ctx._barrier(f"tf-collective-server-update-{next(updates)}")

    eager.enable_collective_ops = enable_collective_ops


def _listening_ports(psutil) -> set[int]:
    return {
        c.laddr.port for c in psutil.Process().net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN
    }
