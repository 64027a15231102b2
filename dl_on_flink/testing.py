"""Helpers for tests and examples that run dl_on_flink jobs on the local mini-cluster.

``CHILD_MODULE`` is in the command line of every node's child process (to find or count them).
"""

from __future__ import annotations

import sys

from dl_on_flink.framework.child import MODULE as CHILD_MODULE

__all__ = ["CHILD_MODULE", "local_env"]


def local_env(parallelism: int = 1):
    """A local StreamExecutionEnvironment whose Python workers run this interpreter."""
    from pyflink.datastream import StreamExecutionEnvironment

    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(parallelism)
    env.set_python_executable(sys.executable)
    return env
