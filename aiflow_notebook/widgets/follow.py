"""How a panel follows the bus: a listener with its own thread and ZeroMQ socket, and a painter thread.

The listener (``EventClient.listen`` without a callback) queues every matching event in order; the painter
thread takes what has arrived and applies it to the widget at most :data:`RATE` times a second, inside
``hold_sync()`` so that one batch of changes is one message per widget. Why two threads: the listener
blocks on its socket, and coalescing needs a clock of its own, so that the last events of a burst are
shown within 1/RATE s and not only when the next event arrives. Why not ``asyncio`` on the kernel loop:
ipykernel 7 does not run such tasks between cells, so a panel would freeze while the notebook is idle.

Nothing here prints or displays (output from a thread lands in whichever cell ran last). Every follower
stops on ``close()`` and at interpreter exit (:func:`stop_all`).
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from aiflow_notebook.core.waiting import Deadline

RATE = 10.0  # widget updates per second, at most
TICK_S = 1.0  # how often ``tick`` runs (log tails), when given
WAIT_S = 0.2  # the painter's longest wait for an event before it looks at its stop flag and its tick

log = logging.getLogger(__name__)
_followers: weakref.WeakSet[Follower] = weakref.WeakSet()
_atexit_lock = threading.Lock()
_atexit_registered = False


class Follower:
    """Feeds events matching ``keys`` (and ``event_type``), from ``since_version`` on, to ``apply(batch)``.

    ``apply`` and ``tick`` run on the painter thread inside ``widget.hold_sync()``; an exception there is
    logged and the follower carries on with the next batch.
    """

    def __init__(self, widget: Any, keys: Any, since_version: int, apply: Callable[[list], None], *,
                 event_type: str | None = None, tick: Callable[[], None] | None = None):
        self.widget, self.keys, self.since_version = widget, keys, since_version
        self.apply, self.tick, self.event_type = apply, tick, event_type
        self.client = None
        self.listener = None
        self.updates = 0  # batches applied (for tests and the benchmark)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._paint, name="aiflow-panel-painter", daemon=True)

    def start(self) -> Follower:
        from aiflow_notebook.events import EventClient
        from aiflow_notebook.session.submit import event_bus

        url, auth = event_bus()
        self.client = EventClient(url, auth=auth)  # the panel's own client: its sockets are its threads'
        self.listener = self.client.listen(self.keys, since_version=self.since_version, event_type=self.event_type)
        _register(self)
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def threads(self) -> list[threading.Thread]:
        """The threads of this follower (for tests: none alive after :meth:`stop`)."""
        found = [self._thread]
        if self.listener is not None:
            found.append(self.listener._thread)
        return found

    def stop(self, timeout: float = 5.0) -> None:
        """Stop following; returns when both threads have ended (or ``timeout`` passed)."""
        self._stop.set()
        if self.listener is not None:
            self.listener.stop(timeout)
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        if self.client is not None:
            self.client.close()

    def _paint(self) -> None:
        period = 1.0 / RATE
        last_paint = last_tick = 0.0
        while not self._stop.is_set():
            batch = self._take(WAIT_S)  # short waits, so that a stop is seen at once
            now = time.monotonic()
            if batch and now - last_paint < period:  # too soon: gather what else arrives meanwhile
                self._stop.wait(period - (now - last_paint))
                batch += self._take(0)
            if self._stop.is_set():
                return
            started = time.monotonic()
            ticking = self.tick is not None and started - last_tick >= TICK_S
            if not batch and not ticking:
                continue
            try:
                with self.widget.hold_sync():
                    if batch:
                        self.apply(batch)
                    if ticking:
                        self.tick()
            except Exception:  # noqa: BLE001 - a panel must not die on one bad batch; never print from here
                log.exception("aiflow panel %s: failed to apply %d events", type(self.widget).__name__, len(batch))
            last_paint = started  # the period counts from the start of an update: at most RATE a second
            if ticking:
                last_tick = started
            self.updates += 1

    def _take(self, timeout: float) -> list:
        """Every queued event; waits up to ``timeout`` s for the first one."""
        batch = []
        try:
            batch.append(self.listener.get(timeout=timeout))
            while True:
                batch.append(self.listener.get(timeout=0))
        except TimeoutError:
            return batch


def stop_all(timeout: float = 2.0) -> None:
    """Stop every panel's follower (at interpreter exit, and for tests).

    All are told at once and then awaited against one deadline: one by one, a kernel with a few panels
    took seconds to exit, and a kernel manager kills a kernel that is not gone in 5 s, before the embedded
    scheduler's exit handler has stopped its jobs (a streaming job was left running)."""
    followers = list(_followers)
    for follower in followers:
        follower._stop.set()
        if follower.listener is not None:
            follower.listener.stop(timeout=0)  # (only tells it; awaited below)
    deadline = Deadline(timeout)
    for follower in followers:
        follower.stop(timeout=deadline.left())


def live_threads() -> list[threading.Thread]:
    """Threads of followers still alive (tests assert none after close)."""
    return [t for f in list(_followers) for t in f.threads() if t.is_alive()]


def _register(follower: Follower) -> None:
    global _atexit_registered
    _followers.add(follower)
    with _atexit_lock:
        if not _atexit_registered:  # registered after the embedded scheduler's: runs before it stops the bus
            atexit.register(stop_all)
            _atexit_registered = True
