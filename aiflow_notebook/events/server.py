"""The event server: a durable bus over one database, put together from its three parts.

Two sockets:
- a ROUTER at the URL clients are given, for requests (HELLO, SEND, LIST, LATEST, SYNC, CALL);
- a PUB socket (its address is told in the HELLO answer) on which every committed batch is published
  with its first and last version, plus a HEARTBEAT with the latest version every ``heartbeat_interval``.

Where they listen and who may reach them is :mod:`~aiflow_notebook.events.endpoints` (private unix sockets
by default, loopback unless told, CURVE for anything wider); the loop that stores sends in group commits,
answers reads and publishes is :mod:`~aiflow_notebook.events.loop`; CALLs (a service beside the bus, e.g.
the remote metadata store: :meth:`EventServer.serve_calls`) run on the worker threads of
:mod:`~aiflow_notebook.events.calls`. This module owns their life cycle: set up, serve, tear down.

``EventServer(...).start()`` runs the loop in a thread (for embedding, e.g. in the scheduler's service);
``serve_forever()`` runs it in the calling thread (the CLI).
"""

from __future__ import annotations

import logging
import threading

import zmq

from aiflow_notebook.core.config import default_meta_url
from aiflow_notebook.events.auth import ServerCurve
from aiflow_notebook.events.calls import CallError, CallHandler, CallWorkers
from aiflow_notebook.events.endpoints import Endpoints, private_endpoint
from aiflow_notebook.events.errors import EventServerError
from aiflow_notebook.events.log import EventLog
from aiflow_notebook.events.loop import ServerLoop

# CallError: a documented name of this module (docs/remote.md); private_endpoint: main's
# session/local_server.py imports it from here (its home is events.endpoints).
__all__ = ["DEFAULT_MAX_MESSAGE_BYTES", "CallError", "CallHandler", "EventServer", "private_endpoint"]

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES = 1 << 20  # one event (or request) at most 1 MiB


