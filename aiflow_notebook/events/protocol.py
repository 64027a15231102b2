"""The wire protocol: how requests, replies and publications are laid out in ZeroMQ frames.

Every message is ONE frame: a fixed 12-byte header, then a body whose layout depends on the kind.

    header = magic "AE" (2 bytes) | protocol version (1) | kind (1) | request id (8, unsigned, big-endian)

One frame per message keeps the per-message cost low (the hot path is a send and its ack); JSON bodies are
parsed by the C decoder, binary ones by ``struct``. The request id of a SEND is the client's sequence
number, which with the client id makes a send idempotent. Replies carry the id of the request they answer.
A publication (BATCH or HEARTBEAT on the PUB socket) carries versions instead of an id.

Decoding never trusts the peer: every failure is a :class:`ProtocolError` with a short ``code``
(``truncated``, ``bad-magic``, ``unsupported-version``, ``unknown-kind``, ``bad-body``, ``bad-event``,
``too-large``),
which the server answers with an ERROR frame. See docs/events.md for the table of kinds and bodies.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

from aiflow_notebook.events.errors import ProtocolError
from aiflow_notebook.events.event import event_problem

PROTOCOL_VERSION = 1
MAGIC = b"AE"
HEADER = struct.Struct("!2sBBQ")
HEADER_SIZE = HEADER.size
MAX_REQUEST_ID = 2**64 - 1


class Kind:
    """Message kinds. Requests < 64 <= replies < 96 <= publications; ERROR answers anything."""

    HELLO = 1  # body: JSON {"client_id": str | null}
    SEND = 2  # body: JSON [client_id, key, value, event_type, namespace, sender, context]; id = seq
    LIST = 3  # body: JSON {"filter": {...}, "limit": int | null}
    LATEST = 4  # body: JSON {"key": str | null, "namespace": str | null}
    SYNC = 5  # body: empty; the server publishes a HEARTBEAT now (a listener's "is my SUB live?")
    CALL = 6  # body: JSON length (I) | JSON {"call": id, "method": str, "args": ...} | binary data (see encode_call)

    WELCOME = 65  # body: JSON {"protocol", "publish", "max_message_bytes", "last_seq", "latest_version", ...}
    ACK = 66  # body: N x (seq, version, create_time) as big-endian signed 64-bit integers
    EVENTS = 67  # body: as_of (Q) | last version in page (Q) | row count (I) | more (B) | JSON rows
    VERSION = 68  # body: version (Q)
    SYNCED = 69  # body: latest version (Q)
    RESULT = 70  # body: JSON length (I) | JSON result | binary data (the answer to a CALL)
    ERROR = 127  # body: JSON {"code": str, "message": str}

    BATCH = 97  # body: first version (Q) | last version (Q) | JSON rows
    HEARTBEAT = 98  # body: latest version (Q)

    REQUESTS = frozenset({HELLO, SEND, LIST, LATEST, SYNC, CALL})
    REPLIES = frozenset({WELCOME, ACK, EVENTS, VERSION, SYNCED, RESULT, ERROR})
    PUBLICATIONS = frozenset({BATCH, HEARTBEAT})


# A row is how an event travels in EVENTS and BATCH bodies (and how the log returns it):
# [version, create_time, key, value, event_type, namespace, sender, context]
ROW_FIELDS = ("version", "create_time", "key", "value", "event_type", "namespace", "sender", "context")

_U64 = struct.Struct("!Q")
_U32 = struct.Struct("!I")
CALL_DATA_BYTES = 1 << 20  # the binary data one CALL may carry (an upload chunk) beyond the message limit
_PAGE = struct.Struct("!QQIB")
_SPAN = struct.Struct("!QQ")
_ACK_ITEM = struct.Struct("!qqq")
_ENCODER = json.JSONEncoder(separators=(",", ":"))
_DECODER = json.JSONDecoder()


# --- framing ---------------------------------------------------------------------------------------


def frame(kind: int, request_id: int, body: bytes = b"") -> bytes:
    return HEADER.pack(MAGIC, PROTOCOL_VERSION, kind, request_id) + body


def read_header(message: bytes) -> tuple[int, int]:
    """``(kind, request id)`` of a message, after checking magic, version and kind."""
    if len(message) < HEADER_SIZE:
        raise ProtocolError("truncated", f"a message of {len(message)} bytes is shorter than the "
                                         f"{HEADER_SIZE}-byte header")
    magic, version, kind, request_id = HEADER.unpack_from(message)
    if magic != MAGIC:
        raise ProtocolError("bad-magic", f"not an aiflow event-bus message (starts with {magic!r}, expected {MAGIC!r})")
    if version != PROTOCOL_VERSION:
        raise ProtocolError("unsupported-version",
                            f"protocol version {version} is not supported; this server speaks version "
                            f"{PROTOCOL_VERSION}: use a client of the same aiflow-notebook release")
    if kind not in Kind.REQUESTS and kind not in Kind.REPLIES and kind not in Kind.PUBLICATIONS:
        raise ProtocolError("unknown-kind", f"unknown message kind {kind}")
    return kind, request_id


def dump_json(value: Any) -> bytes:
    return _ENCODER.encode(value).encode()


def load_json(body: bytes | memoryview) -> Any:
    try:
        return _DECODER.decode(bytes(body).decode())
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ProtocolError("bad-body", f"the body is not valid UTF-8 JSON: {str(exc)[:120]}") from None


# --- requests, as the server reads them ------------------------------------------------------------


@dataclass(slots=True)
class Request:
    kind: int
    request_id: int
    payload: Any  # SEND: the 7-field list; HELLO/LIST/LATEST: a dict; CALL: a dict with "data"; SYNC: None


def parse_request(message: bytes, max_bytes: int) -> Request:
    """Decode a request frame; anything malformed raises :class:`ProtocolError` (and nothing else)."""
    is_call = len(message) >= HEADER_SIZE and message[3] == Kind.CALL
    limit = max_bytes + (CALL_DATA_BYTES if is_call else 0)
    if len(message) > limit:
        raise ProtocolError("too-large", f"a message of {len(message)} bytes exceeds the server's limit of "
                                         f"{limit} bytes; send smaller events")
    kind, request_id = read_header(message)
    if kind not in Kind.REQUESTS:
        raise ProtocolError("unknown-kind", f"message kind {kind} is not a request")
    body = message[HEADER_SIZE:]
    if kind == Kind.SYNC:
        return Request(kind, request_id, None)
    if kind == Kind.CALL:
        return Request(kind, request_id, _parse_call(body, max_bytes))
    payload = load_json(body)
    if kind == Kind.SEND:
        _check_send(payload, request_id)
    elif not isinstance(payload, dict):
        raise ProtocolError("bad-body", f"the body of a kind-{kind} request must be a JSON object")
    return Request(kind, request_id, payload)


def _check_send(payload: Any, seq: int) -> None:
    if not (isinstance(payload, list) and len(payload) == 7):
        raise ProtocolError("bad-body", "a SEND body must be [client_id, key, value, event_type, namespace, "
                                        "sender, context]")
    if seq == 0:
        raise ProtocolError("bad-body", "a SEND needs a sequence number >= 1 in its request id")
    client_id = payload[0]
    if not (isinstance(client_id, str) and 0 < len(client_id) <= 255 and client_id.isprintable()):
        raise ProtocolError("bad-body", "a SEND needs a client id of 1 to 255 printable characters")
    problem = event_problem(*payload[1:])
    if problem:
        raise ProtocolError("bad-event", problem)


def _parse_call(body: bytes | memoryview, max_json_bytes: int) -> dict:
    header, data = split_body(body)
    if len(header) > max_json_bytes:
        raise ProtocolError("too-large", f"the JSON part of a CALL is {len(header)} bytes; the limit is "
                                         f"{max_json_bytes}")
    call = load_json(header)
    if not (isinstance(call, dict) and isinstance(call.get("call"), str) and 0 < len(call["call"]) <= 64
            and isinstance(call.get("method"), str) and 0 < len(call["method"]) <= 64):
        raise ProtocolError("bad-body", 'a CALL body must be {"call": id (1-64 chars), "method": name, "args": ...}')
    call["data"] = bytes(data)
    return call


def join_body(value: Any, data: bytes = b"") -> bytes:
    """JSON length (4 bytes) | JSON | binary data: the body of a CALL and of its RESULT."""
    header = dump_json(value)
    return _U32.pack(len(header)) + header + data


def split_body(body: bytes | memoryview) -> tuple[bytes | memoryview, bytes | memoryview]:
    """``(JSON part, data)`` of a body laid out by :func:`join_body`."""
    if len(body) < _U32.size:
        raise ProtocolError("truncated", "a CALL/RESULT body is shorter than its length field")
    (size,) = _U32.unpack_from(body)
    if _U32.size + size > len(body):
        raise ProtocolError("truncated", "a CALL/RESULT body is shorter than its JSON length says")
    return body[_U32.size:_U32.size + size], body[_U32.size + size:]


def encode_send(seq: int, client_id: str, key: str, value: str, event_type: str, namespace: str,
                sender: str | None, context: str | None) -> bytes:
    return HEADER.pack(MAGIC, PROTOCOL_VERSION, Kind.SEND, seq) + _ENCODER.encode(
        [client_id, key, value, event_type, namespace, sender, context]).encode()


# --- replies ----------------------------------------------------------------------------------------


def encode_ack(items: list[tuple[int, int, int]]) -> bytes:
    """One ACK for one or more sends of the same peer: (seq, version, create_time) each."""
    body = b"".join(_ACK_ITEM.pack(*item) for item in items)
    return frame(Kind.ACK, items[0][0], body)


def decode_ack(body: bytes | memoryview) -> list[tuple[int, int, int]]:
    if len(body) % _ACK_ITEM.size:
        raise ProtocolError("bad-body", "an ACK body is a whole number of (seq, version, time) triples")
    return list(_ACK_ITEM.iter_unpack(body))


def encode_events(request_id: int, as_of: int, last_version: int, count: int, more: bool,
                  rows_json: bytes) -> bytes:
    """A page of a listing. ``as_of``: the latest version when it was read, so a reader that got the last
    page (``more`` false) has seen every match up to ``as_of``."""
    return frame(Kind.EVENTS, request_id, _PAGE.pack(as_of, last_version, count, more) + rows_json)


def decode_events_header(body: bytes | memoryview) -> tuple[int, int, int, bool]:
    """``(as_of, last version, row count, more)`` without parsing the rows (so the next page can be asked
    for first)."""
    if len(body) < _PAGE.size:
        raise ProtocolError("truncated", "an EVENTS body is shorter than its header")
    as_of, last, count, more = _PAGE.unpack_from(body)
    return as_of, last, count, bool(more)


def decode_rows(body: bytes | memoryview, offset: int) -> list[list]:
    rows = load_json(body[offset:])
    if not isinstance(rows, list):
        raise ProtocolError("bad-body", "event rows must be a JSON list")
    return rows


EVENTS_ROWS_OFFSET = _PAGE.size
BATCH_ROWS_OFFSET = _SPAN.size


def encode_u64(kind: int, request_id: int, value: int) -> bytes:
    return frame(kind, request_id, _U64.pack(value))


def decode_u64(body: bytes | memoryview) -> int:
    if len(body) != _U64.size:
        raise ProtocolError("bad-body", "expected an 8-byte unsigned integer body")
    return _U64.unpack(body)[0]


def encode_error(request_id: int, code: str, message: str) -> bytes:
    return frame(Kind.ERROR, request_id, dump_json({"code": code, "message": message}))


def decode_error(body: bytes | memoryview) -> tuple[str, str]:
    try:
        data = load_json(body)
        return str(data["code"]), str(data["message"])
    except (ProtocolError, KeyError, TypeError):
        return "bad-body", "the server answered with an unreadable error"


# --- publications -----------------------------------------------------------------------------------


def encode_batch(first_version: int, last_version: int, rows_json: bytes) -> bytes:
    return frame(Kind.BATCH, 0, _SPAN.pack(first_version, last_version) + rows_json)


def decode_batch_span(body: bytes | memoryview) -> tuple[int, int]:
    if len(body) < _SPAN.size:
        raise ProtocolError("truncated", "a BATCH body is shorter than its header")
    return _SPAN.unpack_from(body)


def encode_heartbeat(latest_version: int) -> bytes:
    return encode_u64(Kind.HEARTBEAT, 0, latest_version)
