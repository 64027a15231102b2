"""The forms AI Flow users write, accepted as they are (issue 13, item 7), and the run an event sent
from inside a job carries (bug 3). A real event server on loopback TCP."""

from __future__ import annotations

import json
import threading

import pytest

import aiflow_notebook as af
from aiflow_notebook.events import Event, EventClient, EventServer, InvalidEventError


@pytest.fixture
def bus(tmp_path):
    with EventServer(f"sqlite:///{tmp_path / 'events.db'}", "tcp://127.0.0.1:0") as running:
        yield running


def test_a_plain_host_port_address_means_tcp(bus):
    port = bus.url.rsplit(":", 1)[1]
    client = EventClient(f"127.0.0.1:{port}")
    try:
        assert client.url == f"tcp://127.0.0.1:{port}"
        assert client.send_event(Event("k", "v")).version is not None
    finally:
        client.close()
    with pytest.raises(InvalidEventError, match="bad event server URL"):
        EventClient("http://127.0.0.1:1")


def test_send_event_by_fields_and_a_value_of_none(bus):
    with EventClient(bus.url) as client:
        sent = client.send_event(key="key", value="This is a custom message.")
        assert (sent.key, sent.value, sent.event_type, sent.version is not None) == (
            "key", "This is a custom message.", "UNDEFINED", True)
        assert client.send_event(key="no value").value == ""
        assert client.send_event(Event("no value either", None)).value == ""
        assert [e.value for e in client.list_events(key=["no value", "no value either"])] == ["", ""]
        with pytest.raises(InvalidEventError, match="not both"):
            client.send_event(Event("k", "v"), key="k")
        with pytest.raises(InvalidEventError, match="needs an Event or key"):
            client.send_event()


def test_a_listener_object_with_process_gets_the_events(bus):
    class Processor:  # AI Flow's ListenerProcessor
        def __init__(self):
            self.seen: list[str] = []
            self.done = threading.Event()

        def process(self, events):
            self.seen.extend(e.value for e in events)
            if len(self.seen) == 3:
                self.done.set()

    processor = Processor()
    with EventClient(bus.url) as client:
        for value in "abc":
            client.send_event(key="k", value=value)
        listener = client.listen("k", since_version=0, callback=processor)
        try:
            assert processor.done.wait(30), processor.seen
        finally:
            listener.stop()
    assert processor.seen == ["a", "b", "c"]


def test_events_from_a_job_name_its_run_and_events_from_elsewhere_stay_global(bus, monkeypatch):
    monkeypatch.setenv("AIFLOW_EVENT_URL", bus.url)
    monkeypatch.delenv("AIFLOW_RUN_ID", raising=False)
    with EventClient.from_environment() as outside:
        assert outside.send_event(key="k", value="cell").context is None

    # what the scheduler gives a job's process
    monkeypatch.setenv("AIFLOW_RUN_ID", "7")
    monkeypatch.setenv("AIFLOW_WORKFLOW", "ctr")
    monkeypatch.setenv("AIFLOW_PROJECT", "demo")
    with EventClient.from_environment() as job:
        plain = job.send_event(key="k", value="job")
        assert json.loads(plain.context) == {"run": 7, "workflow": "ctr", "project": "demo"}
        mine = job.send_event(Event("k", "v", context=json.dumps({"step": 3})))
        assert json.loads(mine.context) == {"step": 3, "run": 7, "workflow": "ctr", "project": "demo"}
        named = job.send_event(Event("k", "v", context=json.dumps({"run": 9})))
        assert json.loads(named.context) == {"run": 9}  # a context that names a run is the sender's word
        assert job.send_event(Event("k", "v", context="free text")).context == "free text"
    with EventClient.from_environment(origin=None) as opted_out:
        assert opted_out.send_event(key="k", value="global").context is None


def test_action_on_job_status_with_a_list_of_upstream_jobs_waits_for_all():
    with af.workflow("fan_in"):
        for name in ("a", "b", "c"):
            with af.job_config(name):
                af.user_define_operation(print, name=f"{name}_op")
        af.action_on_job_status("c", upstream=["a", "b"])
    workflow = af.compile("fan_in")
    (edge,) = workflow.control_edges
    assert edge.condition.mode == "ALL"
    assert [(c.key, c.value) for c in edge.condition.events] == [("fan_in.a", "FINISHED"), ("fan_in.b", "FINISHED")]
    assert edge.to_dict()["upstream"] == ["a", "b"]
    assert type(edge).from_dict(edge.to_dict()) == edge
    assert list(workflow.jobs)[-1] == "c"  # ordered after both
    dot = workflow.to_graphviz().source
    assert dot.count("FINISHED → START") == 2  # one dashed edge from each upstream job
    with pytest.raises(af.UnknownJobError, match="'x'"):
        with af.workflow("fan_in_bad"):
            with af.job_config("c"):
                af.user_define_operation(print, name="c_op")
            af.action_on_job_status("c", upstream=["x"])
        af.compile("fan_in_bad")
    with pytest.raises(af.InvalidArgumentError, match="non-empty list"):
        af.action_on_job_status("c", upstream=[])
