"""Which processes a test started, and whether any outlived what should have ended them.

"No process left behind" must look only at processes of *this* test run: on a shared machine other people's
tests run job processes, JVMs and dl_on_flink children too, and counting theirs makes a test fail for
someone else's work. A process is ours when it is

- a descendant of this process (still attached to it), or
- marked with this test session's token: :func:`mark_session` puts ``AIFLOW_TEST_SESSION`` in this
  process's environment and every process started afterwards inherits it, also one that detached
  (``setsid``, a double fork) or was orphaned, which is exactly the one that leaks;
- or, when the caller names them, one of the given pids or a member of the given process groups.

Only processes of our own user are looked at; the others' environments are not readable anyway.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from pathlib import Path

import psutil

from aiflow_notebook.core.waiting import polling

SESSION_VARIABLE = "AIFLOW_TEST_SESSION"


def mark_session() -> str:
    """Mark this process, and so every process it starts from now on, as this test session's (idempotent)."""
    return os.environ.setdefault(SESSION_VARIABLE, f"{os.getpid()}-{uuid.uuid4().hex[:12]}")


def our_processes(*, cmdline: str | None = None, home: str | Path | None = None, pids: Iterable[int] = (),
                  pgids: Iterable[int] = ()) -> list[str]:
    """Live processes of ours (see the module) as ``"pid command line"``, narrowed by what is given.

    ``pids`` / ``pgids``: only these processes / members of these process groups. Else every process of
    ours, narrowed to those whose command line contains ``cmdline`` and whose ``AIFLOW_HOME`` is ``home``.
    """
    me, uid = os.getpid(), os.getuid()
    pids, pgids = set(pids), set(pgids)
    token = os.environ.get(SESSION_VARIABLE)
    descendants = {child.pid for child in psutil.Process(me).children(recursive=True)}
    found = []
    for proc in psutil.process_iter(["pid", "uids", "cmdline", "status"]):
        try:
            if proc.pid == me or proc.info["status"] == psutil.STATUS_ZOMBIE or proc.info["uids"].real != uid:
                continue
            if pids or pgids:
                if proc.pid not in pids and os.getpgid(proc.pid) not in pgids:
                    continue
            else:
                env = None
                if proc.pid not in descendants:
                    env = proc.environ()
                    if token is None or env.get(SESSION_VARIABLE) != token:
                        continue
                text = " ".join(proc.info["cmdline"] or [])
                if cmdline is not None and cmdline not in text:
                    continue
                if home is not None and (env if env is not None else proc.environ()).get("AIFLOW_HOME") != str(home):
                    continue
            found.append(f"{proc.pid} {' '.join(proc.info['cmdline'] or [])[:300]}")
        except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
            continue
    return found


def wait_no_process_left(*, timeout: float = 20.0, **which) -> list[str]:
    """Wait up to ``timeout`` s until :func:`our_processes` (``**which``) finds none; return the survivors.

    Use it as ``assert wait_no_process_left(cmdline=...) == []``: a failure lists each survivor's pid and
    command line.
    """
    for _ in polling(timeout, 0.2):
        if not (alive := our_processes(**which)):
            return alive
    return our_processes(**which)
