"""Helpers for tests and examples that run dl_on_flink jobs on the local mini-cluster."""

from __future__ import annotations

import sys

CHILD_MODULE = "dl_on_flink.framework.child"  # in the command line of a node's child process


def local_env(parallelism: int = 1):
    """A local StreamExecutionEnvironment whose Python workers run this interpreter."""
    from pyflink.datastream import StreamExecutionEnvironment

    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(parallelism)
    env.set_python_executable(sys.executable)
    return env
