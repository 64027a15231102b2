"""A client's session with one event server: what the client and its listeners both speak through.

Threads: ZeroMQ sockets must not be shared between threads, so every thread gets its own DEALER socket
(a :class:`Channel`), created on first use and closed when the thread ends or the wire closes.

Requests: a request that gets no answer in time is resent on a fresh socket (the zguide's "Lazy Pirate"),
with growing waits, until its deadline; the server answers a resend of a send with the version it already
stored, and keeps a call's answer under the call's id (:class:`Exchange`). HELLO asks the server for its
publish address and limits and for this client id's last sequence number, so a restarted client that
reuses its id numbers its sends after its earlier ones. LIST is read a page at a time (:meth:`Wire.pages`).
"""

from __future__ import annotations

import gc
import itertools
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

import zmq

from aiflow_notebook.core.waiting import Deadline
from aiflow_notebook.events import protocol
from aiflow_notebook.events.auth import CurveAuth
from aiflow_notebook.events.errors import (
    EventRequestError,
    EventServerUnavailableError,
    InvalidEventError,
    ProtocolError,
)
from aiflow_notebook.events.event import EventFilter
from aiflow_notebook.events.protocol import Kind

log = logging.getLogger(__name__)

FIRST_ATTEMPT_TIMEOUT = 0.5  # seconds without any answer before a request is resent; doubles each time
MAX_ATTEMPT_TIMEOUT = 4.0
_OTHER_IDS = 1 << 63  # ids of non-SEND requests; SEND ids are sequence numbers, far below
Answer = tuple[int, bytes]  # (kind, body) of an answer; for a SEND (version, create_time)


class Stopped(Exception):
    """A request was given up because its ``stop`` event was set (a listener is stopping)."""


class Wire:
    """The requests of one client (``client_id``, ``auth``) to the server at ``url``, from any thread.

    ``deadline`` arguments are seconds a request keeps being resent before it raises
    :class:`EventServerUnavailableError`; None means until ``stop`` is set (then :class:`Stopped`).
    """

    def __init__(self, url: str, client_id: str, auth: CurveAuth | None, context: zmq.Context):
        self.url = url
        self.client_id = client_id
        self.auth = auth
        self.context = context
        self.channels: weakref.WeakSet[Channel] = weakref.WeakSet()  # open ones, one per thread at most
        self._local = threading.local()
        self._lock = threading.Lock()
        self._welcome: dict | None = None
        self._seqs: Iterator[int] | None = None
        self._ids = itertools.count(_OTHER_IDS + 1)
        self._closed = False

    def channel(self) -> Channel:
        """This thread's channel (made on first use)."""
        if self._closed:
            raise InvalidEventError("this EventClient is closed; create a new one")
        channel = getattr(self._local, "channel", None)
        if channel is None:
            channel = self._local.channel = Channel(self)
            self.channels.add(channel)
        return channel

    def drop_channel(self) -> None:
        """Close this thread's channel (a thread that is about to end)."""
        channel = getattr(self._local, "channel", None)
        if channel is not None:
            channel.close()
            del self._local.channel

    def close(self) -> None:
        """Close every channel; the wire cannot be used afterwards."""
        self._closed = True
        for channel in list(self.channels):
            channel.close()

    # --- HELLO and sequence numbers ----------------------------------------------------------------------

    def welcome(self, deadline: float | None) -> dict:
        """The server's WELCOME, asked once; also starts this client's sequence numbers after its last."""
        if self._welcome is None:
            with self._lock:
                if self._welcome is None:
                    welcome = self.ask_welcome(deadline)
                    self._seqs = itertools.count(welcome["last_seq"] + 1)
                    self._welcome = welcome
        return self._welcome

    def next_seq(self) -> int:
        """The number of this client's next send (after :meth:`welcome`)."""
        return next(self._seqs)

    def ask_welcome(self, deadline: float | None, stop: threading.Event | None = None) -> dict:
        """HELLO: the server's publish address and limits, and this client id's last sequence number."""
        body = protocol.dump_json({"client_id": self.client_id})
        _kind, reply = self.request(Kind.HELLO, body, deadline, stop)
        welcome = protocol.load_json(reply)
        if welcome.get("protocol") != protocol.PROTOCOL_VERSION:
            raise EventRequestError(f"the server speaks protocol {welcome.get('protocol')}, this client "
                                    f"{protocol.PROTOCOL_VERSION}; use matching aiflow-notebook releases")
        welcome["publish"] = reachable(welcome["publish"], self.url)
        return welcome

    # --- requests ----------------------------------------------------------------------------------------

    def request(self, kind: int, body: bytes, deadline: float | None,
                stop: threading.Event | None = None) -> Answer:
        """One request (not a SEND) and its answer ``(kind, body)``."""
        request_id = next(self._ids)
        return self.exchange([(request_id, protocol.frame(kind, request_id, body))], 1, deadline, stop)[request_id]

    def exchange(self, requests: list[tuple[int, bytes]], window: int, deadline: float | None,
                 stop: threading.Event | None = None) -> dict[int, Answer]:
        """Send ``requests`` (``(id, message)``; a SEND's id is its sequence number) on this thread's channel,
        ``window`` in flight at most, and collect their answers by id."""
        exchange = Exchange(self.channel(), deadline, stop, window)
        for request_id, message in requests:
            exchange.add(request_id, message)
        return dict(exchange)

    def pages(self, flt: EventFilter, limit: int | None, deadline: float | None,
              stop: threading.Event | None = None) -> Iterator[tuple[int, int, bool, list]]:
        """LIST: ``(as_of, last version, more, rows)`` a page at a time. The next page is asked for before
        this one is decoded, so the server reads page N+1 while the client parses page N."""
        remaining = limit
        exchange = Exchange(self.channel(), deadline, stop, window=64)

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


