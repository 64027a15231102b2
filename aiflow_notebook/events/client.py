"""The event client: send (idempotently), list, ask for the latest version, listen.

Threads: ZeroMQ sockets must not be shared between threads, so every thread that uses a client gets its
own DEALER socket (a :class:`_Channel`), created on first use and closed when the thread ends or the client
closes. One ``EventClient`` can therefore be used from any number of threads at once.

Idempotent send: the client has a ``client_id`` and numbers its sends 1, 2, 3, ... (continuing after the
highest number the server holds for that id, learnt from the HELLO answer, so a restarted client that
reuses its id never collides with its earlier sends). A request that gets no answer in time is resent on a
fresh socket (the zguide's "Lazy Pirate"), with growing waits, until ``deadline`` seconds have passed; the
server answers a resend with the version it already stored. ``send_events`` pipelines: it keeps up to
``window`` sends in flight, and an ack still means "durably stored".
"""

from __future__ import annotations

import dataclasses
import gc
import itertools
import json
import logging
import os
import re
import socket as _socket
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import zmq

from aiflow_notebook.events import protocol
from aiflow_notebook.events.auth import CurveAuth
from aiflow_notebook.events.errors import (
    EventRequestError,
    EventServerUnavailableError,
    EventTooLargeError,
    InvalidEventError,
    ProtocolError,
)
from aiflow_notebook.events.event import Event, EventFilter, validate_event
from aiflow_notebook.events.protocol import Kind

log = logging.getLogger(__name__)

DEFAULT_URL = "tcp://127.0.0.1:50052"
DEFAULT_DEADLINE = 30.0
FIRST_ATTEMPT_TIMEOUT = 0.5  # seconds without any answer before a request is resent; doubles each time
MAX_ATTEMPT_TIMEOUT = 4.0
_OTHER_IDS = 1 << 63  # ids of non-SEND requests; SEND ids are sequence numbers, far below
CLIENT_DEADLINE = object()  # "the client's own deadline" (None means: no deadline)


def run_origin_from_environment() -> dict | None:
    """The run this process is a job of (``$AIFLOW_RUN_ID``, ``$AIFLOW_WORKFLOW``, ``$AIFLOW_PROJECT``,
    which the scheduler sets for a job's process), else None."""
    run = os.environ.get("AIFLOW_RUN_ID", "")
    if not run.isdigit():
        return None
    origin: dict = {"run": int(run)}
    for field, variable in (("workflow", "AIFLOW_WORKFLOW"), ("project", "AIFLOW_PROJECT")):
        if os.environ.get(variable):
            origin[field] = os.environ[variable]
    return origin


def _with_origin(context: str | None, origin: dict) -> str | None:
    """``context`` with ``origin``'s fields added, unless it already names a run or is not a JSON object
    (a context of the sender's own format is left as it is, and the event stays global)."""
    if context is None:
        return json.dumps(origin)
    try:
        parsed = json.loads(context)
    except ValueError:
        return context
    if not isinstance(parsed, dict) or "run" in parsed:
        return context
    return json.dumps({**parsed, **origin})


def _with_scheme(url: str) -> str:
    """A plain ``host:port`` (AI Flow's form, e.g. ``localhost:50052``) means ``tcp://host:port``."""
    if "://" not in url and re.fullmatch(r"[\w.\-]+:\d+|\[[0-9a-fA-F:.]+\]:\d+", url):
        return f"tcp://{url}"
    return url


def default_event_url() -> str:
    """``$AIFLOW_EVENT_URL``, else the default server address ``tcp://127.0.0.1:50052``."""
    return os.environ.get("AIFLOW_EVENT_URL") or DEFAULT_URL


