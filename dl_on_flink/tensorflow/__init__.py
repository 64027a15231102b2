"""TensorFlow on Flink: ``TFClusterConfig``, ``train``, ``inference``, ``TFContext``.

``TFContext`` is imported lazily: the Flink operators that host the nodes unpickle the cluster config and
should not import TensorFlow — only the child processes do.
"""

from typing import Any

from dl_on_flink.tensorflow.cluster_config import TFClusterConfig
from dl_on_flink.tensorflow.utils import inference, train

__all__ = ["TFClusterConfig", "TFContext", "inference", "train"]


def __getattr__(name: str) -> Any:
    if name in ("TFContext", "TFRowWriter"):
        from dl_on_flink.tensorflow import context

        return getattr(context, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
