"""What nodes and the application master (AM) say to each other: typed messages, their wire form, a client.

Every message is a frozen dataclass with one way onto the wire (:func:`encode_request`,
:func:`encode_reply`: a JSON object, fields at their defaults left out) and one way back
(:func:`parse_request`, :func:`parse_reply`), which checks every field. The AM's port can be reached by
anything, so a request that does not parse is a :class:`BadMessage` — answered with :class:`Rejected`,
never acted on.

Requests, each with the reply it gets (any request may instead get :class:`Rejected`):

- :class:`Heartbeat` (node runner, every ``heartbeat_interval``): its child's state and progress →
  :class:`Verdict`: ``run`` attempt N, ``stop``, ``fail`` or ``cancel``.
- :class:`Rendezvous` (child): its host and advertised properties → :class:`RendezvousReply`: the whole
  cluster spec once every node of the attempt registered, else ``wait``, or ``stale`` (attempt replaced).
- :class:`Barrier` (child): a name every node must reach → :class:`BarrierReply`: ``go``, or ``wait`` with
  the nodes still missing, or ``stale``.
- :class:`FinishedWorkers` (child) → :class:`FinishedWorkersReply`: the workers whose entry returned.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar, Literal

import zmq

from aiflow_notebook.core.waiting import Deadline, polling
from dl_on_flink.errors import RendezvousError
from dl_on_flink.framework.state_machine import NodeId

MAX_REQUEST_BYTES = 1 << 20  # a node's request is a few hundred bytes; larger ones are answered with an error
MAX_FRAME_BYTES = 16 << 20  # larger frames are not even read: ZeroMQ drops the connection that sends one
CHILD_STATES = ("none", "running", "finished", "failed")
ACTIONS = ("run", "stop", "fail", "cancel")
ChildState = Literal["none", "running", "finished", "failed"]


class BadMessage(ValueError):
    """A message that does not parse (the text says what is wrong with it)."""


# --- how a field is checked on the wire -------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_count(value: Any) -> bool:
    return _is_int(value) and value >= 0


def _is_amount(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value and value >= 0


def _is_node(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and _is_int(value[1])


def _is_text(limit: int | None = None) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, str) and value != "" and (limit is None or len(value) <= limit)


def _wire(valid: Callable[[Any], bool], expected: str, load: Callable[[Any], Any] | None = None,
          dump: Callable[[Any], Any] | None = None) -> dict[str, Any]:
    """A field's metadata: ``valid`` checks the JSON value, ``load``/``dump`` turn it into the field's value
    and back (default: as it is)."""
    return {"valid": valid, "expected": expected, "load": load, "dump": dump}


NODE = _wire(_is_node, "[node type, index]", load=tuple, dump=list)
ATTEMPT = _wire(_is_int, "an int")
OPTIONAL_TEXT = _wire(lambda v: isinstance(v, str), "a string")
FLAG = _wire(lambda v: isinstance(v, bool), "a boolean")


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def _has_default(f) -> bool:
    return f.default is not MISSING or f.default_factory is not MISSING


def _load(cls: type, msg: dict[str, Any], what: str, strict: bool = False) -> Any:
    """``cls`` from the JSON object ``msg``; a missing or null field takes its default (BadMessage if none)."""
    if strict and (unknown := set(msg) - {f.name for f in fields(cls)}):
        raise BadMessage(f"{what}: unknown field(s) {sorted(unknown)}")
    values = {}
    for f in fields(cls):
        value, rule = msg.get(f.name), f.metadata
        if value is None and _has_default(f):
            continue
        if value is None or not rule["valid"](value):
            raise BadMessage(f"{what}: {f.name!r} must be {rule['expected']}, got {_short(value)}")
        values[f.name] = rule["load"](value) if rule["load"] else value
    return cls(**values)


def _dump(message: Any) -> dict[str, Any]:
    """The JSON object of ``message``: its fields, those at their default left out."""
    out = {}
    for f in fields(message):
        value = getattr(message, f.name)
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        if _has_default(f) and value == default:
            continue
        out[f.name] = f.metadata["dump"](value) if f.metadata["dump"] else value
    return out


# --- progress ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    """What a running child is doing: written by the child (:meth:`.Context._progress`), completed by its
    node runner (``cpu``, ``input_blocked``) and carried on the heartbeat. Every field may be missing."""

    phase: str | None = field(default=None, metadata=_wire(lambda v: isinstance(v, str), "a string"))
    message: str | None = field(default=None, metadata=OPTIONAL_TEXT)
    reports: int | None = field(default=None, metadata=_wire(_is_count, "a count"))
    rows_read: int | None = field(default=None, metadata=_wire(_is_count, "a count"))
    rows_written: int | None = field(default=None, metadata=_wire(_is_count, "a count"))
    waiting: bool | None = field(default=None, metadata=FLAG)
    cpu: float | None = field(default=None, metadata=_wire(_is_amount, "a number >= 0"))
    input_blocked: float | None = field(default=None, metadata=_wire(_is_amount, "a number >= 0"))

    def to_json(self) -> str:
        return json.dumps(_dump(self))

    @classmethod
    def from_json(cls, text: str | bytes) -> Progress:
        """BadMessage when ``text`` is not a progress object (also for a field it does not know)."""
        try:
            msg = json.loads(text)
        except ValueError as exc:
            raise BadMessage(f"progress is not JSON ({exc})") from None
        return _from_object(cls, msg, "progress")


def _from_object(cls: type, msg: Any, what: str) -> Any:
    if not isinstance(msg, dict):
        raise BadMessage(f"{what}: not an object but {type(msg).__name__}")
    return _load(cls, msg, what, strict=cls is Progress)


PROGRESS = _wire(lambda v: isinstance(v, dict), "a progress object",
                 load=lambda v: _from_object(Progress, v, "progress"), dump=_dump)


# --- replies ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rejected:
    """The AM did not act on a request: malformed, from an unknown node, or it failed on it."""

    error: str = field(metadata=_wire(lambda v: isinstance(v, str), "a string"))


@dataclass(frozen=True)
class Verdict:
    """What a node runner does next: ``run`` ``attempt``, ``stop`` (finished), ``fail`` (``error``) or
    ``cancel`` (Flink cancelled the job)."""

    action: str = field(metadata=_wire(lambda v: v in ACTIONS, f"one of {ACTIONS}"))
    attempt: int | None = field(default=None, metadata=ATTEMPT)
    error: str | None = field(default=None, metadata=OPTIONAL_TEXT)


@dataclass(frozen=True)
class RendezvousReply:
    """``cluster`` (every node's host and properties by node type) once all registered; else ``wait``,
    or ``stale`` when the attempt was replaced."""

    cluster: dict[str, list[dict]] | None = field(default=None, metadata=_wire(lambda v: isinstance(v, dict),
                                                                               "an object"))
    wait: bool = field(default=False, metadata=FLAG)
    stale: bool = field(default=False, metadata=FLAG)


@dataclass(frozen=True)
class BarrierReply:
    """``go`` once every node reached the barrier; else ``wait`` (``missing``: who has not), or ``stale``."""

    go: bool = field(default=False, metadata=FLAG)
    wait: bool = field(default=False, metadata=FLAG)
    missing: tuple[NodeId, ...] = field(default=(), metadata=_wire(
        lambda v: isinstance(v, list) and all(_is_node(n) for n in v), "a list of nodes",
        load=lambda v: tuple(tuple(n) for n in v), dump=lambda v: [list(n) for n in v]))
    stale: bool = field(default=False, metadata=FLAG)


@dataclass(frozen=True)
class FinishedWorkersReply:
    workers: tuple[int, ...] = field(metadata=_wire(
        lambda v: isinstance(v, list) and all(_is_int(i) for i in v), "a list of indices", load=tuple, dump=list))


Reply = Rejected | Verdict | RendezvousReply | BarrierReply | FinishedWorkersReply


# --- requests ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Heartbeat:
    """A node runner's report: the state of its child for ``attempt`` (None: none started yet), the error of
    a failed one, its progress while it runs; ``cancelled`` once it noticed that Flink cancelled the job."""

    op: ClassVar[str] = "hb"
    reply: ClassVar[type] = Verdict
    node: NodeId = field(metadata=NODE)
    attempt: int | None = field(default=None, metadata=ATTEMPT)
    child: ChildState = field(default="none", metadata=_wire(lambda v: v in CHILD_STATES, f"one of {CHILD_STATES}"))
    error: str | None = field(default=None, metadata=OPTIONAL_TEXT)
    progress: Progress | None = field(default=None, metadata=PROGRESS)
    cancelled: bool = field(default=False, metadata=FLAG)


@dataclass(frozen=True)
class Rendezvous:
    """A child of ``attempt`` is up on ``host`` and advertises ``props`` (e.g. its rendezvous port)."""

    op: ClassVar[str] = "rendezvous"
    reply: ClassVar[type] = RendezvousReply
    node: NodeId = field(metadata=NODE)
    attempt: int = field(metadata=ATTEMPT)
    host: str = field(metadata=_wire(_is_text(), "a non-empty string"))
    props: dict[str, str] = field(default_factory=dict, metadata=_wire(
        lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()), "an object of strings"))


@dataclass(frozen=True)
class Barrier:
    """A child of ``attempt`` reached the barrier ``name``."""

    op: ClassVar[str] = "barrier"
    reply: ClassVar[type] = BarrierReply
    node: NodeId = field(metadata=NODE)
    attempt: int = field(metadata=ATTEMPT)
    name: str = field(metadata=_wire(_is_text(200), "a string of 1 to 200 characters"))


@dataclass(frozen=True)
class FinishedWorkers:
    """Which workers' entries have returned in ``attempt``?"""

    op: ClassVar[str] = "finished"
    reply: ClassVar[type] = FinishedWorkersReply
    node: NodeId = field(metadata=NODE)
    attempt: int = field(metadata=ATTEMPT)


Request = Heartbeat | Rendezvous | Barrier | FinishedWorkers
REQUESTS: dict[str, type] = {cls.op: cls for cls in (Heartbeat, Rendezvous, Barrier, FinishedWorkers)}


# --- the wire ---------------------------------------------------------------------------------------------


def encode_request(request: Request, rid: int) -> bytes:
    """``request`` as one frame; ``rid`` comes back in the reply (a late reply is told from the next one)."""
    return json.dumps({"op": request.op, **_dump(request), "rid": rid}).encode()


def parse_request(frames: list[bytes]) -> tuple[Request, Any]:
    """The request in ``frames`` (what followed the sender's identity) and its ``rid``; BadMessage if malformed."""
    if len(frames) != 1:
        raise BadMessage(f"expected 1 frame after the identity, got {len(frames)}")
    if len(frames[0]) > MAX_REQUEST_BYTES:
        raise BadMessage(f"request of {len(frames[0])} bytes, more than {MAX_REQUEST_BYTES}")
    msg = _json_object(frames[0])
    if not _is_node(msg.get("node")):
        raise BadMessage(f"'node' must be [node type, index], got {_short(msg.get('node'))}")
    op = msg.get("op")
    if not isinstance(op, str) or op not in REQUESTS:
        raise BadMessage(f"unknown op {_short(op)}")
    return _load(REQUESTS[op], msg, op), msg.get("rid")


def encode_reply(reply: Reply, rid: Any) -> bytes:
    return json.dumps({**_dump(reply), "rid": rid}).encode()


def parse_reply(request: Request, payload: bytes) -> tuple[Reply, Any]:
    """The reply to ``request`` in ``payload`` and its ``rid``: ``request.reply``, or Rejected."""
    msg = _json_object(payload)
    cls = Rejected if "error" in msg and "action" not in msg else request.reply
    return _load(cls, msg, f"reply to {request.op}"), msg.get("rid")


def _json_object(payload: bytes) -> dict[str, Any]:
    try:
        msg = json.loads(payload)
    except ValueError as exc:  # also UnicodeDecodeError
        raise BadMessage(f"not JSON ({exc})") from None
    if not isinstance(msg, dict):
        raise BadMessage(f"not a JSON object but {type(msg).__name__}")
    return msg


def preview(frames: list[bytes], limit: int = 200) -> str:
    """A message's frames for a log line: sizes, and the start of each."""
    return ", ".join(f"{len(f)} bytes {_short(bytes(f[:limit]), limit + 10)}" for f in frames) or "no frames"


# --- the client -------------------------------------------------------------------------------------------


class AMClient:
    """A request/reply client of the AM (a DEALER socket; one per thread)."""

    _ids = itertools.count()

    def __init__(self, address: str, timeout: float = 10.0) -> None:
        self.address = address
        self.timeout = timeout
        self._sock: zmq.Socket | None = None

    def call(self, request: Request, timeout: float | None = None) -> Reply:
        """Send one request and wait for its reply; RendezvousError when none comes in time."""
        if self._sock is None:
            self._sock = zmq.Context.instance().socket(zmq.DEALER)
            self._sock.setsockopt(zmq.LINGER, 0)
            self._sock.connect(self.address)
        rid = next(self._ids)
        self._sock.send(encode_request(request, rid))
        deadline = Deadline(self.timeout if timeout is None else timeout)
        while True:
            if deadline.passed or not self._sock.poll(int(deadline.left() * 1000) + 1, zmq.POLLIN):
                self.close()  # drop the socket so a late reply cannot be mistaken for the next one
                raise RendezvousError(f"the application master at {self.address} did not answer in time")
            reply, reply_rid = parse_reply(request, self._sock.recv())
            if reply_rid in (rid, None):
                return reply

    def keep_asking(self, request: Request, seconds: float) -> Iterator[Reply | None]:
        """The replies to ``request`` asked again and again (quickly at first, then every 0.2 s) for
        ``seconds``, as long as the caller keeps iterating; None where the AM did not answer within 5 s."""
        for _ in polling(seconds, 0.02, growth=1.5, max_interval=0.2):
            try:
                yield self.call(request, timeout=5.0)
            except RendezvousError:
                yield None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
