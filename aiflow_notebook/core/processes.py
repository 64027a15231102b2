"""Process groups: what we start in a session of its own, we end as a whole, politely first.

Jobs, servers, JupyterLab and dl-on-flink roles each run in a process group of their own
(``start_new_session=True``), so that a stop reaches every process they started. :func:`end_group` is the
one way to end such a group: SIGTERM to all of it, a grace period, SIGKILL to whatever is left, and a wait
until none of it remains.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable

from aiflow_notebook.core.waiting import Deadline, polling


def signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to process group ``pgid``; False when the group is gone (or is not ours to signal)."""
    if pgid <= 0:  # 0 and negatives would mean our own group, or every process we may signal
        raise ValueError(f"not a process group id: {pgid}")
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def group_alive(pgid: int, leader: subprocess.Popen | None = None) -> bool:
    """Whether any process of group ``pgid`` is left (reaping ``leader`` first, when it is our child: an
    unreaped leader would keep the group alive as a zombie)."""
    if leader is not None:
        leader.poll()
    return signal_group(pgid, 0)


def wait_group_gone(pgid: int, seconds: float, leader: subprocess.Popen | None = None) -> bool:
    """Wait up to ``seconds`` until no process of group ``pgid`` is left; True if none is."""
    for _ in polling(seconds, 0.05):
        if not group_alive(pgid, leader):
            return True
    return not group_alive(pgid, leader)


def end_group(pgid: int, grace: float, *, leader: subprocess.Popen | None = None,
              before_kill: Callable[[], None] | None = None, settle: float = 10.0,
              ended: Callable[[], bool] | None = None) -> bool:
    """SIGTERM every process of group ``pgid``, SIGKILL what is left after ``grace`` seconds, then wait up to
    ``settle`` seconds until the group is gone. ``before_kill`` runs just before the SIGKILL (e.g. to ask a
    hung process for its stacks). ``ended``: what the grace period waits for when it is not the whole group
    (the job a launcher runs, say); once it holds, what is left of the group is killed at once. True when
    the group (or ``ended``) ended within the grace period."""
    if not signal_group(pgid, signal.SIGTERM):
        if leader is not None:
            leader.poll()
        return True
    if ended is None:
        if wait_group_gone(pgid, grace, leader):
            return True
        in_time = False
    else:
        in_time = any(ended() for _ in polling(grace, 0.05)) or ended()
    if not in_time and before_kill is not None:
        before_kill()
    signal_group(pgid, signal.SIGKILL)
    wait_group_gone(pgid, settle, leader)
    return in_time


def end_process(process: subprocess.Popen, grace: float, settle: float = 10.0) -> bool:
    """:func:`end_group` for a child started with ``start_new_session=True`` (its pid is its group's id);
    the child is reaped. True when it ended within the grace period."""
    ended = end_group(process.pid, grace, leader=process, settle=settle)
    try:
        process.wait(Deadline(settle).left())
    except subprocess.TimeoutExpired:
        pass
    return ended
