"""Waiting with a deadline: the one loop that polls until something holds or time is up.

:func:`wait_until` (``af.wait_until``) polls a condition and raises a ``TimeoutError`` that says what was
awaited; :func:`polling` is the same loop for code that tries something until it works or the deadline
passes; :class:`Deadline` is the arithmetic for waits that block on something else (a socket, an event).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")


class Deadline:
    """A moment ``seconds`` from now (None: never); ``left()`` is what remains of it, never negative."""

    def __init__(self, seconds: float | None):
        self.seconds = seconds
        self.end = math.inf if seconds is None else time.monotonic() + seconds

    def left(self) -> float:
        return max(0.0, self.end - time.monotonic())

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
               interval: float = 0.2) -> T:
    """Return ``condition()``'s first truthy value; after ``timeout`` seconds raise ``TimeoutError`` naming
    ``what`` was awaited (say it with numbers: "2000 scores of batch-1")."""
    for _ in polling(timeout, interval):
        value = condition()
        if value:
            return value
    value = condition()  # once more at the deadline: what became true while we slept counts
    if value:
        return value
    name = what or getattr(condition, "__name__", "condition")
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {name}")
