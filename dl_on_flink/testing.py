"""Helpers for tests and examples that run dl_on_flink jobs on the local mini-cluster.

``CHILD_MODULE`` is in the command line of every node's child process (to find or count them).
"""

from __future__ import annotations

import sys
import threading

from dl_on_flink.framework.child import MODULE as CHILD_MODULE
from dl_on_flink.framework.supervisor import THREAD_NAME

__all__ = ["CHILD_MODULE", "live_supervisors", "local_env"]


def local_env(parallelism: int = 1):
    """A local StreamExecutionEnvironment whose Python workers run this interpreter."""
    from pyflink.datastream import StreamExecutionEnvironment

    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(parallelism)
    env.set_python_executable(sys.executable)
    return env


def live_supervisors() -> list[str]:
    """The node supervisors still running in this process (in the local mini-cluster every role runs in
    the client's process). Only a supervisor starts a node's child, and it kills that child before it
    ends: once none is left, no node child can start any more."""
    return [t.name for t in threading.enumerate() if t.name.startswith(THREAD_NAME + "-") and t.is_alive()]
