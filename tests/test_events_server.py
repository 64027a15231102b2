"""The event server as a real process on loopback: sends, listings, listeners, idempotency, bad input."""

from __future__ import annotations

import threading
import time
from collections import Counter

import psutil
import pytest
import zmq

from aiflow_notebook.core.ports import free_port
from aiflow_notebook.events import (
    Event,
    EventClient,
    EventServer,
    EventServerUnavailableError,
    EventTooLargeError,
    protocol,
)
from aiflow_notebook.events.protocol import Kind
from aiflow_notebook.sandbox.server_process import ServerStartError
from aiflow_notebook.testing.event_server import EventServerProcess
from aiflow_notebook.testing.waiting import wait_for

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def client(server):
    with EventClient(server.url, deadline=20) as c:
        yield c


def test_send_list_latest_listen(client):
    got = []
    listener = client.listen(["a", "b"], since_version=0, callback=got.append)
    first = client.send_event(Event("a", "1", "T", sender="me", context='{"run": 1}'))
    assert (first.version, first.key, first.sender, first.context) == (1, "a", "me", '{"run": 1}')
    assert first.create_time > 1.6e12 and first.created_at.year >= 2024
    client.send_events([Event("c", "2"), Event("b", "3", namespace="ns"), Event("a", "4")])
    assert [e.value for e in client.list_events()] == ["1", "2", "3", "4"]
    assert [e.value for e in client.list_events(["a", "c"], since_version=1)] == ["2", "4"]
    assert [e.value for e in client.list_events(namespace="ns")] == ["3"]
    assert [e.value for e in client.list_events(event_type="T", sender="me")] == ["1"]
    assert [e.value for e in client.list_events("*", limit=2)] == ["1", "2"]
    assert client.latest_version() == 4 and client.latest_version("b") == 3
    assert client.latest_version("zzz") == 0 and client.latest_version(namespace="ns") == 3
    wait_for(lambda: len(got) == 3, 10, "the listener")
    assert [(e.version, e.value) for e in got] == [(1, "1"), (3, "3"), (4, "4")]
    listener.stop()
    assert not listener.running


def test_four_threads_times_2000_sends_are_stored_exactly_once(client):
    """One client shared by 4 threads (each gets its own socket), 2,000 acknowledged sends each."""
    acked: dict[int, list[Event]] = {}
    errors = []

    def sender(thread: int) -> None:
        try:
            acked[thread] = [client.send_event(Event(f"k{i % 10}", f"{thread}:{i}", "STORM")) for i in range(2000)]
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=sender, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    for events in acked.values():  # each thread's own sends got strictly increasing versions
        assert all(a.version < b.version for a, b in zip(events, events[1:], strict=False))
    stored = client.list_events(since_version=0)
    assert [e.version for e in stored] == sorted(e.version for e in stored)
    assert len(stored) == 8000 and len({e.version for e in stored}) == 8000
    assert Counter(e.value for e in stored) == Counter(f"{t}:{i}" for t in range(4) for i in range(2000))
    by_version = {e.version: e.value for e in stored}
    assert all(by_version[e.version] == e.value for events in acked.values() for e in events)


def test_a_resent_request_is_stored_once(server, client):
    """The same (client id, sequence number) three times, as a client retrying after timeouts would."""
    ctx = zmq.Context.instance()
    dealer = ctx.socket(zmq.DEALER)
    dealer.linger = 0
    dealer.connect(server.url)
    acks = []

    def receive_acks(count: int) -> None:
        while len(acks) < count:
            assert dealer.poll(10_000), "no ack"
            acks.extend(protocol.decode_ack(dealer.recv()[protocol.HEADER_SIZE:]))  # one ACK may hold several

    try:
        message = protocol.encode_send(1, "retrying-client", "k", "once", "T", "default", None, None)
        dealer.send(message)
        dealer.send(message)  # twice in a row: likely in one batch
        receive_acks(2)
        dealer.send(message)  # and once more later
        receive_acks(3)
    finally:
        dealer.close()
    assert [seq for seq, _, _ in acks] == [1, 1, 1]
    assert {version for _, version, _ in acks} == {1} and len({created for _, _, created in acks}) == 1
    assert [e.value for e in client.list_events()] == ["once"]


