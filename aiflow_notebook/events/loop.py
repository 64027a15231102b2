"""The event server's loop: one thread that stores sends in group commits, answers reads and publishes.

The loop drains every request that is waiting, stores all SENDs of the drain in ONE transaction, then acks
them, publishes them and answers the reads. While a commit runs, the next requests queue up in ZeroMQ's
I/O thread, so batches grow with load by themselves (group commit without a timer, so no added latency
when idle). Acks are sent only after the commit: an acked event is durable.

Versions are numbered by this loop (it is the log's only writer: :meth:`EventLog.claim_writer`), so a
batch's versions are contiguous and a listener can tell from ``first == last seen + 1`` that it missed
nothing; publications are sent in version order, and a HEARTBEAT with the latest version every
``heartbeat_interval``. Anything malformed is answered with an ERROR frame (and logged, rate-limited); a
database failure is answered with a retryable ``unavailable`` error. Nothing a client sends can stop the
loop. CALLs go to :class:`~aiflow_notebook.events.calls.CallWorkers`; the loop sends their answers.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator

import zmq

from aiflow_notebook.core.waiting import Deadline
from aiflow_notebook.events import protocol
from aiflow_notebook.events.auth import ServerCurve
from aiflow_notebook.events.calls import CallWorkers, Reply, unsupported
from aiflow_notebook.events.dedupe import SendRegistry
from aiflow_notebook.events.errors import EventServerError, InvalidEventError, ProtocolError
from aiflow_notebook.events.event import EventFilter, is_count
from aiflow_notebook.events.log import EventLog
from aiflow_notebook.events.protocol import Kind

log = logging.getLogger(__name__)

PAGE_EVENTS = 10_000  # events per LIST answer
PAGE_BYTES = 8 << 20  # ... and about this many bytes of values
MAX_DRAIN = 4096  # requests taken from the socket per loop turn


class ServerLoop:
    """Serves the requests on ``router`` from the log ``event_log`` and publishes on ``pub`` until
    ``stopping`` is set or a message arrives on ``control``.

    ``curve``: the server's CURVE authenticator (requests then carry their client's name), or None.
    ``calls``: the workers of CALL requests, or None (calls are answered "unsupported"). ``stats``: the
    counters this loop adds to.
    """

    def __init__(self, event_log: EventLog, router: zmq.Socket, pub: zmq.Socket, control: zmq.Socket, *,
                 publish_url: str, curve: ServerCurve | None, calls: CallWorkers | None, max_message_bytes: int,
                 heartbeat_interval: float, stats: dict[str, int], stopping: threading.Event):
        self._log = event_log
        self._sends = SendRegistry(event_log)
        self._router, self._pub, self._control = router, pub, control
        self._publish_url = publish_url
        self._curve = curve
        self._calls = calls
        self._max_message_bytes = max_message_bytes
        self._heartbeat_interval = heartbeat_interval
        self._stats = stats
        self._stopping = stopping
        self._rejects = _RateLimitedLog(log)
        self._readers = {Kind.LIST: self._list, Kind.HELLO: self._hello, Kind.LATEST: self._latest}
        self.last_version = event_log.last_version()
        self._last_time = 0

    def run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._router, zmq.POLLIN)
        poller.register(self._control, zmq.POLLIN)
        wake = self._calls.wake_fd if self._calls is not None else -1
        if wake >= 0:
            poller.register(wake, zmq.POLLIN)
        heartbeat = Deadline(0)
        while not self._stopping.is_set():
            ready = dict(poller.poll(min(heartbeat.left() * 1000, 200)))
            if self._control in ready:
                break
            if self._router in ready:
                self._serve_requests()
            if wake in ready:
                self._send(self._calls.finished())
            if heartbeat.passed:
                self._pub.send(protocol.encode_heartbeat(self.last_version))
                heartbeat = Deadline(self._heartbeat_interval)

    def _serve_requests(self) -> None:
        try:
            self._drain()
        except EventServerError:
            raise  # e.g. another server took the log over: this one must not write any more
        except Exception:  # noqa: BLE001 - a bug must not take the bus down; clients retry
            log.exception("event server: unexpected error while serving a batch of requests")

    def _send(self, replies: Iterable[Reply]) -> None:
        for identity, message in replies:
            self._router.send_multipart([identity, message])

    # --- requests as they arrive ---------------------------------------------------------------------

    def _drain(self) -> None:
        sends, reads = [], []
        for identity, request, user in self._received():
            if request.kind == Kind.CALL:
                self._send(self._calls.submit(identity, request, user) if self._calls is not None
                           else [unsupported(identity, request)])
            else:
                (sends if request.kind == Kind.SEND else reads).append((identity, request))
        if sends:
            self._store(sends)
        for identity, request in reads:
            self._answer(identity, request)

    def _received(self) -> Iterator[tuple[bytes, protocol.Request, str | None]]:
        """Up to :data:`MAX_DRAIN` waiting requests, parsed and (under CURVE) authenticated, with their
        client's name; anything malformed is answered with an error and skipped."""
        curve = self._curve is not None
        for _ in range(MAX_DRAIN):
            try:
                frames = self._router.recv_multipart(zmq.NOBLOCK, copy=not curve)
            except zmq.Again:
                return
            user = None
            if curve:  # the ZAP User-Id of the connection: the name of the client's listed key
                user = frames[-1].get("User-Id")
                frames = [frame.bytes for frame in frames]
            request = self._parsed(frames)
            if request is not None:
                if curve:
                    _authenticated(request, user, self._curve)
                yield frames[0], request, user

    def _parsed(self, frames: list[bytes]) -> protocol.Request | None:
        if len(frames) != 2:
            self._reject(frames[0], frames[1] if len(frames) > 1 else b"",
                         ProtocolError("bad-body", f"expected one frame per message, got {len(frames) - 1}"))
            return None
        identity, message = frames
        try:
            return protocol.parse_request(message, self._max_message_bytes)
        except ProtocolError as exc:
            self._reject(identity, message, exc)
            return None

    def _reject(self, identity: bytes, message: bytes, exc: ProtocolError) -> None:
        self._stats["rejected"] += 1
        self._rejects.warning(exc.code, "rejected a message of %d bytes: %s", len(message), exc)
        request_id = 0
        if len(message) >= protocol.HEADER_SIZE and message[:2] == protocol.MAGIC:
            request_id = protocol.HEADER.unpack_from(message)[3]
        self._router.send_multipart([identity, protocol.encode_error(request_id, exc.code, str(exc))])

    # --- writes: group commit ------------------------------------------------------------------------

    def _store(self, sends: list) -> None:
        """Store the new sends of one drain in one transaction; ack resends with what was stored."""
        now = max(time.time_ns() // 1_000_000, self._last_time)
        try:
            rows, outcomes = self._new_rows(sends, now)
            if rows:
                self._log.append(rows)
        except self._log.DatabaseError as exc:
            # IntegrityError included: a (client_id, seq) clash means the registry is out of date (the log
            # was written behind our back); it is re-read from the log when the clients retry.
            self._database_failed(exc, [(identity, request.request_id) for identity, request in sends])
            return
        self._stats["duplicates"] += len(sends) - len(rows)
        if rows:
            self._committed(rows, now)
        self._ack(outcomes)

    def _new_rows(self, sends: list, now: int) -> tuple[list[tuple], list[tuple]]:
        """The rows to append (numbered after the last version) and ``(identity, seq, version, created)``
        for every send; a resend of a stored event gets what was stored."""
        rows, fresh, outcomes = [], {}, []
        version = self.last_version
        for identity, request in sends:
            seq = request.request_id
            client_id, key, value, event_type, namespace, sender, context = request.payload
            prior = self._sends.lookup(client_id, seq)
            if prior is not None:
                outcomes.append((identity, seq, prior[0], prior[1]))
                continue
            stored = fresh.get((client_id, seq))
            if stored is None:  # (else: the same send twice in one drain)
                version += 1
                stored = fresh[(client_id, seq)] = version
                rows.append((version, key, value, event_type, namespace, sender, context, now, client_id, seq))
            outcomes.append((identity, seq, stored, now))
        return rows, outcomes

    def _committed(self, rows: list[tuple], now: int) -> None:
        """Count, remember and publish the rows of a commit."""
        self.last_version, self._last_time = rows[-1][0], now
        self._stats["stored"] += len(rows)
        self._stats["batches"] += 1
        for row in rows:
            self._sends.record(row[8], row[9], row[0], now)
        wire = [(r[0], now, r[1], r[2], r[3], r[4], r[5], r[6]) for r in rows]
        self._pub.send(protocol.encode_batch(rows[0][0], self.last_version, protocol.dump_json(wire)))

    def _ack(self, outcomes: list[tuple]) -> None:
        acks: dict[bytes, list] = defaultdict(list)
        for identity, seq, stored, created in outcomes:
            acks[identity].append((seq, stored, created))
        self._send((identity, protocol.encode_ack(items)) for identity, items in acks.items())

    def _database_failed(self, exc: Exception, requests: list[tuple[bytes, int]]) -> None:
        self._stats["db_errors"] += 1
        log.error("event log %s failed: %s; answering 'unavailable' (clients retry)", self._log.url, exc)
        self._log.reset()
        self._sends.forget()
        try:
            self.last_version = self._log.last_version()
        except self._log.DatabaseError:
            pass  # still down; versions are re-read on the next failure or success
        for identity, request_id in requests:
            self._router.send_multipart([identity, protocol.encode_error(
                request_id, "unavailable", f"the event log is unavailable ({type(exc).__name__}); retry")])

    # --- reads ---------------------------------------------------------------------------------------

    def _answer(self, identity: bytes, request: protocol.Request) -> None:
        try:
            reply = self._readers.get(request.kind, self._sync)(request.request_id, request.payload)
        except (InvalidEventError, ValueError) as exc:
            reply = protocol.encode_error(request.request_id, "bad-request", str(exc))
        except self._log.DatabaseError as exc:
            self._database_failed(exc, [(identity, request.request_id)])
            return
        self._router.send_multipart([identity, reply])

    def _list(self, rid: int, payload: dict) -> bytes:
        flt = EventFilter.from_wire(payload.get("filter"))
        limit = payload.get("limit")
        if limit is not None and not is_count(limit, 1):
            raise InvalidEventError(f"limit must be a positive integer or null, got {limit!r}")
        as_of = self.last_version
        found = self._log.query(flt, PAGE_EVENTS if limit is None else min(limit, PAGE_EVENTS), PAGE_BYTES)
        last = found.last_version if found.count else as_of
        return protocol.encode_events(rid, as_of, last, found.count, found.more, found.json)

    def _hello(self, rid: int, payload: dict) -> bytes:
        client_id = payload.get("client_id")
        if client_id is not None and not (isinstance(client_id, str) and 0 < len(client_id) <= 255):
            raise InvalidEventError("client_id must be a string of 1 to 255 characters")
        return protocol.frame(Kind.WELCOME, rid, protocol.dump_json({
            "protocol": protocol.PROTOCOL_VERSION,
            "publish": self._publish_url,
            "max_message_bytes": self._max_message_bytes,
            "heartbeat_interval": self._heartbeat_interval,
            "last_seq": self._sends.last_seq(client_id) if client_id else 0,
            "latest_version": self.last_version,
        }))

    def _latest(self, rid: int, payload: dict) -> bytes:
        flt = EventFilter.build(key=payload.get("key"), namespace=payload.get("namespace"))
        if flt.keys is None and flt.namespace is None:
            version = self.last_version
        else:
            version = self._log.latest_version(flt)
        return protocol.encode_u64(Kind.VERSION, rid, version)

    def _sync(self, rid: int, _payload: object) -> bytes:
        """A listener asks for a publication to learn that its subscription is live."""
        self._pub.send(protocol.encode_heartbeat(self.last_version))
        return protocol.encode_u64(Kind.SYNCED, rid, self.last_version)


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
