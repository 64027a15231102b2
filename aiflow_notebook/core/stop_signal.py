"""A stop signal (SIGTERM, SIGINT) as a flag that a main loop looks at.

The handler only sets an attribute. It must not take a lock: a handler that called
``threading.Event.set()`` deadlocked a job process when a second SIGTERM arrived while the first one's
handler held the event's lock (the handler runs in the main thread, on top of whatever it was doing). A job
gets SIGTERM twice by design: once through its process group and once forwarded by its launcher.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterable

from aiflow_notebook.core.waiting import Deadline

POLL_S = 0.05  # how soon wait() notices a signal


class StopSignal:
    """Installs itself as the handler of ``signals`` (from the main thread); ``restore()`` puts back the
    previous handlers."""

    def __init__(self, signals: Iterable[int] = (signal.SIGTERM,)) -> None:
        self._requested = False
        self._previous = {sig: signal.signal(sig, self._handle) for sig in signals}

    def _handle(self, _signum, _frame) -> None:
        self._requested = True

    @property
    def requested(self) -> bool:
        return self._requested

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True as soon as a stop was requested (at most ``POLL_S`` late)."""
        deadline = Deadline(seconds)
        while not self._requested:
            if deadline.passed:
                return False
            time.sleep(min(POLL_S, deadline.left()))
        return True

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
