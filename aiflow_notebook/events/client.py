"""The event client: send (idempotently), list, ask for the latest version, listen.

One ``EventClient`` can be used from any number of threads at once: it speaks through a
:class:`~aiflow_notebook.events.wire.Wire`, which gives every thread its own socket and resends a request
that got no answer in time until ``deadline`` seconds have passed.

Idempotent send: the client has a ``client_id`` and numbers its sends 1, 2, 3, ... (continuing after the
highest number the server holds for that id, learnt from the HELLO answer, so a restarted client that
reuses its id never collides with its earlier sends); the server answers a resend with the version it
already stored. ``send_events`` pipelines: it keeps up to ``window`` sends in flight, and an ack still
means "durably stored".
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import socket as _socket
import uuid
import weakref
from collections.abc import Callable, Iterable

import zmq

from aiflow_notebook.core.vocabulary import DEFAULT_NAMESPACE, RUN_FIELD, run_context
from aiflow_notebook.events import process_bus, protocol
from aiflow_notebook.events.auth import CurveAuth
from aiflow_notebook.events.errors import EventRequestError, EventTooLargeError, InvalidEventError
from aiflow_notebook.events.event import Event, EventFilter, is_count, validate_event
from aiflow_notebook.events.listener import Listener
from aiflow_notebook.events.protocol import Kind
from aiflow_notebook.events.wire import Wire, paused_gc

DEFAULT_URL = "tcp://127.0.0.1:50052"
DEFAULT_DEADLINE = 30.0
CLIENT_DEADLINE = object()  # "the client's own deadline" (None means: no deadline)


def run_origin_from_environment() -> dict | None:
    """The run this process is a job of (``$AIFLOW_RUN_ID``, ``$AIFLOW_WORKFLOW``, ``$AIFLOW_PROJECT``,
    which the scheduler sets for a job's process), else None."""
    run = os.environ.get("AIFLOW_RUN_ID", "")
    if not run.isdigit():
        return None
    fields = {field: os.environ[variable] for field, variable in
              (("workflow", "AIFLOW_WORKFLOW"), ("project", "AIFLOW_PROJECT")) if os.environ.get(variable)}
    return run_context(int(run), **fields)


def _with_origin(context: str | None, origin: dict) -> str | None:
    """``context`` with ``origin``'s fields added, unless it already has a run field or is not a JSON object
    (a context of the sender's own format is left as it is, and the event stays global)."""
    if context is None:
        return json.dumps(origin)
    try:
        parsed = json.loads(context)
    except ValueError:
        return context
    if not isinstance(parsed, dict) or RUN_FIELD in parsed:
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
        url = _with_scheme(url or default_event_url())
        if not url.startswith(("tcp://", "ipc://", "inproc://")):
            raise InvalidEventError(f"bad event server URL {url!r}; expected e.g. {DEFAULT_URL}")
        if client_id is not None and not (isinstance(client_id, str) and 0 < len(client_id) <= 255
                                          and client_id.isprintable()):
            raise InvalidEventError(f"client_id must be 1 to 255 printable characters, got {client_id!r}")
        client_id = client_id or f"{_socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.wire = Wire(url, client_id, CurveAuth.coerce(auth), context or zmq.Context.instance())
        # fields merged into the JSON context of every event sent that does not name a run itself: inside
        # a job, from_environment() puts the job's run here, so the job's events belong to its run
        self.origin = dict(origin) if origin else None
        self.deadline = deadline
        self._listeners: weakref.WeakSet[Listener] = weakref.WeakSet()

    @property
    def url(self) -> str:
        return self.wire.url

    @url.setter
    def url(self, url: str) -> None:  # (before first use: a server's address once it is bound)
        self.wire.url = url

    @property
    def client_id(self) -> str:
        return self.wire.client_id

    @property
    def auth(self) -> CurveAuth | None:
        return self.wire.auth

    @property
    def context(self) -> zmq.Context:
        return self.wire.context

    @classmethod
    def from_environment(cls, **kwargs) -> EventClient:
        """A client for ``$AIFLOW_EVENT_URL`` with ``$AIFLOW_EVENT_SERVER_KEY`` (if set) as CURVE key; in a
        process connected to an ``aiflow server`` (``af.connect``, ``$AIFLOW_SERVER_URL``), for that server.

        Inside a job (``$AIFLOW_RUN_ID`` is set by the scheduler) the events it sends belong to the job's
        run: their context names the run (``{"run": 7, "workflow": "ctr", "project": "demo"}``), so the
        rules of that run react to them and other live runs of the same workflow do not. Events sent from
        outside any run (a notebook cell, another service) stay global. ``origin=None`` opts out.
        """
        server = process_bus.current()  # af.connect / $AIFLOW_SERVER_URL: that server's bus (never in a job)
        if server is not None:
            kwargs.setdefault("auth", server.auth)
            return cls(server.url, **kwargs)
        kwargs.setdefault("auth", os.environ.get("AIFLOW_EVENT_SERVER_KEY") or None)
        kwargs.setdefault("origin", run_origin_from_environment())
        return cls(default_event_url(), **kwargs)

    # --- sending -------------------------------------------------------------------------------------

    def send_event(self, event: Event | None = None, /, *, key: str | None = None, value: str | None = None,
                   event_type: str = "UNDEFINED", namespace: str = DEFAULT_NAMESPACE, sender: str | None = None,
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
        limit = self._hello()["max_message_bytes"]
        requests = [self._framed(event, limit) for event in events]
        replies = self.wire.exchange(requests, max(1, window), self.deadline)
        return [Event(e.key, e.value, e.event_type, e.namespace, e.sender, e.context, *replies[seq])
                for e, (seq, _) in zip(events, requests, strict=True)]

    def _framed(self, event: Event, limit: int) -> tuple[int, bytes]:
        """``(seq, SEND message)`` for ``event`` under this client's next sequence number."""
        seq = self.wire.next_seq()
        message = protocol.encode_send(seq, self.client_id, event.key, event.value, event.event_type,
                                       event.namespace, event.sender, event.context)
        if len(message) > limit:
            raise EventTooLargeError(
                f"the event for key {event.key!r} is {len(message)} bytes on the wire; the server accepts at "
                f"most {limit} (its max_message_bytes). Store large payloads elsewhere (a file, the blob "
                "store) and send a reference.")
        return seq, message

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
        if limit is not None and not is_count(limit, 1):
            raise InvalidEventError(f"limit must be a positive integer or None, got {limit!r}")
        flt = EventFilter.build(key, namespace, event_type, sender, since_version, until_version, since_time,
                                until_time)
        events: list[Event] = []
        for _as_of, _last, _more, rows in self.wire.pages(flt, limit, self.deadline):
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
        if callback is not None and not callable(callback) and callable(getattr(callback, "process", None)):
            processor = callback

            def callback(event: Event) -> None:
                processor.process([event])

        flt = EventFilter.build(keys, namespace, event_type, sender)
        if not is_count(since_version):
            raise InvalidEventError(f"since_version must be a non-negative integer, got {since_version!r}")
        listener = Listener(self.wire, flt, since_version, callback)
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
        self.wire.close()

    def __enter__(self) -> EventClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EventClient({self.url!r}, client_id={self.client_id!r})"

    # --- internals ------------------------------------------------------------------------------------

    def _hello(self) -> dict:
        """The server's WELCOME (publish address, limits), asked once; also starts the sequence numbers."""
        return self.wire.welcome(self.deadline)

    def _call(self, kind: int, body: bytes, deadline: float | None | object = CLIENT_DEADLINE) -> tuple[int, bytes]:
        """One request and its answer ``(kind, body)``; ``deadline`` None means retry until the server answers."""
        return self.wire.request(kind, body, self.deadline if deadline is CLIENT_DEADLINE else deadline)