class EventClient:
    """A connection to an event server at ``url`` (default: ``$AIFLOW_EVENT_URL``).

    ``auth``: the server's CURVE public key (``server.key`` path, its directory, the Z85 key or a
    :class:`CurveAuth`) when the server runs with ``--curve``. ``deadline``: seconds a call keeps retrying
    before it raises :class:`EventServerUnavailableError`.
    """

    def __init__(self, url: str | None = None, *, client_id: str | None = None, auth=None,
                 deadline: float = DEFAULT_DEADLINE, context: zmq.Context | None = None,
                 origin: dict | None = None):
        self.url = _with_scheme(url or default_event_url())
        # fields merged into the JSON context of every event sent that does not name a run itself: inside
        # a job, from_environment() puts the job's run here, so the job's events belong to its run
        self.origin = dict(origin) if origin else None
        if not self.url.startswith(("tcp://", "ipc://", "inproc://")):
            raise InvalidEventError(f"bad event server URL {self.url!r}; expected e.g. {DEFAULT_URL}")
        if client_id is not None and not (isinstance(client_id, str) and 0 < len(client_id) <= 255
                                          and client_id.isprintable()):
            raise InvalidEventError(f"client_id must be 1 to 255 printable characters, got {client_id!r}")
        self.client_id = client_id or f"{_socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.auth = CurveAuth.coerce(auth)
        self.deadline = deadline
        self.context = context or zmq.Context.instance()
        self._local = threading.local()
        self._channels: weakref.WeakSet[_Channel] = weakref.WeakSet()
        self._listeners: weakref.WeakSet = weakref.WeakSet()
        self._lock = threading.Lock()
        self._welcome: dict | None = None
        self._seqs: Iterator[int] | None = None
        self._ids = itertools.count(_OTHER_IDS + 1)
        self._closed = False

    @classmethod
    def from_environment(cls, **kwargs) -> EventClient:
        """A client for ``$AIFLOW_EVENT_URL`` with ``$AIFLOW_EVENT_SERVER_KEY`` (if set) as CURVE key; in a
        process connected to an ``aiflow server`` (``af.connect``, ``$AIFLOW_SERVER_URL``), for that server.

        Inside a job (``$AIFLOW_RUN_ID`` is set by the scheduler) the events it sends belong to the job's
        run: their context names the run (``{"run": 7, "workflow": "ctr", "project": "demo"}``), so the
        rules of that run react to them and other live runs of the same workflow do not. Events sent from
        outside any run (a notebook cell, another service) stay global. ``origin=None`` opts out.
        """
        from aiflow_notebook.events.session import connected_client

        connected = connected_client()  # af.connect / $AIFLOW_SERVER_URL: that server's bus (never in a job)
        if connected is not None:
            kwargs.setdefault("auth", connected.auth)
            return cls(connected.url, **kwargs)
        kwargs.setdefault("auth", os.environ.get("AIFLOW_EVENT_SERVER_KEY") or None)
        kwargs.setdefault("origin", run_origin_from_environment())
        return cls(default_event_url(), **kwargs)

    # --- sending -------------------------------------------------------------------------------------

    def send_event(self, event: Event | None = None, /, *, key: str | None = None, value: str | None = None,
                   event_type: str = "UNDEFINED", namespace: str = "default", sender: str | None = None,
                   context: str | None = None) -> Event:
        """Store an event durably and return it with ``version`` and ``create_time`` set.

        Give an :class:`Event`, or its fields: ``send_event(key="k", value="v")`` (AI Flow's form). A
        ``value`` of None is stored as the empty string. Safe to retry: a resend after a timeout or a
        server restart is stored once.
        """
        if event is None:
            if key is None:
                raise InvalidEventError("send_event needs an Event or key=...")
            event = Event(key, value, event_type, namespace, sender, context)
        elif key is not None:
            raise InvalidEventError("send_event takes an Event or key=..., not both")
        return self.send_events([event], window=1)[0]

    def send_events(self, events: Iterable[Event], window: int = 64) -> list[Event]:
        """Store several events, keeping up to ``window`` in flight; returns them stored, in order.

        Every returned event is durable. Events sent together may get versions in any order relative to
        each other (each one is its own idempotent send), but each keeps its own ``version``.
        """
        events = [self._prepared(event) for event in events]
        for event in events:
            validate_event(event)
        welcome = self._hello()
        limit = welcome["max_message_bytes"]
        requests = []
        for event in events:
            seq = next(self._seqs)
            message = protocol.encode_send(seq, self.client_id, event.key, event.value, event.event_type,
                                           event.namespace, event.sender, event.context)
            if len(message) > limit:
                raise EventTooLargeError(
                    f"the event for key {event.key!r} is {len(message)} bytes on the wire; the server accepts at "
                    f"most {limit} (its max_message_bytes). Store large payloads elsewhere (a file, the blob "
                    "store) and send a reference.")
            requests.append((seq, message))
        replies = self._channel().exchange(requests, window=max(1, window), deadline=self.deadline)
        return [Event(e.key, e.value, e.event_type, e.namespace, e.sender, e.context, *replies[seq])
                for e, (seq, _) in zip(events, requests, strict=True)]

    def _prepared(self, event: Event) -> Event:
        """``event`` as it is sent: a None value as "", and this client's origin in its context."""
        if not isinstance(event, Event):
            return event  # validate_event names the problem
        if event.value is None:
            event = dataclasses.replace(event, value="")
        if self.origin is not None:
            event = dataclasses.replace(event, context=_with_origin(event.context, self.origin))
        return event

    # --- reading -------------------------------------------------------------------------------------

    def list_events(self, key=None, namespace: str | None = None, event_type: str | None = None,
                    sender: str | None = None, since_version: int = 0, limit: int | None = None, *,
                    until_version: int | None = None, since_time=None, until_time=None) -> list[Event]:
        """Stored events matching the filter, oldest first (``version > since_version``).

        ``key``: a key, a list of keys, ``"*"`` or None (all). ``limit``: the oldest N matches (page on
        with ``since_version=<last version seen>``). ``until_version`` is inclusive; ``since_time`` and
        ``until_time`` (datetime or ms since the epoch) select ``since_time <= create_time < until_time``.
        """
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise InvalidEventError(f"limit must be a positive integer or None, got {limit!r}")
        flt = EventFilter.build(key, namespace, event_type, sender, since_version, until_version, since_time,
                                until_time)
        events: list[Event] = []
        for _as_of, _last, _more, rows in self._pages(flt, limit, deadline=self.deadline):
            with paused_gc():
                events.extend([Event(k, v, t, n, s, c, ver, ct) for ver, ct, k, v, t, n, s, c in rows])
        return events

    def latest_version(self, key: str | None = None, namespace: str | None = None) -> int:
        """The highest version stored (of ``key`` and/or ``namespace`` if given); 0 if none."""
        EventFilter.build(key, namespace)  # validates
        body = protocol.dump_json({"key": key, "namespace": namespace})
        kind, reply = self._call(Kind.LATEST, body)
        return protocol.decode_u64(reply)

    def listen(self, keys="*", since_version: int = 0, callback: Callable[[Event], None] | None = None, *,
               namespace: str | None = None, event_type: str | None = None, sender: str | None = None):
        """Deliver every matching event with ``version > since_version``, in order, once, then follow live.

        Returns a :class:`~aiflow_notebook.events.listener.Listener` (``.stop()``, ``.wait_ready()``,
        ``.last_version``). ``callback(event)`` runs on the listener's thread; if it raises, the listener
        stops at that event (``.error``, ``.failed_event``; the event is not counted as delivered). Without
        a callback, take events with ``listener.get(timeout)`` or by iterating over the listener.
        ``callback`` may also be an object with a ``process(events)`` method (AI Flow's
        ``ListenerProcessor``): it gets each event in a list of one.
        """
        from aiflow_notebook.events.listener import Listener

        if callback is not None and not callable(callback) and callable(getattr(callback, "process", None)):
            processor = callback

            def callback(event: Event) -> None:
                processor.process([event])

        flt = EventFilter.build(keys, namespace, event_type, sender)
        if isinstance(since_version, bool) or not isinstance(since_version, int) or since_version < 0:
            raise InvalidEventError(f"since_version must be a non-negative integer, got {since_version!r}")
        listener = Listener(self, flt, since_version, callback)
        self._listeners.add(listener)
        return listener.start()

    # --- calls to a service beside the bus ----------------------------------------------------------------

    def call(self, method: str, args=None, data: bytes = b"", *,
             deadline: float | None | object = CLIENT_DEADLINE) -> tuple:
        """Ask the server's call handler (e.g. ``aiflow server``'s metadata store) to run ``method`` with
        JSON ``args`` and binary ``data``; returns ``(result, data)``. Resent on a timeout like every
        request, and executed once (the server keeps the answer under this call's id)."""
        body = protocol.join_body({"call": uuid.uuid4().hex, "method": method, "args": args}, data)
        kind, reply = self._call(Kind.CALL, body, deadline=deadline)
        if kind != Kind.RESULT:
            raise EventRequestError(f"the event server at {self.url} answered a call with message kind {kind}")
        result, payload = protocol.split_body(reply)
        return protocol.load_json(result), bytes(payload)

    # --- life cycle ----------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop this client's listeners and close its sockets (the client cannot be used afterwards)."""
        for listener in list(self._listeners):
            listener.stop()
        self._closed = True
        for channel in list(self._channels):
            channel.close()

    def __enter__(self) -> EventClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EventClient({self.url!r}, client_id={self.client_id!r})"

    # --- internals (also used by the listener) -------------------------------------------------------

    def _channel(self) -> _Channel:
        if self._closed:
            raise InvalidEventError("this EventClient is closed; create a new one")
        channel = getattr(self._local, "channel", None)
        if channel is None:
            channel = self._local.channel = _Channel(self)
            self._channels.add(channel)
        return channel

    def _drop_channel(self) -> None:
        channel = getattr(self._local, "channel", None)
        if channel is not None:
            channel.close()
            del self._local.channel

    def _hello(self) -> dict:
        """The server's WELCOME (publish address, limits), asked once; also starts the sequence numbers."""
        if self._welcome is None:
            with self._lock:
                if self._welcome is None:
                    welcome = self._ask_welcome(deadline=self.deadline)
                    self._seqs = itertools.count(welcome["last_seq"] + 1)
                    self._welcome = welcome
        return self._welcome

    def _ask_welcome(self, deadline: float | None, stop: threading.Event | None = None) -> dict:
        """HELLO: the server's publish address and limits, and this client id's last sequence number."""
        body = protocol.dump_json({"client_id": self.client_id})
        kind, reply = self._call(Kind.HELLO, body, deadline=deadline, stop=stop)
        welcome = protocol.load_json(reply)
        if welcome.get("protocol") != protocol.PROTOCOL_VERSION:
            raise EventRequestError(f"the server speaks protocol {welcome.get('protocol')}, this client "
                                    f"{protocol.PROTOCOL_VERSION}; use matching aiflow-notebook releases")
        welcome["publish"] = _reachable(welcome["publish"], self.url)
        return welcome

    def _call(self, kind: int, body: bytes, deadline: float | None | object = CLIENT_DEADLINE,
              stop: threading.Event | None = None) -> tuple[int, bytes]:
        """One request and its answer ``(kind, body)``; ``deadline`` None means retry until ``stop``."""
        request_id = next(self._ids)
        deadline = self.deadline if deadline is CLIENT_DEADLINE else deadline
        replies = self._channel().exchange([(request_id, protocol.frame(kind, request_id, body))], window=1,
                                           deadline=deadline, stop=stop)
        return replies[request_id]

    def _pages(self, flt: EventFilter, limit: int | None, deadline: float | None,
               stop: threading.Event | None = None) -> Iterator[tuple[int, int, bool, list]]:
        """``(as_of, last version, more, rows)`` a page at a time. The next page is asked for before this
        one is decoded, so the server reads page N+1 while the client parses page N."""
        remaining = limit
        exchange = self._channel().start_exchange(deadline, stop)

        def ask(since: int) -> None:
            request_id = next(self._ids)
            body = protocol.dump_json({"filter": {**flt.to_wire(), "since_version": since}, "limit": remaining})
            exchange.add(request_id, protocol.frame(Kind.LIST, request_id, body))

        ask(flt.since_version)
        for _request_id, (_kind, reply) in exchange:
            as_of, last, count, more = protocol.decode_events_header(reply)
            if remaining is not None:
                remaining -= count
            if more and last > flt.since_version and (remaining is None or remaining > 0):
                ask(last)  # before decoding this page
            with paused_gc():
                rows = protocol.decode_rows(reply, protocol.EVENTS_ROWS_OFFSET)
            yield as_of, last, more, rows


