"""A listener: replay from the log, then follow live publications, with nothing missed or repeated.

This is the zguide's Clone pattern with the log's global version as the sequence number. The listener
keeps one number, ``last_version``: every matching event up to it has been delivered. Then:

1. Subscribe first (a SUB socket on the server's publish address), and make sure the subscription is live
   before trusting it: ask the server to SYNC (it publishes a HEARTBEAT) until a publication arrives.
2. A HEARTBEAT says the latest version; if it is above ``last_version``, something was missed (the
   listener is new, or updates were lost): replay from the log, page by page, up to the listing's
   ``as_of``.
3. A BATCH carries the contiguous versions ``first..last`` of one commit. If ``first`` is above
   ``last_version + 1`` there is a gap: replay first. Otherwise deliver its matching events above
   ``last_version`` and move ``last_version`` to ``last`` (the events in between did not match).
4. Silence for three heartbeat intervals means the server is gone or restarted: ask it again for its
   publish address (it may have changed), re-subscribe, and go to 1. Requests retry until stopped.

Every event is delivered in version order, exactly once per listener, across slow joins, dropped updates
and server restarts. ``callback(event)`` runs on the listener's thread. If it raises, the listener logs
the exception with the event's key and version and **stops**: ``error`` holds the exception,
``failed_event`` the event, and ``last_version`` stays below it, so the event is not counted as delivered
and nothing after it is delivered either. Skipping the event would break "in order, no gaps"; retrying it
in a loop would spin on a bug. To carry on once the cause is fixed, listen again with
``since_version=listener.last_version``: the failed event is delivered first.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
from collections.abc import Callable, Iterator

import zmq

from aiflow_notebook.core.waiting import Deadline
from aiflow_notebook.events import protocol
from aiflow_notebook.events.errors import EventError, ProtocolError
from aiflow_notebook.events.event import Event, EventFilter
from aiflow_notebook.events.protocol import Kind
from aiflow_notebook.events.wire import Stopped, Wire

log = logging.getLogger(__name__)


class _CallbackFailed(Exception):
    """Unwinds the listener thread after the user's callback raised (the error is kept on the listener)."""

SYNC_WAITS = (0.01, 0.02, 0.05, 0.1, 0.2)  # seconds to wait for a publication after each SYNC
SILENT_HEARTBEATS = 3  # missed heartbeats before the listener reconnects


