"""TFClusterConfig: TensorFlow workers (worker 0 optionally the chief) and parameter servers."""

from __future__ import annotations

from dl_on_flink.errors import ConfigError
from dl_on_flink.framework.cluster import ClusterConfig
from dl_on_flink.framework.hooks import NodeHooks
from dl_on_flink.framework.state_machine import AllWorkersStateMachine, AMStateMachine, WorkerZeroStateMachine
from dl_on_flink.tensorflow.hooks import TFHooks
from dl_on_flink.tensorflow.tasks import CHIEF_PROPERTY


class TFClusterConfig(ClusterConfig):
    """Build with ``TFClusterConfig.new_builder().set_worker_count(n).set_ps_count(m).set_node_entry(fn).build()``.

    Batch mode (no input): the cluster is finished when worker 0's entry returns — ps and the other
    workers may run forever (``server.join()``) and are stopped then. Fed by Flink input: when every
    worker finished.
    """

    framework = "tensorflow"

    def node_hooks(self) -> NodeHooks:
        return TFHooks()

    def state_machine(self, has_input: bool) -> AMStateMachine:
        cls = AllWorkersStateMachine if has_input else WorkerZeroStateMachine
        return cls(self.get_node_type_count_map(), self.get_max_failover(), has_input=has_input)

    def validate(self) -> None:
        counts = self.get_node_type_count_map()
        unknown = set(counts) - {"worker", "ps"}
        if unknown or counts.get("worker", 0) < 1:
            raise ConfigError(f"a TensorFlow cluster has workers (>= 1) and optionally ps, got {counts}")
        if counts.get("ps", 0) and self.is_worker_zero_chief() and counts["worker"] < 2:
            raise ConfigError("parameter-server training needs a worker besides the chief (set_worker_count(>= 2))")

    def is_worker_zero_chief(self) -> bool:
        return self.bool_property(CHIEF_PROPERTY)

    class Builder(ClusterConfig.Builder):
        def set_worker_count(self, count: int) -> TFClusterConfig.Builder:
            """Number of workers (node type "worker")."""
            return self.add_node_type("worker", count)

        def set_ps_count(self, count: int) -> TFClusterConfig.Builder:
            """Number of parameter servers (node type "ps")."""
            return self.add_node_type("ps", count)

        def set_is_worker_zero_chief(self, is_chief: bool) -> TFClusterConfig.Builder:
            """Worker 0 is TF task ``chief`` 0 and workers 1..n-1 are ``worker`` 0..n-2 in TF_CONFIG (the
            coordinator of parameter-server training, or MultiWorkerMirroredStrategy's chief)."""
            return self.set_property(CHIEF_PROPERTY, str(bool(is_chief)).lower())
