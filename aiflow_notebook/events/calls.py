"""CALL requests: a service beside the bus (e.g. the remote metadata store), run on worker threads.

A call may wait on a database or send events to this very bus, so it cannot run on the server's loop: the
loop hands it to :class:`CallWorkers`, whose threads run the handler and put the outcome in a queue,
waking the loop through a pipe its poller watches (:attr:`CallWorkers.wake_fd`); the loop then sends the
answers :meth:`CallWorkers.finished` gives it. A call is named by its client (``call`` id): a resend after
a timeout joins the running call or gets its kept result, so a call is executed once however often it is
resent. Nothing here touches a socket: every answer is returned to the loop as ``(identity, message)``.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable

from aiflow_notebook.events import protocol
from aiflow_notebook.events.protocol import Kind

log = logging.getLogger(__name__)

CALL_WORKERS = 4  # threads that run CALLs
MAX_PENDING_CALLS = 256  # calls queued or running; more are answered "unavailable" (the client backs off, retries)
KEPT_RESULTS = 1024  # answers of finished CALLs kept for resends ...
KEPT_BYTES = 64 << 10  # ... when this small (a bigger one is a read: a resend of it runs it again)

CallHandler = Callable[[str | None, str, object, bytes], tuple[object, bytes]]
Reply = tuple[bytes, bytes]  # (client identity, message) for the loop to send


class CallError(Exception):
    """Raised by a call handler: the call failed for a reason the caller should see (``code``, message).
    Anything else a handler raises is logged and answered as ``internal``."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def unsupported(identity: bytes, request: protocol.Request) -> Reply:
    """The answer of a server that serves no calls."""
    return identity, protocol.encode_error(request.request_id, "unsupported", "this event server serves no calls "
                                           "(start `aiflow server start` for the metadata store and uploads)")


class CallWorkers:
    """Threads that run ``handler(user, method, args, data) -> (result, data)`` for the loop."""

    def __init__(self, handler: CallHandler, workers: int = CALL_WORKERS):
        self.handler = handler
        self.workers = workers
        self.wake_fd = -1  # readable when outcomes wait in the queue (the loop polls it)
        self._wake_write = -1
        self._calls: queue.Queue = queue.Queue()  # (key, user, request payload) for the workers
        self._results: queue.Queue = queue.Queue()  # (key, outcome) for the loop
        self._waiters: dict[tuple, list[tuple[bytes, int]]] = {}  # running call -> (identity, request id)s
        self._kept: OrderedDict[tuple, tuple] = OrderedDict()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self.wake_fd, self._wake_write = os.pipe()
        os.set_blocking(self.wake_fd, False)
        os.set_blocking(self._wake_write, False)
        for n in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"aiflow-call-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 5.0) -> None:
        """End the workers (a call still running is left to finish on its daemon thread)."""
        for _ in self._threads:
            self._calls.put(None)
        for thread in self._threads:
            thread.join(timeout)
        busy = any(thread.is_alive() for thread in self._threads)
        self._threads = []
        if not busy:  # (a worker still in a call will write to the pipe: its descriptors must not be reused)
            for fd in (self.wake_fd, self._wake_write):
                if fd >= 0:
                    os.close(fd)
            self.wake_fd = self._wake_write = -1

    # --- on the loop ---------------------------------------------------------------------------------

    def submit(self, identity: bytes, request: protocol.Request, user: str | None) -> list[Reply]:
        """Start the call ``request`` asks for, or join it; returns the answers to send now (none while it runs)."""
        key = (user, request.payload["call"])
        kept = self._kept.get(key)
        if kept is not None:  # a resend of a finished call: the same answer again
            return [(identity, _reply(request.request_id, kept))]
        waiters = self._waiters.get(key)
        if waiters is not None:  # a resend of a running call: answered when it ends
            waiters.append((identity, request.request_id))
            return []
        if len(self._waiters) >= MAX_PENDING_CALLS:
            return [(identity, protocol.encode_error(
                request.request_id, "unavailable", f"{MAX_PENDING_CALLS} calls are waiting; retry"))]
        self._waiters[key] = [(identity, request.request_id)]
        self._calls.put((key, user, request.payload))
        return []

    def finished(self) -> list[Reply]:
        """The answers of the calls that ended since the last time (the loop calls this when woken)."""
        try:
            while os.read(self.wake_fd, 4096):
                pass
        except BlockingIOError:
            pass
        replies = []
        while True:
            try:
                key, outcome = self._results.get_nowait()
            except queue.Empty:
                return replies
            self._keep(key, outcome)
            replies += [(identity, _reply(request_id, outcome)) for identity, request_id in self._waiters.pop(key, [])]

    def _keep(self, key: tuple, outcome: tuple) -> None:
        if outcome[0] == Kind.ERROR or len(outcome[1]) <= KEPT_BYTES:
            self._kept[key] = outcome
        while len(self._kept) > KEPT_RESULTS:
            self._kept.popitem(last=False)

    # --- on a worker thread --------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            item = self._calls.get()
            if item is None:
                return
            key, user, payload = item
            self._results.put((key, self._run(user, payload)))
            try:
                os.write(self._wake_write, b"\0")
            except (BlockingIOError, OSError):
                pass  # the pipe is full (the loop will read) or closed (stopping)

    def _run(self, user: str | None, payload: dict) -> tuple:
        """``(Kind.RESULT, body)`` or ``(Kind.ERROR, (code, message))``."""
        try:
            result, data = self.handler(user, payload["method"], payload.get("args"), payload["data"])
            return Kind.RESULT, protocol.join_body(result, data or b"")
        except CallError as exc:
            return Kind.ERROR, (exc.code, str(exc))
        except Exception as exc:  # noqa: BLE001 - a bug in a handler must not take the bus down
            log.exception("event server: call %s failed", payload.get("method"))
            return Kind.ERROR, ("internal", f"the server failed on {payload.get('method')!r}: "
                                            f"{type(exc).__name__}: {exc}")


def _reply(request_id: int, outcome: tuple) -> bytes:
    kind, body = outcome
    if kind == Kind.ERROR:
        return protocol.encode_error(request_id, *body)
    return protocol.frame(kind, request_id, body)