def test_a_restarted_client_with_the_same_id_carries_on(server):
    with EventClient(server.url, client_id="job-42") as first:
        first.send_events([Event("k", str(i)) for i in range(3)])
    with EventClient(server.url, client_id="job-42") as again:  # numbers continue after 3: nothing swallowed
        again.send_events([Event("k", str(i)) for i in range(3, 5)])
        assert [e.value for e in again.list_events()] == ["0", "1", "2", "3", "4"]


def test_fifty_listeners_each_receive_exactly_their_events(client):
    filters = {i: [f"key{i}"] if i % 3 else [f"key{i}", f"key{(i + 1) % 50}"] for i in range(49)}
    filters[49] = "*"
    client.send_events([Event(f"key{i % 50}", f"early {i}") for i in range(100)])  # before anyone listens
    received: dict[int, list[Event]] = {i: [] for i in filters}
    listeners = [client.listen(keys, since_version=0, callback=received[i].append) for i, keys in filters.items()]
    try:
        assert all(listener.wait_ready(30) for listener in listeners)
        client.send_events([Event(f"key{i % 50}", f"late {i}") for i in range(400)], window=16)
        everything = client.list_events()
        assert len(everything) == 500

        def expected(i):
            keys = filters[i]
            return [e.version for e in everything if keys == "*" or e.key in keys]

        # A barrier: one more event on each key. Delivery is in order, so once a listener has its barrier,
        # any duplicate or stray event before it would have arrived too.
        client.send_events([Event(f"key{i}", "barrier") for i in range(50)])
        wait_for(lambda: all(any(e.value == "barrier" for e in received[i]) for i in filters), 60,
                 "every listener to receive its barrier event")
        for i in filters:
            before_barrier = [e.version for e in received[i] if e.value != "barrier"]
            assert before_barrier == expected(i), f"listener {i} ({filters[i]})"
    finally:
        for listener in listeners:
            listener.stop()


def _raw_request(url: str, *frames: bytes, timeout_ms: int = 10_000) -> bytes:
    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.linger = 0
    dealer.connect(url)
    try:
        dealer.send_multipart(list(frames))
        assert dealer.poll(timeout_ms), "no answer from the server"
        return dealer.recv()
    finally:
        dealer.close()


@pytest.mark.parametrize("frames, code", [
    ((b"garbage",), "truncated"),
    ((b"this is not an aiflow message at all",), "bad-magic"),
    ((protocol.encode_send(1, "c", "k", "v", "T", "default", None, None)[:20],), "bad-body"),  # truncated JSON
    ((protocol.HEADER.pack(b"AE", 2, Kind.SEND, 5) + b"[]",), "unsupported-version"),
    ((protocol.HEADER.pack(b"AE", 1, 77, 5),), "unknown-kind"),
    ((protocol.frame(Kind.HELLO, 5, b"{}"), b"second frame"), "bad-body"),
    ((protocol.frame(Kind.LIST, 5, b'{"filter": {"keys": 7}}'),), "bad-request"),
    ((protocol.frame(Kind.SEND, 5, b"x" * ((1 << 20) + 10)),), "too-large"),
])
def test_malformed_frames_get_an_error_and_the_server_carries_on(server, client, frames, code):
    reply = _raw_request(server.url, *frames)
    kind, request_id = protocol.read_header(reply)
    assert kind == Kind.ERROR
    error_code, message = protocol.decode_error(reply[protocol.HEADER_SIZE:])
    assert error_code == code and message
    assert client.send_event(Event("still", "serving")).version >= 1
    assert server.process.poll() is None


@pytest.mark.slow
def test_a_200mb_frame_is_cut_off_without_hurting_the_server(server, client):
    client.send_event(Event("before", "x"))
    rss_before = psutil.Process(server.process.pid).memory_info().rss
    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.linger = 0
    dealer.connect(server.url)
    try:
        dealer.send(protocol.frame(Kind.SEND, 1, b"x" * (200 << 20)), copy=False)
        # libzmq drops the connection at the size limit before reading the frame; meanwhile others are served
        for i in range(20):
            assert client.send_event(Event("during", str(i))).version
        assert not dealer.poll(500), "a 200 MB frame must not be answered as if it had been read"
    finally:
        dealer.close()
    assert server.process.poll() is None
    growth = psutil.Process(server.process.pid).memory_info().rss - rss_before
    assert growth < 100 << 20, f"the server grew by {growth >> 20} MB"
    with pytest.raises(EventTooLargeError, match="server accepts at most 1048576"):
        client.send_event(Event("big", "x" * (2 << 20)))  # the client refuses before sending
    assert client.list_events("during")[-1].value == "19"