class EventServer:
    """A durable event bus server over one database.

    ``bind`` is a ZeroMQ endpoint (``tcp://127.0.0.1:PORT``, port 0 = any free port; ``ipc://PATH``;
    ``inproc://NAME``, which needs clients in this process). The default (None) is a private one: unix
    sockets in a directory only this user can enter (:func:`~aiflow_notebook.events.endpoints.private_endpoint`),
    so no other local user can reach the bus. A TCP address other than loopback is refused unless CURVE is
    on (``curve_dir``) or ``insecure=True`` says the network is trusted.
    """

    def __init__(self, db_url: str | None = None, bind: str | None = None, *,
                 publish_bind: str | None = None, curve_dir: str | None = None, insecure: bool = False,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, heartbeat_interval: float = 0.5,
                 context: zmq.Context | None = None):
        self.db_url = db_url or default_meta_url()
        self.endpoints = Endpoints(bind, publish_bind)
        self.curve = ServerCurve(curve_dir) if curve_dir else None
        self.endpoints.check(secure=self.curve is not None, insecure=insecure)
        self.max_message_bytes = max_message_bytes
        self.heartbeat_interval = heartbeat_interval
        self._context = context
        self._own_context = False
        self.url: str | None = None  # the request endpoint, once bound
        self.publish_url: str | None = None
        self.stats = {"stored": 0, "duplicates": 0, "batches": 0, "rejected": 0, "db_errors": 0}
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self.failure: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._control_address = f"inproc://aiflow-event-server-control-{id(self):x}"
        self._calls: CallWorkers | None = None
        self._log: EventLog | None = None
        self._sockets: list[zmq.Socket] = []
        self._serving: ServerLoop | None = None

    @property
    def bind_address(self) -> str:
        """The request address asked for (``tcp://HOST:*`` for port 0); :attr:`url` once bound."""
        return self.endpoints.bind

    @property
    def publish_bind(self) -> str:
        return self.endpoints.publish

    def serve_calls(self, handler: CallHandler) -> None:
        """Answer CALL requests with ``handler(user, method, args, data) -> (result, data)`` (call before
        ``start``). ``user``: the authenticated client's name under CURVE, else None. The handler runs on
        a worker thread; :class:`CallError` becomes an error answer with its code."""
        self._calls = CallWorkers(handler)

    # --- life cycle ----------------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> EventServer:
        """Serve in a background thread; returns once the sockets are bound (raises what set-up raised).

        A server starts once: ``with EventServer(...).start() as server`` enters a started server, and a
        second serving thread would fail to claim the log and then close the sockets of the first."""
        if self._thread is not None and self._startup_error is None:
            return self
        self._thread = threading.Thread(target=self.serve_forever, name="aiflow-event-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise EventServerError(f"the event server did not start within {timeout}s")
        if self._startup_error is not None:
            self._thread.join()
            raise self._startup_error
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and close sockets and database connections."""
        self._stopping.set()
        if self._thread is not None and self._ready.is_set() and self._startup_error is None:
            try:
                control = self._context.socket(zmq.PAIR)
                control.linger = 0
                control.connect(self._control_address)
                control.send(b"stop", zmq.NOBLOCK)
                control.close()
            except zmq.ZMQError:
                pass  # already gone; the flag is enough
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("event server on %s: still tearing down after %.0f s", self.url, timeout)

    def request_stop(self) -> None:
        """Ask the loop to end at its next turn (safe from a signal handler)."""
        self._stopping.set()

    def serve_forever(self) -> None:
        """Set up, then serve in the calling thread until :meth:`stop` or :meth:`request_stop`."""
        try:
            self._set_up()
        except BaseException as exc:
            self._startup_error = exc
            self._ready.set()
            self._tear_down()
            if self._thread is None:
                raise
            return
        self._ready.set()
        try:
            self._serving.run()
        except BaseException as exc:
            self.failure = exc
            log.error("event server on %s stopped: %s", self.url, exc)
            if self._thread is None:
                raise
        finally:
            self._tear_down()

    @property
    def alive(self) -> bool:
        """Whether the loop is still serving (False after stop() or a fatal error, see ``failure``)."""
        return self._ready.is_set() and self.failure is None and self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> EventServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EventServer(url={self.url or self.bind_address!r})"

    # --- set-up and tear-down ------------------------------------------------------------------------

    def _set_up(self) -> None:
        self._log = EventLog(self.db_url)
        self._log.claim_writer()
        self._log.checkpoint_in_background()
        if self._context is None:
            # inproc endpoints only connect within one context; otherwise a private one (own I/O thread)
            if self.bind_address.startswith("inproc://"):
                self._context = zmq.Context.instance()
            else:
                self._context, self._own_context = zmq.Context(), True
        if self.curve is not None:
            self.curve.start(self._context)
        router, pub, control = self._open_sockets()
        self.url, self.publish_url = self.endpoints.bind_sockets(router, pub)
        if self._calls is not None:
            self._calls.start()
        self._serving = ServerLoop(
            self._log, router, pub, control, publish_url=self.publish_url, curve=self.curve, calls=self._calls,
            max_message_bytes=self.max_message_bytes, heartbeat_interval=self.heartbeat_interval,
            stats=self.stats, stopping=self._stopping)
        log.info("event server on %s (updates on %s), log %s at version %d%s", self.url, self.publish_url,
                 self._log.url, self._serving.last_version, ", CURVE on" if self.curve else "")

    def _open_sockets(self) -> tuple[zmq.Socket, zmq.Socket, zmq.Socket]:
        """The request ROUTER, the update PUB (both under CURVE when on) and the PAIR :meth:`stop` wakes."""
        router = self._socket(zmq.ROUTER)
        # Far larger frames are cut off by libzmq before they are read; the rest get a "too-large" error.
        router.maxmsgsize = max(16 << 20, 4 * self.max_message_bytes)
        router.sndhwm = 100_000
        router.rcvhwm = 100_000
        pub = self._socket(zmq.PUB)
        pub.sndhwm = 100_000
        control = self._context.socket(zmq.PAIR)
        control.linger = 0
        self._sockets.append(control)
        control.bind(self._control_address)
        return router, pub, control

    def _socket(self, kind: int) -> zmq.Socket:
        sock = self._context.socket(kind)
        sock.linger = 0
        self._sockets.append(sock)
        if self.curve is not None:
            self.curve.apply(sock)
        return sock

    def _tear_down(self) -> None:
        if self._calls is not None:
            self._calls.stop()
        for sock in self._sockets:
            sock.close(linger=0)
        self._sockets = []
        self.endpoints.remove(self.url, self.publish_url)  # first: nothing below may keep the files behind
        if self.curve is not None:
            self.curve.stop()
        if self._log is not None:
            self._log.close()
        if self._own_context and self._context is not None:
            self._context.term()