class Channel:
    """One thread's DEALER socket (replaced by a fresh one when a request is resent)."""

    def __init__(self, wire: Wire):
        self.wire = wire
        self._socket: zmq.Socket | None = None

    def socket(self) -> zmq.Socket:
        if self._socket is None:
            sock = self.wire.context.socket(zmq.DEALER)
            sock.linger = 0
            sock.rcvhwm = sock.sndhwm = 10_000
            if self.wire.auth is not None:
                self.wire.auth.apply(sock)
            sock.connect(self.wire.url)
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


class Exchange:
    """Requests in flight on one channel; iterate to receive ``(id, answer)`` as answers arrive.

    ``add`` sends at once when fewer than ``window`` are unanswered. When nothing has been answered for
    the attempt timeout, the socket is replaced and every unanswered request is resent; the wait doubles
    up to :data:`MAX_ATTEMPT_TIMEOUT`. Past ``deadline`` (None: never; then ``stop`` ends it) this raises
    :class:`EventServerUnavailableError`. A server error ``unavailable`` (its database failed) is retried
    the same way; any other server error is raised as :class:`EventRequestError`.
    """

    def __init__(self, channel: Channel, deadline: float | None, stop: threading.Event | None, window: int):
        self.channel = channel
        self.window = window
        self.stop = stop
        self.deadline = Deadline(deadline)
        self.started = self.deadline.end - deadline if deadline is not None else time.monotonic()
        self.attempt = FIRST_ATTEMPT_TIMEOUT
        self.attempt_over = Deadline(self.attempt)
        self.waiting: deque[tuple[int, bytes]] = deque()  # not yet sent on the current socket
        self.in_flight: dict[int, bytes] = {}
        self.resends = 0

    def add(self, request_id: int, message: bytes) -> None:
        self.waiting.append((request_id, message))
        self._send_waiting()

    def __iter__(self) -> Iterator[tuple[int, tuple]]:
        while self.in_flight or self.waiting:
            sendable = self._send_waiting()
            now = time.monotonic()  # once a turn: this loop runs twice per request sent
            self._check_time(now)
            if now >= self.attempt_over.end:
                self._resend()
                continue
            message = self._receive(sendable, now)
            if message is not None:
                yield from self._answers(message)

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

    def _check_time(self, now: float) -> None:
        """Raise once the deadline passed or ``stop`` is set, dropping what is queued (it must not reach the
        server later)."""
        if now >= self.deadline.end:
            self.channel.reset()
            raise self._unavailable()
        if self.stop is not None and self.stop.is_set():
            self.channel.reset()
            raise Stopped()

    def _receive(self, sendable: bool, now: float) -> bytes | None:
        """The next message, or None when none came within this turn's wait."""
        wait = min(self.attempt_over.end, self.deadline.end) - now
        if self.stop is not None:
            wait = min(wait, 0.1)
        sock = self.channel.socket()
        flags = zmq.POLLIN if sendable else zmq.POLLIN | zmq.POLLOUT
        if not sock.poll(max(1, int(wait * 1000)), flags) & zmq.POLLIN:
            return None
        return sock.recv()

    def _answers(self, message: bytes) -> Iterator[tuple[int, tuple]]:
        """The answers ``message`` brings: several for an ACK, none for a stale or retryable one."""
        try:
            kind, request_id = protocol.read_header(message)
        except ProtocolError as exc:
            log.warning("ignoring an unreadable answer from %s: %s", self.channel.wire.url, exc)
            return
        body = message[protocol.HEADER_SIZE:]
        if kind == Kind.ACK:
            for seq, version, created in protocol.decode_ack(body):
                if self.in_flight.pop(seq, None) is not None:
                    self._progress()
                    yield seq, (version, created)
            return
        if request_id not in self.in_flight:
            return  # the answer to an earlier attempt, already answered
        if kind == Kind.ERROR:
            self._refused(request_id, body)
            return
        del self.in_flight[request_id]
        self._progress()
        yield request_id, (kind, body)

    def _refused(self, request_id: int, body: bytes) -> None:
        """An ERROR answer: ``unavailable`` is retried after a growing pause, any other is raised."""
        code, text = protocol.decode_error(body)
        if code != "unavailable":
            self.in_flight.pop(request_id)
            self.channel.reset()
            raise EventRequestError(f"the event server at {self.channel.wire.url} refused the request: "
                                    f"{text} [{code}]")
        self.waiting.append((request_id, self.in_flight.pop(request_id)))
        self.deadline.sleep(min(1.0, 0.05 * 2 ** min(self.resends, 5)), self.stop)
        self.resends += 1

    def _progress(self) -> None:
        self.attempt = FIRST_ATTEMPT_TIMEOUT
        self.attempt_over.restart(self.attempt)

    def _resend(self) -> None:
        """Lazy Pirate: a fresh socket (stale answers and queued requests go with the old one), resend."""
        self.resends += 1
        self.channel.reset()
        self.waiting.extendleft(reversed(list(self.in_flight.items())))
        self.in_flight.clear()
        self.attempt = min(self.attempt * 2, MAX_ATTEMPT_TIMEOUT)
        self.attempt_over.restart(self.attempt)

    def _unavailable(self) -> EventServerUnavailableError:
        wire = self.channel.wire
        key_hint = (", that auth= is the server's public key and that this client's key is listed on the server "
                    "(aiflow server keys DIR --client NAME)" if wire.auth is not None
                    else "; if the server runs with --curve, pass auth=<its server.key>")
        return EventServerUnavailableError(
            f"no answer from the event server at {wire.url} within {time.monotonic() - self.started:.1f}s "
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


def reachable(publish: str, url: str) -> str:
    """The server's publish address as this client can reach it (a wildcard host becomes the URL's host)."""
    if publish.startswith("tcp://") and url.startswith("tcp://"):
        host, _, port = publish[len("tcp://"):].rpartition(":")
        if host in ("0.0.0.0", "*", "[::]", "::"):
            url_host = url[len("tcp://"):].rpartition(":")[0]
            return f"tcp://{url_host}:{port}"
    return publish