class Listener:
    """A running ``EventClient.listen``: stop it with :meth:`stop`. It speaks through the client's ``wire``
    (its requests on a socket of the listener's thread)."""

    def __init__(self, wire: Wire, flt: EventFilter, since_version: int,
                 callback: Callable[[Event], None] | None):
        self.wire = wire
        self.filter = dataclasses.replace(flt, since_version=0)
        self.last_version = since_version  # every matching event up to here has been delivered
        self.callback = callback
        self.delivered = 0
        self.replays = 0  # how often the log was read to fill a gap (for tests and curiosity)
        self.error: BaseException | None = None  # what the callback raised; the listener stopped on it
        self.failed_event: Event | None = None  # the event it raised on (not counted as delivered)
        self._queue: queue.SimpleQueue[Event] | None = queue.SimpleQueue() if callback is None else None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="aiflow-event-listener", daemon=True)

    def start(self) -> Listener:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop listening; returns when the listener thread has ended (or ``timeout`` passed)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the listener has caught up with the log and follows live updates.

        False after ``timeout``, or at once if the callback failed (see ``error``)."""
        return self._ready.wait(timeout) and self.error is None

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the listener thread to end (after :meth:`stop`, or a failed callback); True if it has."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def get(self, timeout: float | None = None) -> Event:
        """The next event (only without a callback); raises ``TimeoutError`` after ``timeout`` seconds."""
        if self._queue is None:
            raise EventError("this listener delivers to its callback; get() is for listeners without one")
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no event within {timeout}s") from None

    def __iter__(self) -> Iterator[Event]:
        while not self._stop.is_set():
            try:
                yield self.get(timeout=0.1)
            except TimeoutError:
                continue

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- the listener thread -------------------------------------------------------------------------

    def _run(self) -> None:
        self._sub: zmq.Socket | None = None
        self._endpoint: str | None = None
        try:
            while not self._stop.is_set():
                try:
                    self._follow()
                except (Stopped, _CallbackFailed):
                    break
                except (EventError, zmq.ZMQError) as exc:
                    log.warning("event listener on %s: %s; reconnecting", self.wire.url, exc)
                    self._stop.wait(0.5)
                except Exception:  # noqa: BLE001 - a listener must not die silently
                    log.exception("event listener on %s failed; reconnecting", self.wire.url)
                    self._stop.wait(0.5)
        finally:
            if self._sub is not None:
                self._sub.close(linger=0)
            self.wire.drop_channel()
            if self.error is not None:
                self._ready.set()  # wake wait_ready(), which then answers False

    def _follow(self) -> None:
        welcome = self.wire.ask_welcome(None, self._stop)
        self._subscribe(welcome["publish"])
        self._await_publication()
        self._ready.set()
        silence = SILENT_HEARTBEATS * welcome["heartbeat_interval"] + 0.5
        quiet = Deadline(silence)  # renewed by every publication
        while not self._stop.is_set():
            if self._sub.poll(100):
                self._on_publication(self._sub.recv())
                quiet = Deadline(silence)
            elif quiet.passed:
                log.info("no update from %s for %.1fs; reconnecting", self._endpoint, silence)
                return

    def _subscribe(self, endpoint: str) -> None:
        if self._sub is not None and endpoint == self._endpoint:
            return  # same address: ZeroMQ reconnects and re-subscribes by itself
        if self._sub is not None:
            self._sub.close(linger=0)
        sub = self.wire.context.socket(zmq.SUB)
        sub.linger = 0
        sub.rcvhwm = 100_000
        if self.wire.auth is not None:
            self.wire.auth.apply(sub)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(endpoint)
        self._sub, self._endpoint = sub, endpoint

    def _await_publication(self) -> None:
        """Ask for HEARTBEATs until one arrives: from then on the subscription sees every publication."""
        attempt = 0
        while not self._stop.is_set():
            self.wire.request(Kind.SYNC, b"", None, self._stop)
            if self._sub.poll(int(SYNC_WAITS[min(attempt, len(SYNC_WAITS) - 1)] * 1000)):
                self._on_publication(self._sub.recv())
                return
            attempt += 1
        raise Stopped()

    def _on_publication(self, message: bytes) -> None:
        try:
            kind, _ = protocol.read_header(message)
            body = memoryview(message)[protocol.HEADER_SIZE:]
            if kind == Kind.HEARTBEAT:
                if protocol.decode_u64(body) > self.last_version:
                    self._replay()
                return
            if kind != Kind.BATCH:
                return
            first, last = protocol.decode_batch_span(body)
            if last <= self.last_version:
                return
            if first > self.last_version + 1:
                self._replay()
                if last <= self.last_version:
                    return
            rows = protocol.decode_rows(body, protocol.BATCH_ROWS_OFFSET)
        except ProtocolError as exc:
            log.warning("ignoring an unreadable publication from %s: %s", self._endpoint, exc)
            return
        matches = self.filter.matches_row
        for row in rows:
            if row[0] > self.last_version and matches(row):
                self._deliver(row)
        self.last_version = max(self.last_version, last)

    def _replay(self) -> None:
        """Deliver every stored match after ``last_version``, up to what the server had when asked."""
        self.replays += 1
        flt = dataclasses.replace(self.filter, since_version=self.last_version)
        for as_of, _last, more, rows in self.wire.pages(flt, None, None, self._stop):
            for row in rows:
                if row[0] > self.last_version:
                    self._deliver(row)  # (the collector is not paused here: the callback is user code)
            if not more:
                self.last_version = max(self.last_version, as_of)

    def _deliver(self, row: list) -> None:
        version, created, key, value, event_type, namespace, sender, context = row
        event = Event(key, value, event_type, namespace, sender, context, version, created)
        if self._queue is not None:
            self._queue.put(event)
        else:
            try:
                self.callback(event)
            except Exception as exc:  # noqa: BLE001 - the user's code: report it, do not count the event
                log.exception("event listener callback failed on event version %d (key %r, type %r); the "
                              "listener stops at version %d: listen again with since_version=%d to have it "
                              "delivered again", version, key, event_type, self.last_version, self.last_version)
                self.error, self.failed_event = exc, event
                self._stop.set()
                raise _CallbackFailed() from exc
        self.last_version = version
        self.delivered += 1
