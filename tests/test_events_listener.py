"""A listener's callback that raises: reported with the event, not counted as delivered (issue 9, item 5).

Against a real event server process. The listener stops on the failed event with the error on the handle;
listening again from ``listener.last_version`` delivers that event first, then the rest, once each.
"""

from __future__ import annotations

import logging

import pytest

from aiflow_notebook.events import Event, EventClient
from aiflow_notebook.testing.event_server import EventServerProcess
from aiflow_notebook.testing.waiting import wait_for

pytestmark = pytest.mark.timeout(120)


class Boom(Exception):
    pass


@pytest.fixture
def client(tmp_path):
    with EventServerProcess(f"sqlite:///{tmp_path / 'events.db'}") as server, \
            EventClient(server.url, deadline=20) as c:
        yield c


@pytest.mark.parametrize("when", ["replayed", "live"])
def test_a_failing_callback_stops_the_listener_at_that_event(client, caplog, when):
    got: list[str] = []

    def callback(event: Event) -> None:
        if event.value == "bad":
            raise Boom(f"cannot handle {event.value}")
        got.append(event.value)

    def send(value: str) -> Event:
        return client.send_event(Event("k", value))

    caplog.set_level(logging.ERROR, logger="aiflow_notebook.events.listener")
    start = client.latest_version()
    if when == "replayed":
        first, bad, _after = send("1"), send("bad"), send("3")
        listener = client.listen("k", since_version=start, callback=callback)
    else:
        listener = client.listen("k", since_version=start, callback=callback)
        assert listener.wait_ready(30), "the listener did not catch up with an empty log within 30 s"
        first, bad, _after = send("1"), send("bad"), send("3")
    assert listener.join(30), "the listener went on after its callback raised"

    assert isinstance(listener.error, Boom)
    assert listener.failed_event is not None and listener.failed_event.version == bad.version
    assert listener.last_version == first.version, "the failed event must not count as delivered"
    assert listener.delivered == 1 and got == ["1"], f"delivered past the failed event: {got}"
    assert not listener.wait_ready(0), "a failed listener must not report itself ready"
    report = "\n".join(r.getMessage() for r in caplog.records)
    assert f"version {bad.version}" in report and "'k'" in report, f"the log does not name the event: {report!r}"

    # Listening again from where it stopped delivers the failed event first, then the rest, each once;
    # the barrier event "4" comes after everything, so once it is in, any duplicate would be too.
    again: list[str] = []
    with client.listen("k", since_version=listener.last_version, callback=lambda e: again.append(e.value)):
        send("4")
        wait_for(lambda: "4" in again, timeout=30, what="the barrier event to reach the new listener")
    assert again == ["bad", "3", "4"]
