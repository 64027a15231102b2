"""A value derived from a source and kept while the source stays the same: a cache, never a second copy of
the state it is derived from.

Why: the connection to an ``aiflow server`` is held in one place (``events.session``); the metadata store
and the scheduler client of that connection are built from its client. Keeping them in a :class:`Derived`
keyed on that client means the connection alone decides: when it changes, the derived value is rebuilt on
the next ask, and there is no flag of its own to get out of step.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

S = TypeVar("S")
V = TypeVar("V")
_NOTHING = object()


class Derived(Generic[S, V]):
    """``get(source)`` returns ``build(source)``, built once per source (compared by identity, then by
    equality); a new source replaces the value, handing the old one to ``drop`` when given. Thread-safe."""

    def __init__(self, build: Callable[[S], V], drop: Callable[[V], None] | None = None):
        self._build, self._drop = build, drop
        self._lock = threading.Lock()
        self._source: object = _NOTHING
        self._value: V | None = None

    def get(self, source: S) -> V:
        with self._lock:
            if not self._holds(source):
                if self._source is not _NOTHING and self._drop is not None:
                    self._drop(self._value)
                self._source, self._value = source, self._build(source)
            return self._value

    def put(self, source: S, value: V) -> V:
        """Keep ``value``, built elsewhere, for ``source`` (the value it had is not dropped)."""
        with self._lock:
            self._source, self._value = source, value
            return value

    def forget(self) -> None:
        """Build anew on the next ``get`` (the value it had is not dropped)."""
        with self._lock:
            self._source, self._value = _NOTHING, None

    def _holds(self, source: object) -> bool:
        return self._source is source or (self._source is not _NOTHING and self._source == source)
