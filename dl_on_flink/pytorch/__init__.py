"""PyTorch on Flink: ``PyTorchClusterConfig``, ``train``, ``inference``, ``PyTorchContext``.

``PyTorchContext`` (and the dataset/writer) are imported lazily: the Flink operators that host the nodes
unpickle the cluster config, and should not pay for importing torch — only the child processes do.
"""

from typing import Any

from dl_on_flink.pytorch.cluster_config import PyTorchClusterConfig
from dl_on_flink.pytorch.utils import inference, train

__all__ = ["FlinkDataset", "FlinkWriter", "PyTorchClusterConfig", "PyTorchContext", "inference", "train"]


def __getattr__(name: str) -> Any:
    if name in ("PyTorchContext", "FlinkDataset", "FlinkWriter"):
        from dl_on_flink.pytorch import context

        return getattr(context, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
