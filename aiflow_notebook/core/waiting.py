"""Waiting with a deadline: the one loop that polls until something holds or time is up.

:func:`wait_until` (``af.wait_until``) polls a condition and raises a ``TimeoutError`` that says what was
awaited, or a :class:`HopelessWaitError` as soon as what it waits for can no longer come (its ``hopeless``
check says why); :func:`polling` is the same loop for code that tries something until it works or the
deadline passes; :class:`Deadline` is the arithmetic for waits that block on something else (a socket, an
event).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from aiflow_notebook.core.errors import AIFlowError

T = TypeVar("T")


class HopelessWaitError(AIFlowError):
    """What a wait awaited can no longer come, so it stopped at once instead of running out its timeout;
    the message says what was awaited and why it cannot come (e.g. the job that failed, with its error)."""


class Deadline:
    """A moment ``seconds`` from now (None: never); ``left()`` is what remains of it, never negative."""

    def __init__(self, seconds: float | None):
        self.seconds = seconds
        self.end = math.inf if seconds is None else time.monotonic() + seconds

    def left(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def restart(self, seconds: float | None) -> None:
        """Move the deadline to ``seconds`` from now (None: never); cheaper than a new one in a hot loop."""
        self.seconds = seconds
        self.end = math.inf if seconds is None else time.monotonic() + seconds

    @property
    def passed(self) -> bool:
        return time.monotonic() >= self.end

    def sleep(self, seconds: float, stop: threading.Event | None = None) -> bool:
        """Sleep ``seconds`` but never past the deadline (nor past ``stop``, when set); False once it passed
        or ``stop`` is set."""
        pause = min(seconds, self.left())
        if stop is not None:
            if stop.wait(pause):
                return False
        elif pause > 0:
            time.sleep(pause)
        return not self.passed


def polling(seconds: float | None, interval: float = 0.2, stop: threading.Event | None = None, *,
            growth: float = 1.0, max_interval: float | None = None) -> Iterator[float]:
    """Yield at once, then every ``interval`` seconds until ``seconds`` have passed (or ``stop`` is set); each
    yield gives the seconds left. ``for _ in polling(8): if done(): break`` tries for at most 8 s.

    ``growth`` > 1 stretches each pause by that factor, up to ``max_interval``: quick to notice what happens
    soon, cheap when it takes long (a peer that is still starting up)."""
    deadline = Deadline(seconds)
    longest = math.inf if max_interval is None else max_interval
    while True:
        yield deadline.left()
        if not deadline.sleep(interval, stop):
            return
        interval = min(interval * growth, longest)


def wait_until(condition: Callable[[], T], timeout: float = 60.0, what: str | None = None,
               interval: float = 0.2, hopeless: Callable[[], str | None] | None = None) -> T:
    """Return ``condition()``'s first truthy value; after ``timeout`` seconds raise ``TimeoutError`` naming
    ``what`` was awaited (say it with numbers: "2000 scores of batch-1").

    ``hopeless``: asked after each check that fails; it returns None while what is awaited may still come,
    else the reason it never will. Then the wait stops at once with :class:`HopelessWaitError` naming
    ``what`` and that reason (the condition is checked once more first). The work a wait is about usually
    knows: pass a workflow run's check, ``af.wait_until(..., hopeless=run.hopeless("serve"))``, and the wait
    ends when that run ended or a job that leads to ``serve`` failed, with the job's error, instead of
    waiting out its timeout. Any callable will do: this module knows nothing about runs."""
    name = what or getattr(condition, "__name__", "condition")
    for _ in polling(timeout, interval):
        value = condition()
        if value:
            return value
        reason = hopeless() if hopeless is not None else None
        if reason:
            value = condition()  # what became true meanwhile counts: the work may have ended right after it
            if value:
                return value
            raise HopelessWaitError(f"gave up waiting for {name}: {reason}")
    value = condition()  # once more at the deadline: what became true while we slept counts
    if value:
        return value
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {name}")
