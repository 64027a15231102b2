"""``kill -9`` of the event server during a send storm, then a restart on the same database.

Must hold: no acknowledged event is lost, none is stored twice (in-flight sends are retried by the clients
and recognised by their (client id, sequence number)), and a listener that was running throughout
receives every event exactly once, in version order, with no gap.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from aiflow_notebook.events import Event, EventClient
from aiflow_notebook.testing.event_server import EventServerProcess
from aiflow_notebook.testing.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

PER_THREAD = 1200


def test_kill_9_during_a_send_storm_loses_and_duplicates_nothing(meta_url):
    server = EventServerProcess(meta_url).start()
    restarted = None
    clients = [EventClient(server.url, deadline=60) for _ in range(2)]
    watcher = EventClient(server.url, deadline=60)
    heard: list[Event] = []
    listener = watcher.listen("*", since_version=0, callback=heard.append)
    acked: dict[str, list[Event]] = {}
    errors: list[Exception] = []

    def sequential(name: str, client: EventClient) -> None:
        try:
            acked[name] = [client.send_event(Event(f"k{i % 7}", f"{name}:{i}", "STORM")) for i in range(PER_THREAD)]
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def pipelined(name: str, client: EventClient) -> None:
        try:
            events = []
            for start in range(0, PER_THREAD, 100):
                events += client.send_events([Event("bulk", f"{name}:{i}") for i in range(start, start + 100)], window=32)
            acked[name] = events
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    senders = [threading.Thread(target=sequential, args=("a", clients[0])),
               threading.Thread(target=sequential, args=("b", clients[0])),  # two threads share a client
               threading.Thread(target=sequential, args=("c", clients[1])),
               threading.Thread(target=pipelined, args=("d", clients[1]))]
    try:
        assert listener.wait_ready(30)
        for thread in senders:
            thread.start()
        # kill in the middle of the storm
        deadline = time.monotonic() + 60
        while len(heard) < 1500 and time.monotonic() < deadline:
            time.sleep(0.01)
        server.kill()
        killed_at = len(heard)
        restarted = EventServerProcess(meta_url, port=server.port).start()
        for thread in senders:
            thread.join(120)
        assert not errors, errors
        assert all(not t.is_alive() for t in senders)

        stored = watcher.list_events(since_version=0)
        versions = [e.version for e in stored]
        assert versions == list(range(1, len(stored) + 1)), "versions must be strictly increasing, no gaps"
        values = Counter(e.value for e in stored)
        assert values == Counter(f"{n}:{i}" for n in "abcd" for i in range(PER_THREAD)), "lost or duplicated"
        by_version = {e.version: e.value for e in stored}
        assert all(by_version[e.version] == e.value for events in acked.values() for e in events)
        assert killed_at < len(stored), "the kill must happen during the storm"

        # A barrier after everything: delivery is in order, so once it is heard, any duplicate would be too.
        barrier = watcher.send_event(Event("barrier", "after the storm"))
        wait_for(lambda: any(e.version == barrier.version for e in heard), 60, "the listener to hear the barrier")
        assert [e.version for e in heard] == [*versions, barrier.version], \
            "the listener must see every event once, in order"
        # (No assert on listener.replays: when the kill falls between two publications, nothing committed
        # went unpublished, so the restarted server leaves no gap to fill; seen under load in a full run.)
    finally:
        listener.stop()
        for client in (*clients, watcher):
            client.close()
        server.kill()
        if restarted is not None:
            restarted.stop()
