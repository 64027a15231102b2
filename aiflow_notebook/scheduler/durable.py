"""Database calls of the scheduler's loop that wait out an outage instead of losing a decision.

The loop decides in event order, and every decision is a database write. When a write fails because the
database cannot be used right now (locked by another connection for longer than its busy timeout,
read-only, a PostgreSQL server restarting), skipping it would lose the event (the cursor moves on with
the next batch) and handling later events first would break their order. So the loop waits: the same
call is retried, with backoff, until it succeeds or the scheduler is stopped. A stopped scheduler
leaves the cursor where the database has it, and its successor handles the event again.

Errors that a retry cannot cure (a constraint violation, a bug) are raised at once. Where the caller
must not wait forever (the scheduler's start-up, in the caller's thread), a deadline ends the wait with
an error that says what was waiting.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
)

from aiflow_notebook.core.errors import AIFlowError
from aiflow_notebook.core.vocabulary import DEFAULT_SCHEDULER
from aiflow_notebook.core.waiting import Deadline
from aiflow_notebook.storage.database import DatabaseUnavailableError

log = logging.getLogger(__name__)
T = TypeVar("T")

FIRST_BACKOFF_S = 0.05
MAX_BACKOFF_S = 2.0
REPORT_EVERY_S = 30.0


class SchedulerStopped(Exception):
    """The scheduler was stopped while it waited for the database; nothing of the call took effect."""


# SQLite reports a busy, full, read-only or unreachable file with these words (all OperationalError, like
# "no such table", which no retry cures).
_SQLITE_OUTAGE_WORDS = ("locked", "busy", "readonly", "read-only", "unable to open", "disk i/o", "disk is full")
# PostgreSQL: connection exception, operator intervention (shutdown, starting up), insufficient resources,
# read-only transaction, serialization failure / deadlock, lock not available.
_PG_OUTAGE_SQLSTATES = ("08", "57", "53", "25006", "40001", "40P01", "55P03")


def is_outage(exc: BaseException) -> bool:
    """A failure of the database itself (the same call can succeed later), not of the statement."""
    error = exc.__cause__ if isinstance(exc, DatabaseUnavailableError) else exc
    if not isinstance(error, DBAPIError) or isinstance(error, IntegrityError | ProgrammingError | DataError):
        return False
    if error.connection_invalidated:
        return True
    orig = error.orig
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate:
        return sqlstate.startswith(_PG_OUTAGE_SQLSTATES)
    message = str(orig).lower()
    if type(orig).__module__.startswith("sqlite3"):
        return any(word in message for word in _SQLITE_OUTAGE_WORDS)
    return isinstance(error, OperationalError | InterfaceError)  # e.g. a refused connection: no SQLSTATE


class DatabaseWaitTimeout(AIFlowError):
    """The database stayed unusable past the caller's deadline."""


def call_durably(fn: Callable[[], T], what: str, stopped: threading.Event, name: str = DEFAULT_SCHEDULER,
                 deadline: Deadline | None = None) -> T:
    """``fn()``, retried through database outages until it succeeds; ``SchedulerStopped`` if stopped first,
    ``DatabaseWaitTimeout`` once ``deadline`` would pass during the next wait (None: no deadline).

    ``what`` says what the loop is waiting for, in the log ("commit event").
    """
    outage = _Outage(what, name)
    while True:
        try:
            result = fn()
        except Exception as exc:
            if not is_outage(exc):
                raise
            outage.wait(exc, stopped, deadline)
            continue
        outage.over()
        return result


class _Outage:
    """One outage as a caller sees it: since when, when it was last reported, how long to wait next."""

    def __init__(self, what: str, name: str):
        self.what, self.name = what, name
        self.since: float | None = None
        self.reported = 0.0
        self.backoff = FIRST_BACKOFF_S

    def wait(self, exc: Exception, stopped: threading.Event, deadline: Deadline | None) -> None:
        """Report the outage (every ``REPORT_EVERY_S``) and wait the backoff, unless stopped or out of time."""
        now = time.monotonic()
        if self.since is None:
            self.since = now
        if now - self.reported >= REPORT_EVERY_S:
            self.reported = now
            log.warning("scheduler %s: cannot %s for %.0f s (%s); decisions wait, none is lost: retrying",
                        self.name, self.what, now - self.since, _first_line(exc))
        if deadline is not None and deadline.left() < self.backoff:
            raise DatabaseWaitTimeout(f"scheduler {self.name}: could not {self.what} for {now - self.since:.0f} s: "
                                      f"{_first_line(exc)}") from exc
        if stopped.wait(self.backoff):
            raise SchedulerStopped(f"scheduler {self.name} stopped while waiting to {self.what}") from exc
        self.backoff = min(MAX_BACKOFF_S, self.backoff * 2)

    def over(self) -> None:
        if self.since is not None:
            log.warning("scheduler %s: the database answers again after %.1f s; could %s",
                        self.name, time.monotonic() - self.since, self.what)


class Durable:
    """``Durable(obj, stopped)``: every method of ``obj`` called through :func:`call_durably`.

    ``deadline``: a :class:`~aiflow_notebook.core.waiting.Deadline` after which calls give up (None: they
    wait until stopped); the owner sets it while it must not block, e.g. during start-up.
    """

    def __init__(self, target: Any, stopped: threading.Event, name: str = DEFAULT_SCHEDULER):
        self._target, self._stopped, self._name = target, stopped, name
        self.deadline: Deadline | None = None

    def __getattr__(self, attribute: str) -> Any:
        value = getattr(self._target, attribute)
        if not callable(value):
            return value

        def durably(*args, **kwargs):
            return call_durably(lambda: value(*args, **kwargs), attribute.replace("_", " "), self._stopped,
                                self._name, self.deadline)

        return durably


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
