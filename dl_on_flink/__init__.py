"""Distributed TensorFlow and PyTorch roles inside Flink jobs (DESIGN §4.6).

Layers, each importing only the ones above it:

- ``dl_on_flink.framework``: application master, node runner, state machine, child process, row codec,
  data channel, address book. Knows nothing of PyTorch, TensorFlow or Flink.
- ``dl_on_flink.operator``: places the roles of a cluster into a PyFlink job.
- ``dl_on_flink.pytorch`` / ``dl_on_flink.tensorflow``: a config builder, a context and a state-machine
  variant per framework.
"""

from dl_on_flink.errors import ClusterFailedError, DLOnFlinkError, NodeFailedError

__all__ = ["ClusterFailedError", "DLOnFlinkError", "NodeFailedError"]