def test_sigterm_stops_the_server_cleanly_and_a_second_server_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'one.db'}"
    with EventServerProcess(url) as first:
        second = EventServerProcess(url)
        with pytest.raises(ServerStartError, match="another event server .* already serves"):
            second.start()
        assert first.stop() == 0


def test_no_server_is_a_clear_error_within_the_deadline():
    started = time.monotonic()
    with EventClient(f"tcp://127.0.0.1:{free_port()}", deadline=1.5) as lonely:
        with pytest.raises(EventServerUnavailableError, match=r"no answer from the event server at .* \(aiflow server start\)"):
            lonely.send_event(Event("k", "v"))
    assert time.monotonic() - started < 5


def test_a_started_server_entered_as_a_context_serves_on_one_thread(tmp_path):
    """``with EventServer(...).start() as server`` enters a started server: a second serving thread would
    fail to claim the log after a few seconds and then close the first one's sockets under it."""
    def serving() -> set:
        return {t for t in threading.enumerate() if t.name == "aiflow-event-server"}

    before = serving()
    with EventServer(f"sqlite:///{tmp_path / 'e.db'}", "tcp://127.0.0.1:0").start() as srv:
        assert srv.start() is srv
        assert serving() - before == {srv._thread}
        with EventClient(srv.url) as c:
            assert c.send_event(Event("k", "v")).version == 1
    assert not srv.alive


@pytest.mark.parametrize("transport", ["inproc", "ipc"])
def test_embedded_server_over_inproc_and_ipc(tmp_path, transport):
    bind = "inproc://aiflow-test-events" if transport == "inproc" else f"ipc://{tmp_path / 'events.sock'}"
    with EventServer(f"sqlite:///{tmp_path / 'e.db'}", bind) as srv, EventClient(srv.url) as c:
        got = []
        listener = c.listen("k", callback=got.append)
        c.send_events([Event("k", str(i)) for i in range(10)])
        wait_for(lambda: len(got) == 10, 10, "the embedded listener")
        assert [e.value for e in got] == [str(i) for i in range(10)]
        listener.stop()


def test_listing_and_replay_page_through_the_log(tmp_path, monkeypatch):
    """Small pages (7 events) so that every listing and replay crosses page boundaries."""
    from aiflow_notebook.events import loop

    monkeypatch.setattr(loop, "PAGE_EVENTS", 7)
    with EventServer(f"sqlite:///{tmp_path / 'e.db'}") as srv, EventClient(srv.url) as c:
        stored = c.send_events([Event(f"k{i % 3}", str(i)) for i in range(50)])
        assert [e.version for e in stored] == list(range(1, 51))
        assert [e.value for e in c.list_events()] == [str(i) for i in range(50)]
        assert [e.version for e in c.list_events(limit=20)] == list(range(1, 21))
        k1 = [e.version for e in stored if e.key == "k1"]
        assert [e.version for e in c.list_events("k1", since_version=10, limit=9)] == [v for v in k1 if v > 10][:9]
        middle = stored[25].create_time
        assert all(e.create_time >= middle for e in c.list_events(since_time=middle))
        assert all(e.create_time < middle for e in c.list_events(until_time=stored[25].created_at))
        assert [e.version for e in c.list_events(since_version=45, until_version=47)] == [46, 47]
        got = []
        listener = c.listen("k2", since_version=5, callback=got.append)
        wait_for(lambda: listener.last_version >= 50, 10, "the replay")
        assert [e.version for e in got] == [e.version for e in stored if e.key == "k2" and e.version > 5]
        listener.stop()


def test_a_client_used_from_many_short_lived_threads(server):
    """Each thread gets its own socket, closed when the thread ends: no sharing, no leak."""
    import gc

    with EventClient(server.url) as c:
        versions = []
        for _batch in range(10):
            threads = [threading.Thread(target=lambda: versions.append(c.send_event(Event("t", "x")).version))
                       for _ in range(20)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        gc.collect()
        assert sorted(versions) == list(range(1, 201))
        assert len(c.wire.channels) <= 2  # the sockets of ended threads are gone
