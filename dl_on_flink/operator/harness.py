"""Noticing, from inside a PyFlink function, that Flink cancelled the job.

A role's PyFlink call lasts as long as its cluster, so when Flink cancels the job nothing reaches the
Python function: no exception, no ``close()``. In a separate Python worker process (a real cluster) the
TaskManager ends that process and the node children follow it (they watch a pipe from it), but in the
local mini-cluster the functions run in *loopback* mode, as threads of the client process itself (the
notebook kernel, the job process): it does not end, so without help the AM went on failing over and the
node children lived as long as the client.

What does change on cancel is Beam's SDK harness that runs the function: Flink closes its control
stream, and the harness's ``run()`` loop ends and marks it not ``_alive`` (within about a second). The
harness is found on the calling thread's stack — the bundle that calls the function runs under
``SdkHarness._execute`` — so this works only when called on PyFlink's thread (``open``, ``flat_map``,
``process_element``). It reads a private attribute of Beam (2.61, pinned through apache-flink): when it
is not found, :func:`cancellation_probe` answers "never cancelled" and the old behaviour remains
(children end with the worker process).
"""

from __future__ import annotations

import sys
from collections.abc import Callable


def cancellation_probe() -> Callable[[], bool]:
    """A cheap callable, usable from any thread, that says whether the job running us was cancelled.

    Call this on PyFlink's own thread; the returned callable may then be polled from anywhere.
    """
    harness = _find_harness()
    if harness is None or not hasattr(harness, "_alive"):
        return _never
    return lambda: not harness._alive


def _never() -> bool:
    return False


def _find_harness():
    frame = sys._getframe(1)
    while frame is not None:
        candidate = frame.f_locals.get("self")
        if type(candidate).__name__ == "SdkHarness":
            return candidate
        frame = frame.f_back
    return None
