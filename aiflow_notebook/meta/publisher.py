"""How the metadata store announces changes (model stages, datasets) without knowing the event bus.

The store calls ``publisher.publish(...)`` *after* the change is committed, so no event ever describes a
change that was rolled back. The default is :class:`RecordingPublisher`, an in-process list, which is
enough for a notebook on its own; the event bus supplies a publisher that sends onto the bus.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Protocol

from aiflow_notebook.core.vocabulary import DEFAULT_NAMESPACE


@dataclass(frozen=True)
class PublishedEvent:
    key: str
    value: str
    event_type: str
    namespace: str = DEFAULT_NAMESPACE
    sender: str | None = None


class EventPublisher(Protocol):
    def publish(
        self, key: str, value: str, event_type: str, namespace: str = DEFAULT_NAMESPACE, sender: str | None = None
    ) -> None: ...


@dataclass
class RecordingPublisher:
    """Keeps published events in memory, in order (thread-safe); ``events`` is a copy."""

    _events: list[PublishedEvent] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def publish(
        self, key: str, value: str, event_type: str, namespace: str = DEFAULT_NAMESPACE, sender: str | None = None
    ) -> None:
        with self._lock:
            self._events.append(PublishedEvent(key, value, event_type, namespace, sender))

    @property
    def events(self) -> list[PublishedEvent]:
        with self._lock:
            return list(self._events)