class _Channel:
    """One thread's DEALER socket and the requests it waits on (resent on a fresh socket on timeout)."""

    def __init__(self, client: EventClient):
        self._client = client
        self._socket: zmq.Socket | None = None

    def socket(self) -> zmq.Socket:
        if self._socket is None:
            sock = self._client.context.socket(zmq.DEALER)
            sock.linger = 0
            sock.rcvhwm = sock.sndhwm = 10_000
            if self._client.auth is not None:
                self._client.auth.apply(sock)
            sock.connect(self._client.url)
            self._socket = sock
        return self._socket

    def reset(self) -> None:
        """Drop the socket (and whatever is queued in it); the next use opens a fresh one."""
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    close = reset

    def __del__(self) -> None:
        try:
            self.reset()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def exchange(self, requests: list[tuple[int, bytes]], window: int, deadline: float | None,
                 stop: threading.Event | None = None) -> dict[int, tuple]:
        """Send ``requests`` and collect their answers: ``{id: (kind, body)}``, for SEND ``{seq: (version,
        create_time)}``."""
        exchange = _Exchange(self, deadline, stop, window)
        for request_id, message in requests:
            exchange.add(request_id, message)
        return dict(exchange)

    def start_exchange(self, deadline: float | None, stop: threading.Event | None = None) -> _Exchange:
        return _Exchange(self, deadline, stop, window=64)


