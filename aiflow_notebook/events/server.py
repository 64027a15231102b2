"""The event server: one loop that stores sends in group commits, answers reads and publishes updates.

Two sockets:
- a ROUTER at the URL clients are given, for requests (HELLO, SEND, LIST, LATEST, SYNC, CALL);
- a PUB socket (its address is told in the HELLO answer) on which every committed batch is published
  with its first and last version, plus a HEARTBEAT with the latest version every ``heartbeat_interval``.

The loop drains every request that is waiting, stores all SENDs of the drain in ONE transaction, then acks
them, publishes them and answers the reads. While a commit runs, the next requests queue up in ZeroMQ's
I/O thread, so batches grow with load by themselves (group commit without a timer, so no added latency
when idle). Acks are sent only after the commit: an acked event is durable.

Versions are numbered by this loop (it is the log's only writer: :meth:`EventLog.claim_writer`), so a
batch's versions are contiguous and a listener can tell from ``first == last seen + 1`` that it missed
nothing; publications are sent in version order. Anything malformed is answered with an ERROR frame (and
logged, rate-limited); a database failure is answered with a retryable ``unavailable`` error. Nothing a
client sends can stop the loop.

CALLs (requests to a service beside the bus, e.g. the remote metadata store: :meth:`EventServer.serve_calls`)
run on worker threads, since a call may wait on a database or send events to this very bus; their results
come back to the loop through a queue (woken by a pipe the poller watches), and the loop answers. A call is
named by its client (``call`` id): a resend after a timeout joins the running call or gets its kept result,
so a call is executed once however often it is resent.

``EventServer(...).start()`` runs the loop in a thread (for embedding, e.g. in the scheduler's service);
``serve_forever()`` runs it in the calling thread (the CLI).
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import queue
import secrets
import shutil
import stat
import tempfile
import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import zmq

from aiflow_notebook.core.config import aiflow_home, default_meta_url
from aiflow_notebook.events import protocol
from aiflow_notebook.events.auth import ServerCurve
from aiflow_notebook.events.dedupe import SendRegistry
from aiflow_notebook.events.errors import EventServerError, InvalidEventError, ProtocolError
from aiflow_notebook.events.event import EventFilter
from aiflow_notebook.events.log import EventLog
from aiflow_notebook.events.protocol import Kind

log = logging.getLogger(__name__)

DEFAULT_PORT = 50052
DEFAULT_BIND = f"tcp://127.0.0.1:{DEFAULT_PORT}"
DEFAULT_MAX_MESSAGE_BYTES = 1 << 20  # one event (or request) at most 1 MiB
PAGE_EVENTS = 10_000  # events per LIST answer
PAGE_BYTES = 8 << 20  # ... and about this many bytes of values
MAX_DRAIN = 4096  # requests taken from the socket per loop turn
CALL_WORKERS = 4  # threads that run CALLs
MAX_PENDING_CALLS = 256  # calls queued or running; more are answered "unavailable" (the client backs off, retries)
KEPT_RESULTS = 1024  # answers of finished CALLs kept for resends ...
KEPT_BYTES = 64 << 10  # ... when this small (a bigger one is a read: a resend of it runs it again)


class CallError(Exception):
    """Raised by a call handler: the call failed for a reason the caller should see (``code``, message).
    Anything else a handler raises is logged and answered as ``internal``."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


CallHandler = Callable[[str | None, str, object, bytes], tuple[object, bytes]]


