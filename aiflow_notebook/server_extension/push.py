"""The push channel: every bus event, forwarded into jupyter_server's own event bus.

A browser subscribes through jupyter_server's authenticated WebSocket ``/api/events/subscribe``
(JupyterLab: ``app.serviceManager.events.stream``) and receives one message per bus event, with
``schema_id`` = :data:`BUS_EVENT_SCHEMA_ID`, so the extension needs no WebSocket of its own and no
authentication of its own.

One listener thread with its own socket follows the bus from the moment the server starts. jupyter_events
hands each emitted event to its WebSocket subscribers as asyncio tasks, so events are emitted on the
server's event loop: the listener queues them and wakes the loop once per burst (``call_soon_threadsafe``),
and the loop emits everything queued. If the loop falls far behind, the oldest queued events are dropped
(and counted): the push channel tells a page that something changed; the REST API (``GET events``) is
the record to catch up from.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from typing import Any

from aiflow_notebook.events import Event, EventClient
from aiflow_notebook.events.errors import EventServerUnavailableError
from aiflow_notebook.server_extension.service import event_dict

log = logging.getLogger(__name__)

BUS_EVENT_SCHEMA_ID = "https://aiflow-notebook.github.io/events/bus-event"
MAX_QUEUED = 10_000

BUS_EVENT_SCHEMA: dict[str, Any] = {
    "$id": BUS_EVENT_SCHEMA_ID,
    "version": "1",
    "title": "aiflow bus event",
    "personal-data": True,
    "description": "One event of the aiflow event bus (job and run status, model stages, datasets, user "
                   "events), as stored: its version is its place in the bus's global order.",
    "type": "object",
    "required": ["version", "key", "value", "event_type", "namespace", "create_time"],
    "properties": {
        "version": {"type": "integer", "description": "the event's place in the bus's global order"},
        "key": {"type": "string", "description": "e.g. <workflow>.<job> for a job status, a model name"},
        "value": {"type": "string", "description": "e.g. RUNNING, or a model version as JSON"},
        "event_type": {"type": "string", "description": "e.g. JOB_STATUS_CHANGED, MODEL_VALIDATED"},
        "namespace": {"type": "string", "description": "the event's namespace"},
        "sender": {"type": ["string", "null"], "description": "who sent it (scheduler, model_center, ...)"},
        "create_time": {"type": "number", "description": "when the bus stored it, seconds since the epoch"},
        "run_id": {"type": ["integer", "null"], "description": "the workflow run a status event belongs to"},
    },
}

_FIELDS = tuple(BUS_EVENT_SCHEMA["properties"])


class BusForwarder:
    """Follows the bus on one listener thread (its own socket) and emits each event into ``event_logger``
    on ``loop``. ``start()`` registers the schema and begins at the bus's latest version; ``stop()``
    ends the listener."""

    def __init__(self, client: EventClient, event_logger, loop: asyncio.AbstractEventLoop):
        self.client, self.event_logger, self.loop = client, event_logger, loop
        self.dropped = 0  # events dropped because the loop fell behind
        self._queue: deque[dict[str, Any]] = deque()
        self._lock = threading.Lock()
        self._listener = None
        self._stopping = threading.Event()
        self.following = threading.Event()  # set once the listener follows the bus

    def start(self) -> BusForwarder:
        """Register the schema and begin following the bus from its latest version, on a thread of its own:
        a remote bus that is down when the server starts delays the push channel, not the server."""
        if BUS_EVENT_SCHEMA_ID not in self.event_logger.schemas:
            self.event_logger.register_event_schema(BUS_EVENT_SCHEMA)
        threading.Thread(target=self._follow_from_now, name="aiflow-push-start", daemon=True).start()
        return self

    def stop(self) -> None:
        with self._lock:
            self._stopping.set()
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop()

    def _follow_from_now(self) -> None:
        while not self._stopping.is_set():
            try:
                since = self.client.latest_version()  # waits up to the client's deadline
            except EventServerUnavailableError as exc:
                log.warning("aiflow: the event bus does not answer yet, so bus events are not pushed: %s", exc)
                continue
            except Exception as exc:  # noqa: BLE001 - e.g. the client was closed at shutdown
                if not self._stopping.is_set():
                    log.error("aiflow: cannot follow the event bus, so bus events are not pushed: %s", exc)
                return
            with self._lock:
                if not self._stopping.is_set():
                    self._listener = self.client.listen("*", since_version=since, callback=self._on_event)
                    self.following.set()
            return

    @property
    def error(self) -> BaseException | None:
        """Why the listener stopped following the bus, if it did."""
        return getattr(self._listener, "error", None)

    def _on_event(self, event: Event) -> None:
        """On the listener thread: queue the event; wake the loop if the queue was empty. Never raises
        (a raising callback would stop the listener)."""
        data = event_dict(event)
        data = {field: data[field] for field in _FIELDS}
        with self._lock:
            wake = not self._queue
            if len(self._queue) >= MAX_QUEUED:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append(data)
        if wake:
            try:
                self.loop.call_soon_threadsafe(self._emit_queued)
            except RuntimeError:  # the loop is closed: the server is going down
                pass

    def _emit_queued(self) -> None:
        """On the server's loop: emit everything queued."""
        with self._lock:
            batch, self._queue = self._queue, deque()
        for data in batch:
            try:
                self.event_logger.emit(schema_id=BUS_EVENT_SCHEMA_ID, data=data)
            except Exception:  # noqa: BLE001 - one odd event must not stop the others
                log.exception("aiflow: could not forward bus event %s", data.get("version"))
