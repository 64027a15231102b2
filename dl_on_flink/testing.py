"""Helpers for tests and examples that run dl_on_flink jobs on the local mini-cluster."""

from __future__ import annotations

import sys
import time

import psutil

CHILD_MODULE = "dl_on_flink.framework.child"


def local_env(parallelism: int = 1):
    """A local StreamExecutionEnvironment whose Python workers run this interpreter."""
    from pyflink.datastream import StreamExecutionEnvironment

    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(parallelism)
    env.set_python_executable(sys.executable)
    return env


def child_processes() -> list[psutil.Process]:
    """Node child processes alive on this machine (any owner: tests check that none is left)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if CHILD_MODULE in cmdline:
            found.append(proc)
    return found


def wait_no_children(timeout: float = 15.0) -> list[psutil.Process]:
    """Wait until no node child process is alive; return the ones still alive after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in child_processes() if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)