class EventServer:
    """A durable event bus server over one database.

    ``bind`` is a ZeroMQ endpoint (``tcp://127.0.0.1:PORT``, port 0 = any free port; ``ipc://PATH``;
    ``inproc://NAME``, which needs clients in this process). The default (None) is a private one: unix
    sockets in a directory only this user can enter (:func:`private_endpoint`), so no other local user can
    reach the bus. A TCP address other than loopback is refused unless CURVE is on (``curve_dir``) or
    ``insecure=True`` says the network is trusted.
    """

    def __init__(self, db_url: str | None = None, bind: str | None = None, *,
                 publish_bind: str | None = None, curve_dir: str | None = None, insecure: bool = False,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, heartbeat_interval: float = 0.5,
                 context: zmq.Context | None = None):
        self.db_url = db_url or default_meta_url()
        self._private_dir: str | None = None
        if bind is None:
            bind, self._private_dir = private_endpoint()
        self.bind_address = _zmq_endpoint(bind)
        self.publish_bind = _zmq_endpoint(publish_bind) if publish_bind else _publish_endpoint(self.bind_address)
        self.curve = ServerCurve(curve_dir) if curve_dir else None
        _check_exposure(self.bind_address, secure=self.curve is not None, insecure=insecure)
        _check_exposure(self.publish_bind, secure=self.curve is not None, insecure=insecure)
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
        self._rejects = _RateLimitedLog(log)
        self._call_handler: CallHandler | None = None
        self._calls: queue.Queue = queue.Queue()  # (key, user, request payload) for the workers
        self._call_results: queue.Queue = queue.Queue()  # (key, reply body or error) for the loop
        self._call_waiters: dict[tuple, list[tuple[bytes, int]]] = {}
        self._call_kept: OrderedDict[tuple, tuple] = OrderedDict()
        self._call_threads: list[threading.Thread] = []
        self._wake_read = self._wake_write = -1

    def serve_calls(self, handler: CallHandler) -> None:
        """Answer CALL requests with ``handler(user, method, args, data) -> (result, data)`` (call before
        ``start``). ``user``: the authenticated client's name under CURVE, else None. The handler runs on
        a worker thread; :class:`CallError` becomes an error answer with its code."""
        self._call_handler = handler

    # --- life cycle ----------------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> EventServer:
        """Serve in a background thread; returns once the sockets are bound (raises what set-up raised)."""
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
            self._loop()
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
        self._last_version = self._log.last_version()
        self._last_time = 0
        self._sends = SendRegistry(self._log)
        if self._context is None:
            # inproc endpoints only connect within one context; otherwise a private one (own I/O thread)
            if self.bind_address.startswith("inproc://"):
                self._context = zmq.Context.instance()
            else:
                self._context, self._own_context = zmq.Context(), True
        if self.curve is not None:
            self.curve.start(self._context)
        self._router = self._socket(zmq.ROUTER)
        # Far larger frames are cut off by libzmq before they are read; the rest get a "too-large" error.
        self._router.maxmsgsize = max(16 << 20, 4 * self.max_message_bytes)
        self._router.sndhwm = 100_000
        self._router.rcvhwm = 100_000
        self._pub = self._socket(zmq.PUB)
        self._pub.sndhwm = 100_000
        self._control = self._context.socket(zmq.PAIR)
        self._control.linger = 0
        self._control.bind(self._control_address)
        self.url = _bind(self._router, self.bind_address)
        self.publish_url = _bind(self._pub, self.publish_bind)
        if self._call_handler is not None:
            self._wake_read, self._wake_write = os.pipe()
            os.set_blocking(self._wake_read, False)
            os.set_blocking(self._wake_write, False)
            for n in range(CALL_WORKERS):
                thread = threading.Thread(target=self._call_worker, name=f"aiflow-call-{n}", daemon=True)
                thread.start()
                self._call_threads.append(thread)
        if self._private_dir is not None:
            for url in (self.url, self.publish_url):
                os.chmod(url[len("ipc://"):], 0o600)
        log.info("event server on %s (updates on %s), log %s at version %d%s", self.url, self.publish_url,
                 self._log.url, self._last_version, ", CURVE on" if self.curve else "")

    def _socket(self, kind: int) -> zmq.Socket:
        sock = self._context.socket(kind)
        sock.linger = 0
        if self.curve is not None:
            self.curve.apply(sock)
        return sock

    def _tear_down(self) -> None:
        for _ in self._call_threads:
            self._calls.put(None)
        for thread in self._call_threads:
            thread.join(5)
        busy = any(thread.is_alive() for thread in self._call_threads)
        self._call_threads = []
        if not busy:  # (a worker still in a call will write to the pipe: its descriptors must not be reused)
            for fd in (self._wake_read, self._wake_write):
                if fd >= 0:
                    os.close(fd)
            self._wake_read = self._wake_write = -1
        for name in ("_router", "_pub", "_control"):
            sock = getattr(self, name, None)
            if sock is not None:
                sock.close(linger=0)
        if self.curve is not None:
            self.curve.stop()
        if getattr(self, "_log", None) is not None:
            self._log.close()
        if self._own_context and self._context is not None:
            self._context.term()
        if self._private_dir is not None:
            for url in (self.url, self.publish_url):
                if url and url.startswith("ipc://"):
                    Path(url[len("ipc://"):]).unlink(missing_ok=True)
            if Path(self._private_dir).name.startswith(_TMP_PREFIX):
                shutil.rmtree(self._private_dir, ignore_errors=True)  # a fallback under /tmp: nothing else uses it

    # --- the loop ------------------------------------------------------------------------------------

    def _loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self._router, zmq.POLLIN)
        poller.register(self._control, zmq.POLLIN)
        if self._wake_read >= 0:
            poller.register(self._wake_read, zmq.POLLIN)
        next_heartbeat = time.monotonic()
        while not self._stopping.is_set():
            wait_ms = max(0.0, (next_heartbeat - time.monotonic()) * 1000)
            ready = dict(poller.poll(min(wait_ms, 200)))
            if self._control in ready:
                break
            if self._router in ready:
                try:
                    self._drain()
                except EventServerError:
                    raise  # e.g. another server took the log over: this one must not write any more
                except Exception:  # noqa: BLE001 - a bug must not take the bus down; clients retry
                    log.exception("event server: unexpected error while serving a batch of requests")
            if self._wake_read in ready:
                self._answer_calls()
            now = time.monotonic()
            if now >= next_heartbeat:
                self._pub.send(protocol.encode_heartbeat(self._last_version))
                next_heartbeat = now + self.heartbeat_interval

    def _drain(self) -> None:
        sends, reads = [], []
        router = self._router
        curve = self.curve is not None
        for _ in range(MAX_DRAIN):
            try:
                frames = router.recv_multipart(zmq.NOBLOCK, copy=not curve)
            except zmq.Again:
                break
            user = None
            if curve:  # the ZAP User-Id of the connection: the name of the client's listed key
                user = frames[-1].get("User-Id")
                frames = [frame.bytes for frame in frames]
            if len(frames) != 2:
                self._reject(frames[0], frames[1] if len(frames) > 1 else b"",
                             ProtocolError("bad-body", f"expected one frame per message, got {len(frames) - 1}"))
                continue
            identity, message = frames
            try:
                request = protocol.parse_request(message, self.max_message_bytes)
            except ProtocolError as exc:
                self._reject(identity, message, exc)
                continue
            if curve:
                _authenticated(request, user, self.curve)
            if request.kind == Kind.CALL:
                self._start_call(identity, request, user)
                continue
            (sends if request.kind == Kind.SEND else reads).append((identity, request))
        if sends:
            self._store(sends)
        for identity, request in reads:
            self._answer(identity, request)

    # --- writes: group commit ------------------------------------------------------------------------

    def _store(self, sends: list) -> None:
        """Store the new sends of one drain in one transaction; ack resends with what was stored."""
        rows, fresh, outcomes = [], {}, []
        version = self._last_version
        now = max(time.time_ns() // 1_000_000, self._last_time)
        try:
            for identity, request in sends:
                seq = request.request_id
                client_id, key, value, event_type, namespace, sender, context = request.payload
                prior = self._sends.lookup(client_id, seq)
                if prior is not None:  # a resend of a stored event: answer with what was stored
                    outcomes.append((identity, seq, prior[0], prior[1]))
                    continue
                stored = fresh.get((client_id, seq))
                if stored is None:  # (else: the same send twice in one drain)
                    version += 1
                    stored = fresh[(client_id, seq)] = version
                    rows.append((version, key, value, event_type, namespace, sender, context, now, client_id, seq))
                outcomes.append((identity, seq, stored, now))
            if rows:
                self._log.append(rows)
        except self._log.DatabaseError as exc:
            # IntegrityError included: a (client_id, seq) clash means the registry is out of date (the log
            # was written behind our back); it is re-read from the log when the clients retry.
            self._database_failed(exc, [(identity, request.request_id) for identity, request in sends])
            return
        self.stats["duplicates"] += len(sends) - len(rows)
        if rows:
            self._last_version, self._last_time = version, now
            self.stats["stored"] += len(rows)
            self.stats["batches"] += 1
            for row in rows:
                self._sends.record(row[8], row[9], row[0], now)
            wire = [(r[0], now, r[1], r[2], r[3], r[4], r[5], r[6]) for r in rows]
            self._pub.send(protocol.encode_batch(rows[0][0], version, protocol.dump_json(wire)))
        acks: dict[bytes, list] = defaultdict(list)
        for identity, seq, stored, created in outcomes:
            acks[identity].append((seq, stored, created))
        for identity, items in acks.items():
            self._router.send_multipart([identity, protocol.encode_ack(items)])

    def _database_failed(self, exc: Exception, requests: list[tuple[bytes, int]]) -> None:
        self.stats["db_errors"] += 1
        log.error("event log %s failed: %s; answering 'unavailable' (clients retry)", self._log.url, exc)
        self._log.reset()
        self._sends.forget()
        try:
            self._last_version = self._log.last_version()
        except self._log.DatabaseError:
            pass  # still down; versions are re-read on the next failure or success
        for identity, request_id in requests:
            self._router.send_multipart([identity, protocol.encode_error(
                request_id, "unavailable", f"the event log is unavailable ({type(exc).__name__}); retry")])

    # --- reads ---------------------------------------------------------------------------------------

    def _answer(self, identity: bytes, request: protocol.Request) -> None:
        try:
            reply = self._read(request)
        except (InvalidEventError, ValueError) as exc:
            reply = protocol.encode_error(request.request_id, "bad-request", str(exc))
        except self._log.DatabaseError as exc:
            self._database_failed(exc, [(identity, request.request_id)])
            return
        self._router.send_multipart([identity, reply])

    def _read(self, request: protocol.Request) -> bytes:
        kind, rid, payload = request.kind, request.request_id, request.payload
        if kind == Kind.LIST:
            flt = EventFilter.from_wire(payload.get("filter"))
            limit = payload.get("limit")
            if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
                raise InvalidEventError(f"limit must be a positive integer or null, got {limit!r}")
            as_of = self._last_version
            page = PAGE_EVENTS if limit is None else min(limit, PAGE_EVENTS)
            found = self._log.query(flt, page, PAGE_BYTES)
            last = found.last_version if found.count else as_of
            return protocol.encode_events(rid, as_of, last, found.count, found.more, found.json)
        if kind == Kind.HELLO:
            client_id = payload.get("client_id")
            if client_id is not None and not (isinstance(client_id, str) and 0 < len(client_id) <= 255):
                raise InvalidEventError("client_id must be a string of 1 to 255 characters")
            return protocol.frame(Kind.WELCOME, rid, protocol.dump_json({
                "protocol": protocol.PROTOCOL_VERSION,
                "publish": self.publish_url,
                "max_message_bytes": self.max_message_bytes,
                "heartbeat_interval": self.heartbeat_interval,
                "last_seq": self._sends.last_seq(client_id) if client_id else 0,
                "latest_version": self._last_version,
            }))
        if kind == Kind.LATEST:
            flt = EventFilter.build(key=payload.get("key"), namespace=payload.get("namespace"))
            if flt.keys is None and flt.namespace is None:
                version = self._last_version
            else:
                version = self._log.latest_version(flt)
            return protocol.encode_u64(Kind.VERSION, rid, version)
        # SYNC: a listener asks for a publication to learn that its subscription is live.
        self._pub.send(protocol.encode_heartbeat(self._last_version))
        return protocol.encode_u64(Kind.SYNCED, rid, self._last_version)

    # --- calls: run on worker threads, answered by the loop ------------------------------------------

    def _start_call(self, identity: bytes, request: protocol.Request, user: str | None) -> None:
        if self._call_handler is None:
            self._router.send_multipart([identity, protocol.encode_error(
                request.request_id, "unsupported", "this event server serves no calls (start `aiflow server "
                "start` for the metadata store and uploads)")])
            return
        key = (user, request.payload["call"])
        kept = self._call_kept.get(key)
        if kept is not None:  # a resend of a finished call: the same answer again
            self._router.send_multipart([identity, _call_reply(request.request_id, kept)])
            return
        waiters = self._call_waiters.get(key)
        if waiters is not None:  # a resend of a running call: answered when it ends
            waiters.append((identity, request.request_id))
            return
        if len(self._call_waiters) >= MAX_PENDING_CALLS:
            self._router.send_multipart([identity, protocol.encode_error(
                request.request_id, "unavailable", f"{MAX_PENDING_CALLS} calls are waiting; retry")])
            return
        self._call_waiters[key] = [(identity, request.request_id)]
        self._calls.put((key, user, request.payload))

    def _call_worker(self) -> None:
        while True:
            item = self._calls.get()
            if item is None:
                return
            key, user, payload = item
            try:
                result, data = self._call_handler(user, payload["method"], payload.get("args"), payload["data"])
                outcome = (Kind.RESULT, protocol.join_body(result, data or b""))
            except CallError as exc:
                outcome = (Kind.ERROR, (exc.code, str(exc)))
            except Exception as exc:  # noqa: BLE001 - a bug in a handler must not take the bus down
                log.exception("event server: call %s failed", payload.get("method"))
                outcome = (Kind.ERROR, ("internal", f"the server failed on {payload.get('method')!r}: "
                                                    f"{type(exc).__name__}: {exc}"))
            self._call_results.put((key, outcome))
            try:
                os.write(self._wake_write, b"\0")
            except (BlockingIOError, OSError):
                pass  # the pipe is full (the loop will read) or closed (stopping)

    def _answer_calls(self) -> None:
        try:
            while os.read(self._wake_read, 4096):
                pass
        except BlockingIOError:
            pass
        while True:
            try:
                key, outcome = self._call_results.get_nowait()
            except queue.Empty:
                return
            if outcome[0] == Kind.ERROR or len(outcome[1]) <= KEPT_BYTES:
                self._call_kept[key] = outcome
            while len(self._call_kept) > KEPT_RESULTS:
                self._call_kept.popitem(last=False)
            for identity, request_id in self._call_waiters.pop(key, []):
                self._router.send_multipart([identity, _call_reply(request_id, outcome)])

    def _reject(self, identity: bytes, message: bytes, exc: ProtocolError) -> None:
        self.stats["rejected"] += 1
        self._rejects.warning(exc.code, "rejected a message of %d bytes: %s", len(message), exc)
        request_id = 0
        if len(message) >= protocol.HEADER_SIZE and message[:2] == protocol.MAGIC:
            request_id = protocol.HEADER.unpack_from(message)[3]
        self._router.send_multipart([identity, protocol.encode_error(request_id, exc.code, str(exc))])


def _call_reply(request_id: int, outcome: tuple) -> bytes:
    kind, body = outcome
    if kind == Kind.ERROR:
        return protocol.encode_error(request_id, *body)
    return protocol.frame(kind, request_id, body)


def _authenticated(request: protocol.Request, user: str, curve: ServerCurve | None = None) -> None:
    """On a CURVE server: a SEND's sender is the authenticated client's name, whatever it claims (unless
    the client is one of the server's own that speaks for others: :meth:`ServerCurve.admit` with
    ``speaks_for_others``), and its client id is scoped to that name (so one client cannot pre-empt
    another's idempotent sends)."""
    if request.kind == Kind.SEND:
        request.payload[0] = _scoped_client_id(user, request.payload[0])
        if not (curve is not None and request.payload[5] and curve.speaks_for_others(user)):
            request.payload[5] = user
    elif request.kind == Kind.HELLO and isinstance(request.payload.get("client_id"), str):
        request.payload["client_id"] = _scoped_client_id(user, request.payload["client_id"])


def _scoped_client_id(user: str, client_id) -> str:
    scoped = f"{user}/{client_id}"
    if len(scoped) <= 255:
        return scoped
    return f"{user[:180]}/{hashlib.sha256(str(client_id).encode()).hexdigest()[:64]}"


class _RateLimitedLog:
    """At most ``burst`` warnings per reason per minute, then a count: garbage must not flood the log."""

    def __init__(self, logger: logging.Logger, burst: int = 5, period: float = 60.0):
        self.logger, self.burst, self.period = logger, burst, period
        self._window: dict[str, list] = {}

    def warning(self, reason: str, message: str, *args) -> None:
        now = time.monotonic()
        started, count = self._window.get(reason, (now, 0))
        if now - started > self.period:
            if count > self.burst:
                self.logger.warning("... %d more '%s' rejections in the last %.0fs", count - self.burst, reason,
                                    self.period)
            started, count = now, 0
        count += 1
        self._window[reason] = [started, count]
        if count <= self.burst:
            self.logger.warning(message, *args)


# --- addresses -----------------------------------------------------------------------------------------

SOCKETS_DIR = "sockets"
_TMP_PREFIX = "aiflow-sockets-"
_MAX_IPC_PATH = 107  # bytes of a unix socket path (sun_path is 108 with its NUL)


def private_endpoint(home: str | os.PathLike | None = None) -> tuple[str, str]:
    """``(ipc://PATH, directory)``: a fresh socket path in a directory only this user may enter.

    The directory is ``$AIFLOW_HOME/sockets`` (made mode 0700; refused if another user owns it); when a path
    there would be longer than a unix socket path may be, a private directory made by ``mkdtemp`` under the
    system's temporary directory instead. The publish socket goes next to it (``PATH.pub``).
    """
    name = f"events-{os.getpid()}-{secrets.token_hex(4)}.sock"
    directory = Path(home) if home is not None else aiflow_home()
    directory = directory / SOCKETS_DIR
    if len(os.fsencode(str(directory / name)) + b".pub") > _MAX_IPC_PATH:
        directory = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX))  # mode 0700, ours
    else:
        _private_directory(directory)
    return f"ipc://{directory / name}", str(directory)


