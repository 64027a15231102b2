"""PyTorchClusterConfig: ``world_size`` workers that form one ``torch.distributed`` (gloo) group."""

from __future__ import annotations

from dl_on_flink.errors import ConfigError
from dl_on_flink.framework.cluster import ClusterConfig
from dl_on_flink.framework.hooks import NodeHooks
from dl_on_flink.framework.state_machine import AllWorkersStateMachine, AMStateMachine
from dl_on_flink.pytorch.hooks import PyTorchHooks


class PyTorchClusterConfig(ClusterConfig):
    """Build with ``PyTorchClusterConfig.new_builder().set_world_size(n).set_node_entry(fn).build()``.

    Every node is a ``worker``; rank = index. The cluster is finished when every worker's entry returned.
    """

    framework = "pytorch"

    def node_hooks(self) -> NodeHooks:
        return PyTorchHooks()

    def state_machine(self, has_input: bool) -> AMStateMachine:
        return AllWorkersStateMachine(self.get_node_type_count_map(), self.get_max_failover(), has_input=has_input)

    def validate(self) -> None:
        if set(self.get_node_type_count_map()) != {"worker"}:
            raise ConfigError(
                f"a PyTorch cluster has only workers (set_world_size(n)), got {self.get_node_type_count_map()}"
            )

    def get_world_size(self) -> int:
        return self.get_node_count("worker")

    class Builder(ClusterConfig.Builder):
        def set_world_size(self, world_size: int) -> PyTorchClusterConfig.Builder:
            """The number of processes in the PyTorch cluster (node type "worker")."""
            if not isinstance(world_size, int) or world_size < 1:
                raise ConfigError(f"world_size must be an int >= 1, got {world_size!r}")
            return self.add_node_type("worker", world_size)
