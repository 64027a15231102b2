"""The wire protocol and the event model: round trips, refusals, and a fuzzed decoder."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiflow_notebook.events import Event, EventFilter, InvalidEventError, ProtocolError, protocol
from aiflow_notebook.events.event import validate_event
from aiflow_notebook.events.protocol import Kind

LIMIT = 1 << 20


def test_send_round_trip():
    message = protocol.encode_send(7, "client-1", "model.ctr", "v3 ✓", "MODEL_VALIDATED", "models", "trainer", None)
    request = protocol.parse_request(message, LIMIT)
    assert (request.kind, request.request_id) == (Kind.SEND, 7)
    assert request.payload == ["client-1", "model.ctr", "v3 ✓", "MODEL_VALIDATED", "models", "trainer", None]


def test_ack_list_and_heartbeat_round_trips():
    ack = protocol.encode_ack([(3, 10, 1700), (4, 11, 1701)])
    assert protocol.read_header(ack) == (Kind.ACK, 3)
    assert protocol.decode_ack(ack[protocol.HEADER_SIZE:]) == [(3, 10, 1700), (4, 11, 1701)]
    rows = [[5, 1700, "k", "v", "T", "default", None, None]]
    page = protocol.encode_events(9, 42, 5, 1, True, protocol.dump_json(rows))[protocol.HEADER_SIZE:]
    assert protocol.decode_events_header(page) == (42, 5, 1, True)
    assert protocol.decode_rows(page, protocol.EVENTS_ROWS_OFFSET) == rows
    batch = protocol.encode_batch(5, 5, protocol.dump_json(rows))[protocol.HEADER_SIZE:]
    assert protocol.decode_batch_span(batch) == (5, 5)
    assert protocol.decode_u64(protocol.encode_heartbeat(77)[protocol.HEADER_SIZE:]) == 77


@pytest.mark.parametrize("message, code", [
    (b"", "truncated"),
    (b"AE\x01", "truncated"),
    (b"XX" + bytes(10), "bad-magic"),
    (protocol.HEADER.pack(b"AE", 9, Kind.SEND, 1) + b"[]", "unsupported-version"),
    (protocol.HEADER.pack(b"AE", 1, 200, 1), "unknown-kind"),
    (protocol.HEADER.pack(b"AE", 1, Kind.ACK, 1), "unknown-kind"),  # a reply is not a request
    (protocol.frame(Kind.SEND, 1, b"{not json"), "bad-body"),
    (protocol.frame(Kind.SEND, 1, b"\xff\xfe"), "bad-body"),
    (protocol.frame(Kind.SEND, 1, b'["c", "k"]'), "bad-body"),
    (protocol.frame(Kind.SEND, 0, b'["c","k","v","T","default",null,null]'), "bad-body"),
    (protocol.frame(Kind.SEND, 1, b'["c","*","v","T","default",null,null]'), "bad-event"),
    (protocol.frame(Kind.SEND, 1, b'["c","k",5,"T","default",null,null]'), "bad-event"),
    (protocol.frame(Kind.SEND, 1, b'["c","k","a\\u0000b","T","default",null,null]'), "bad-event"),
    (protocol.frame(Kind.SEND, 1, b'["c","k","\\ud800","T","default",null,null]'), "bad-event"),
    (protocol.frame(Kind.LIST, 1, b"[1, 2]"), "bad-body"),
    (protocol.frame(Kind.LIST, 1, b"[" * 100_000), "bad-body"),
    (protocol.frame(Kind.SEND, 1, b"x" * (LIMIT + 1)), "too-large"),
])
def test_malformed_requests_are_refused_with_a_code(message, code):
    with pytest.raises(ProtocolError) as info:
        protocol.parse_request(message, LIMIT)
    assert info.value.code == code
    assert str(info.value)  # a message a person can read


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=256))
def test_fuzz_decoder_on_random_bytes(data):
    try:
        protocol.parse_request(data, LIMIT)
    except ProtocolError:
        pass


_header = st.builds(lambda v, k, r: protocol.HEADER.pack(b"AE", v, k, r), st.sampled_from([0, 1, 2, 255]),
                    st.sampled_from(sorted(Kind.REQUESTS | Kind.REPLIES) + [0, 99, 255]),
                    st.integers(0, 2**64 - 1))
_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                     lambda inner: st.lists(inner, max_size=8) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
                     max_leaves=30)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_header, st.one_of(st.binary(max_size=128), _json.map(lambda v: protocol.dump_json(v))))
def test_fuzz_decoder_on_well_framed_garbage(header, body):
    """Valid headers with arbitrary bodies (JSON or not) reach the body checks; still only ProtocolError."""
    try:
        request = protocol.parse_request(header + body, LIMIT)
    except ProtocolError:
        return
    if request.kind == Kind.SEND:
        client_id, key, value, *_ = request.payload
        assert isinstance(client_id, str) and isinstance(key, str) and isinstance(value, str)
        value.encode()  # storable


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=50), st.text(max_size=200), st.text(min_size=1, max_size=30),
       st.one_of(st.none(), st.text(max_size=30)), st.integers(1, 2**63 - 1))
def test_fuzz_send_round_trip_or_refusal(key, value, event_type, context, seq):
    """Whatever the client's validation accepts, the server's decoder accepts and reads back unchanged."""
    event = Event(key, value, event_type, context=context)
    try:
        validate_event(event)
    except InvalidEventError:
        return
    message = protocol.encode_send(seq, "c", key, value, event_type, "default", None, context)
    request = protocol.parse_request(message, 10 * LIMIT)
    assert request.payload == ["c", key, value, event_type, "default", None, context]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_fuzz_reply_decoders(body):
    for decode in (protocol.decode_ack, protocol.decode_u64, protocol.decode_batch_span,
                   protocol.decode_events_header, lambda b: protocol.decode_rows(b, 0)):
        try:
            decode(body)
        except ProtocolError:
            pass
    assert protocol.decode_error(body)[0]


@pytest.mark.parametrize("event, message", [
    (Event("", "v"), "key must be a non-empty string"),
    (Event("*", "v"), "cannot be '\\*'"),
    (Event("k", {"a": 1}), "value must be a str, got dict"),
    (Event("k", "v", event_type="x" * 256), "event_type is 256 characters long; the limit is 255"),
    (Event("k", "v", namespace=""), "namespace must be a non-empty string"),
    (Event("k", "a\x00b"), "NUL"),
    ("not an event", "expected an aiflow_notebook.events.Event"),
])
def test_invalid_events_are_refused_before_sending(event, message):
    with pytest.raises(InvalidEventError, match=message):
        validate_event(event)


def test_filter_matching_mirrors_the_sql_semantics():
    row = [10, 5_000, "a", "v", "T", "ns", "s", None]
    assert EventFilter.build().matches_row(row)
    assert EventFilter.build(key=["a", "b"], namespace="ns", event_type="T", sender="s").matches_row(row)
    assert EventFilter.build(key="*", namespace="*").matches_row(row)
    assert not EventFilter.build(key="b").matches_row(row)
    assert not EventFilter.build(since_version=10).matches_row(row)
    assert EventFilter.build(since_version=9, until_version=10).matches_row(row)
    assert EventFilter.build(since_time=5_000, until_time=5_001).matches_row(row)
    assert not EventFilter.build(until_time=5_000).matches_row(row)
    with pytest.raises(InvalidEventError, match="empty list of keys"):
        EventFilter.build(key=[])
    with pytest.raises(InvalidEventError, match="since_version must be a non-negative integer"):
        EventFilter.build(since_version=-1)
    assert EventFilter.from_wire(EventFilter.build(key=["x"], since_time=3).to_wire()) == \
        EventFilter.build(key="x", since_time=3)