def _private_directory(directory: Path) -> None:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = directory.stat()
    if info.st_uid != os.geteuid():
        raise EventServerError(f"{directory} belongs to another user; the event bus's sockets must be in a "
                               "directory only you can enter (set AIFLOW_HOME to one of yours)")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(directory, 0o700)


def _zmq_endpoint(address: str) -> str:
    """Accept ``tcp://host:0`` for "any free port" (ZeroMQ spells it ``*``); check the transport."""
    if not isinstance(address, str) or "://" not in address:
        raise EventServerError(f"bad bind address {address!r}; expected e.g. tcp://127.0.0.1:{DEFAULT_PORT}, "
                               "ipc:///tmp/aiflow-events or inproc://events")
    transport = address.split("://", 1)[0]
    if transport not in ("tcp", "ipc", "inproc"):
        raise EventServerError(f"unsupported transport {transport!r} in {address!r}; use tcp, ipc or inproc")
    if transport == "tcp":
        host, _, port = address[len("tcp://"):].rpartition(":")
        if not host or not (port == "*" or port.isdigit()):
            raise EventServerError(f"bad TCP address {address!r}; expected tcp://HOST:PORT (PORT 0 = any free port)")
        if port == "0":
            return f"tcp://{host}:*"
    return address


def _publish_endpoint(bind: str) -> str:
    """Where updates are published by default: same host, any free port (or ``<path>.pub``)."""
    if bind.startswith("tcp://"):
        host = bind[len("tcp://"):].rpartition(":")[0]
        return f"tcp://{host}:*"
    return bind + ".pub"


def _bind(sock: zmq.Socket, endpoint: str) -> str:
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        hint = " (is another server running there? pick another port)" if exc.errno == zmq.EADDRINUSE else ""
        raise EventServerError(f"cannot bind {endpoint}: {exc.strerror}{hint}") from None
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)


def _check_exposure(endpoint: str, secure: bool, insecure: bool) -> None:
    if secure or insecure or not endpoint.startswith("tcp://"):
        return
    host = urlsplit(endpoint.replace(":*", ":0")).hostname or ""
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise EventServerError(
        f"refusing to serve events on {endpoint} without authentication: anyone who can reach it could read "
        "and send events. Create keys with `aiflow server keys DIR` and start with --curve DIR, or bind to "
        "127.0.0.1 (or pass --insecure on a trusted network)")