class _Exchange:
    """Requests in flight on one channel; iterate to receive ``(id, answer)`` as answers arrive.

    ``add`` sends at once when fewer than ``window`` are unanswered. When nothing has been answered for
    the attempt timeout, the socket is replaced and every unanswered request is resent; the wait doubles
    up to :data:`MAX_ATTEMPT_TIMEOUT`. Past ``deadline`` (None: never; then ``stop`` ends it) this raises
    :class:`EventServerUnavailableError`. A server error ``unavailable`` (its database failed) is retried
    the same way; any other server error is raised as :class:`EventRequestError`.
    """

    def __init__(self, channel: _Channel, deadline: float | None, stop: threading.Event | None, window: int):
        self.channel = channel
        self.window = window
        self.stop = stop
        self.started = time.monotonic()
        self.end = float("inf") if deadline is None else self.started + deadline
        self.attempt = FIRST_ATTEMPT_TIMEOUT
        self.attempt_end = self.started + self.attempt
        self.waiting: deque[tuple[int, bytes]] = deque()  # not yet sent on the current socket
        self.in_flight: dict[int, bytes] = {}
        self.resends = 0

    def add(self, request_id: int, message: bytes) -> None:
        self.waiting.append((request_id, message))
        self._send_waiting()

    def _send_waiting(self) -> bool:
        """Send what the window allows; False if the socket would block (no peer yet: a failed CURVE
        handshake or a server that is down), in which case the rest waits for the next turn."""
        sock = self.channel.socket()
        while self.waiting and len(self.in_flight) < self.window:
            request_id, message = self.waiting[0]
            try:
                sock.send(message, zmq.NOBLOCK)
            except zmq.Again:
                return False
            self.waiting.popleft()
            self.in_flight[request_id] = message
        return True

    def __iter__(self) -> Iterator[tuple[int, tuple]]:
        while self.in_flight or self.waiting:
            sendable = self._send_waiting()
            now = time.monotonic()
            if now >= self.end:
                self.channel.reset()  # drop what is queued: it must not reach the server later
                raise self._unavailable()
            if self.stop is not None and self.stop.is_set():
                self.channel.reset()
                raise Stopped()
            if now >= self.attempt_end:
                self._resend(now)
                continue
            wait = min(self.attempt_end, self.end) - now
            if self.stop is not None:
                wait = min(wait, 0.1)
            sock = self.channel.socket()
            flags = zmq.POLLIN if sendable else zmq.POLLIN | zmq.POLLOUT
            if not sock.poll(max(1, int(wait * 1000)), flags) & zmq.POLLIN:
                continue
            message = sock.recv()
            try:
                kind, request_id = protocol.read_header(message)
            except ProtocolError as exc:
                log.warning("ignoring an unreadable answer from %s: %s", self.channel._client.url, exc)
                continue
            body = message[protocol.HEADER_SIZE:]
            if kind == Kind.ACK:
                for seq, version, created in protocol.decode_ack(body):
                    if self.in_flight.pop(seq, None) is not None:
                        self._progress()
                        yield seq, (version, created)
                continue
            if request_id not in self.in_flight:
                continue  # the answer to an earlier attempt, already answered
            if kind == Kind.ERROR:
                code, text = protocol.decode_error(body)
                if code != "unavailable":
                    self.in_flight.pop(request_id)
                    self.channel.reset()
                    raise EventRequestError(f"the event server at {self.channel._client.url} refused the "
                                            f"request: {text} [{code}]")
                self.waiting.append((request_id, self.in_flight.pop(request_id)))
                pause = min(1.0, 0.05 * 2 ** min(self.resends, 5))
                self.stop.wait(pause) if self.stop is not None else time.sleep(pause)
                self.resends += 1
                continue
            del self.in_flight[request_id]
            self._progress()
            yield request_id, (kind, body)

    def _progress(self) -> None:
        self.attempt = FIRST_ATTEMPT_TIMEOUT
        self.attempt_end = time.monotonic() + self.attempt

    def _resend(self, now: float) -> None:
        """Lazy Pirate: a fresh socket (stale answers and queued requests go with the old one), resend."""
        self.resends += 1
        self.channel.reset()
        self.waiting.extendleft(reversed(list(self.in_flight.items())))
        self.in_flight.clear()
        self.attempt = min(self.attempt * 2, MAX_ATTEMPT_TIMEOUT)
        self.attempt_end = now + self.attempt

    def _unavailable(self) -> EventServerUnavailableError:
        client = self.channel._client
        key_hint = (", that auth= is the server's public key and that this client's key is listed on the server "
                    "(aiflow server keys DIR --client NAME)" if client.auth is not None
                    else "; if the server runs with --curve, pass auth=<its server.key>")
        return EventServerUnavailableError(
            f"no answer from the event server at {client.url} within {time.monotonic() - self.started:.1f}s "
            f"({self.resends + 1} attempts). Check that it is running (aiflow server start), that the URL is "
            f"right{key_hint}.")


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while a page of events is decoded.

    Decoding allocates tens of thousands of lists and events that all survive, which makes the collector
    run over and over for nothing: pausing it halves the client's cost of a catch-up. It is only
    paused, never left off: collection resumes right after (and is left alone if it was already off).
    """
    enabled = gc.isenabled()
    if enabled:
        gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class Stopped(Exception):
    """Internal: a listener was stopped while one of its requests was in flight."""


def _reachable(publish: str, url: str) -> str:
    """The server's publish address as this client can reach it (a wildcard host becomes the URL's host)."""
    if publish.startswith("tcp://") and url.startswith("tcp://"):
        host, _, port = publish[len("tcp://"):].rpartition(":")
        if host in ("0.0.0.0", "*", "[::]", "::"):
            url_host = url[len("tcp://"):].rpartition(":")[0]
            return f"tcp://{url_host}:{port}"
    return publish
