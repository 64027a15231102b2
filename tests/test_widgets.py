"""The notebook panels without a kernel: each one's traits after real events on a real bus (the embedded
scheduler's), their buttons, their fallbacks, and no listener thread left after close()."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sdk_support import notebook_namespace

import aiflow_notebook as af
from aiflow_notebook.core.vocabulary import JOB_PROGRESS, MODEL_SWAPPED
from aiflow_notebook.events import Event, EventClient
from aiflow_notebook.sdk.mime import MIME_TYPE
from aiflow_notebook.testing.waiting import wait_for
from aiflow_notebook.widgets import EventPanel, GraphWidget, LineageWidget, ModelPanel, RunPanel, live_threads

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
JOBS = '''
import time

def make():
    from aiflow_notebook.sdk.job_runtime import report_progress

    report_progress(0.5)
    print("made 2 rows", flush=True)
    return [[1], [2]]

def serve():
    print("serving", flush=True)
    while True:
        time.sleep(0.2)
'''


@pytest.fixture
def panels():
    """Panels opened by a test; closed afterwards, and then no follower thread may be left."""
    opened = []
    yield opened
    threads = [thread for panel in opened for thread in panel.threads()]
    for panel in opened:
        panel.close()
    assert all(not panel.following for panel in opened)
    assert wait_for(lambda: not any(t.is_alive() for t in threads), 10, "the panels' threads to end") is True
    assert live_threads() == []


def looping_workflow(name: str):
    """A batch job, then a streaming python job that runs until stopped."""
    ns = notebook_namespace(JOBS)
    with af.workflow(name):
        with af.job_config("prep"):
            af.user_define_operation(ns["make"], name="make")
        with af.job_config("serve", streaming=True):
            af.user_define_operation(ns["serve"], name="serve")
        af.action_on_job_status("serve", upstream="prep")
    return af.compile(name)


def test_event_panel_shows_the_newest_events_first_and_filters(panels):
    panel = EventPanel(key="sensor", limit=3)
    panels.append(panel)
    assert panel.following
    client = EventClient.from_environment()  # the panel started the embedded bus, as af.submit() would
    for i in range(5):
        client.send_event(Event("sensor", f"v{i}", "READING", sender="me"))
    client.send_event(Event("other", "x", "READING"))
    wait_for(lambda: [e["value"] for e in panel.events] == ["v4", "v3", "v2"], 10, "the newest 3 sensor events")
    first = panel.events[0]
    assert set(first) == {"version", "key", "value", "event_type", "namespace", "sender", "create_time"}
    assert (first["key"], first["event_type"], first["namespace"], first["sender"]) == ("sensor", "READING",
                                                                                         "default", "me")
    assert first["version"] > panel.events[1]["version"] and first["create_time"].endswith("+00:00")

    panel.event_type = "ALARM"  # a new filter starts over
    assert panel.events == []
    client.send_event(Event("sensor", "hot", "ALARM"))
    wait_for(lambda: [e["value"] for e in panel.events] == ["hot"], 10, "the ALARM event")
    bundle = panel._repr_mimebundle_()
    assert WIDGET_VIEW in bundle and "hot" in bundle["text/plain"] and "hot" in bundle["text/html"]
    client.close()


def test_event_panel_coalesces_a_burst_into_few_updates(panels):
    panel = EventPanel(limit=1000)
    panels.append(panel)
    client = EventClient.from_environment()
    wait_for(lambda: panel._follower.listener.wait_ready(0.1), 10, "the panel to follow the bus")
    before = panel._follower.updates
    started = time.monotonic()
    client.send_events([Event("burst", str(i)) for i in range(500)])
    wait_for(lambda: len(panel.events) >= 500, 20, "500 events in the panel")
    elapsed = time.monotonic() - started
    assert panel._follower.updates - before <= 10 * elapsed + 2  # at most 10 updates a second
    assert [e["value"] for e in panel.events[:2]] == ["499", "498"]
    client.close()


def test_graph_and_run_panels_follow_their_own_run_and_stop_it(panels):
    workflow = looping_workflow("live")
    first, second = af.submit(workflow), af.submit(workflow)  # two live runs of one workflow
    graph, panel, other = GraphWidget(first), RunPanel(first), RunPanel(second)
    panels += [graph, panel, other]
    wait_for(lambda: graph.jobs["serve"]["state"] == "RUNNING", 60, "serve RUNNING in the graph")
    assert graph.jobs["prep"]["state"] == "FINISHED" and graph.run_id == first.run_id
    assert graph.jobs["prep"]["progress"] == 1.0  # it reported 0.5, then finished
    wait_for(lambda: "#bbf7d0" in graph._picture.value, 10, "prep drawn in the FINISHED colour")
    graph.selected = "prep"
    assert "made 2 rows" in wait_for(lambda: "made 2 rows" in graph._details.value and graph._details.value, 10,
                                     "prep's log tail in the details")
    wait_for(lambda: "serving" in panel.jobs["serve"]["log_tail"], 10, "serve's log tail streaming")
    assert panel.jobs["serve"]["attempts"] == 1 and panel.jobs["serve"]["duration_s"] is not None

    sender = EventClient.from_environment()  # a job reporting progress, for the first run only
    sender.send_event(Event("live.serve", "0.25", JOB_PROGRESS, sender="job", context=json.dumps({"run": first.run_id})))
    wait_for(lambda: panel.jobs["serve"]["progress"] == 0.25, 10, "the progress of serve")
    assert other.jobs["serve"]["progress"] is None and other.run_id == second.run_id
    # a model swapped inside serve (what model_swap says once every instance has it); a hostile model name
    sender.send_event(Event("live.serve", json.dumps({"model": "<b>ctr</b>", "version": 2}), MODEL_SWAPPED,
                            sender="job", context=json.dumps({"run": first.run_id})))
    wait_for(lambda: panel.jobs["serve"]["serving"] == "<b>ctr</b> v2", 10, "the version serve serves")
    assert "serving &lt;b&gt;ctr&lt;/b&gt; v2" in panel._row_widgets["serve"][0].value
    assert "<b>ctr</b>" not in panel._row_widgets["serve"][0].value
    assert other.jobs["serve"]["serving"] is None

    panel.stop_button.click()  # the button, as a click in the notebook would call it
    assert panel.message == f"stop of run {first.run_id} requested"
    wait_for(lambda: panel.run_status == "KILLED", 60, "run 1 KILLED in its panel")
    assert panel.jobs["serve"]["state"] == "KILLED"
    wait_for(lambda: graph.run_status == "KILLED", 10, "run 1 KILLED in the graph")  # its own threads
    assert graph.jobs["serve"]["state"] == "KILLED"
    assert second.status() == "RUNNING" and other.jobs["serve"]["state"] == "RUNNING"
    wait_for(lambda: not panel.following, 10, "the panel of an ended run to stop following")

    bundle = graph._repr_mimebundle_()
    assert {WIDGET_VIEW, "image/svg+xml", MIME_TYPE, "text/html", "text/plain"} <= set(bundle)
    assert bundle[MIME_TYPE]["run_id"] == first.run_id and bundle[MIME_TYPE]["run_status"] == "KILLED"
    assert "serve: KILLED" in bundle["text/plain"]
    second.stop()
    sender.close()


def test_rerun_button_follows_a_new_run(panels):
    ns = notebook_namespace("def one():\n    return 1")
    with af.workflow("quick"), af.job_config("only"):
        af.user_define_operation(ns["one"], name="one")
    run = af.submit("quick")
    panel = RunPanel(run)
    panels.append(panel)
    wait_for(lambda: panel.run_status == "FINISHED", 60, "the first run to finish")
    panel.rerun_button.click()
    assert panel.run_id == run.run_id + 1 and "again: run" in panel.message
    wait_for(lambda: panel.run_status == "FINISHED" and panel.jobs["only"]["state"] == "FINISHED", 60,
             "the second run to finish in the panel")


def test_restart_job_button(panels):
    """Enabled exactly when the scheduler client can restart one job (``WorkflowRun.restart_job``, which
    the server-extension branch adds); then a click starts a new attempt of the picked job."""
    run = af.submit(looping_workflow("again"))
    panel = RunPanel(run)
    panels.append(panel)
    wait_for(lambda: panel.jobs["serve"]["state"] == "RUNNING", 60, "serve RUNNING")
    if not hasattr(run, "restart_job"):
        assert panel.restart_button.disabled and "cannot restart one job" in panel.restart_button.tooltip
        with pytest.raises(RuntimeError, match="cannot restart one job"):
            panel.restart("serve")
    else:
        assert not panel.restart_button.disabled
        panel.restart_picker.value = "serve"
        panel.restart_button.click()
        assert panel.message == "restart of job 'serve' requested"
        wait_for(lambda: panel.jobs["serve"]["attempts"] == 2 and panel.jobs["serve"]["state"] == "RUNNING", 60,
                 "a second attempt of serve")
    run.stop()


def test_model_panel_buttons_change_the_stage_and_publish_the_event(panels):
    panel = ModelPanel("ctr")
    panels.append(panel)
    assert panel.versions == []
    af.register_model("ctr")
    af.register_model_version("ctr", uri="file:///m1", metrics={"auc": 0.7})
    wait_for(lambda: [(v["version"], v["stage"]) for v in panel.versions] == [(1, "GENERATED")], 10,
             "v1 GENERATED in the panel")
    assert panel.versions[0]["metrics"] == {"auc": 0.7}
    client = EventClient.from_environment()
    since = client.latest_version()
    _label, buttons = panel._row_widgets[("ctr", 1)]
    (validate,) = [b for b in buttons.values() if b.description == "Validate"]
    assert not validate.disabled
    validate.click()
    assert panel.message == "ctr v1 is VALIDATED" and panel.versions[0]["stage"] == "VALIDATED"
    published = client.list_events(key="ctr", since_version=since)
    assert [(e.event_type, e.key) for e in published] == [("MODEL_VALIDATED", "ctr")]
    assert validate.disabled  # VALIDATED -> VALIDATED is no transition
    assert "ctr v1: VALIDATED" in panel._repr_mimebundle_()["text/plain"]
    client.close()


def test_button_callbacks_run_beside_a_busy_thread(panels):
    """A click handled on another thread (a JupyterLab subshell) while the panel's threads update it."""
    af.register_model("m")
    for i in range(3):
        af.register_model_version("m", uri=f"file:///m{i}")
    panel = ModelPanel()
    panels.append(panel)
    wait_for(lambda: len(panel.versions) == 3, 10, "3 versions")
    errors = []

    def click(version: int) -> None:
        try:
            panel.set_stage("m", version, "DEPLOYED")
        except Exception as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=click, args=(v,)) for v in (1, 2, 3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    wait_for(lambda: {v["stage"] for v in panel.versions} == {"DEPLOYED"}, 10, "every version DEPLOYED")


def test_lineage_widget_nodes_are_pickable(panels):
    store = af.default_store()
    store.register_dataset("clicks", uri="file:///clicks")
    job_run = store.start_job_run("wf", "train")
    store.record_dataset_read(job_run.id, "clicks")
    store.register_model("ctr")
    store.register_model_version("ctr", uri="file:///m", job_run=job_run.id)
    widget = LineageWidget("ctr")
    panels.append(widget)
    kinds = {node["kind"] for node in widget.nodes}
    assert kinds == {"dataset", "job_run", "model_version"} and len(widget.edges) == 2
    version_key = next(n["key"] for n in widget.nodes if n["kind"] == "model_version")
    widget._picker.value = version_key  # picking a node in the dropdown
    assert widget.selected == version_key and "produced" in widget._details.value
    af.register_model_version("ctr", uri="file:///m2")  # a new version (published on the bus): it redraws
    wait_for(lambda: len([n for n in widget.nodes if n["kind"] == "model_version"]) == 2, 10, "v2 in the lineage")
    assert "<svg" in widget._repr_mimebundle_()["text/html"]
    with pytest.raises(af.AIFlowError, match="ghost"):
        LineageWidget("ghost")


def test_workflow_bundle_carries_the_workflow_json(panels):
    workflow = looping_workflow("drawn")
    bundle = workflow._repr_mimebundle_()
    assert {"image/svg+xml", "image/png", "text/plain", MIME_TYPE} <= set(bundle)
    doc = bundle[MIME_TYPE]
    assert json.loads(json.dumps(doc)) == doc  # plain JSON, no payloads
    assert (doc["format"], doc["workflow"], doc["project"], doc["run_id"], doc["run_status"]) == (
        1, "drawn", "default", None, None)
    assert doc["content_hash"] == workflow.content_hash
    assert [job["name"] for job in doc["jobs"]] == ["prep", "serve"]
    serve = doc["jobs"][1]
    assert (serve["engine"], serve["platform"], serve["parallelism"], serve["streaming"], serve["status"]) == (
        "python", "local", 1, True, None)
    assert serve["nodes"] == [{"name": "serve", "kind": "user_define_operation", "inputs": [], "dataset": None,
                               "model": None}]
    assert doc["control_edges"] == [{"job": "serve", "action": "START", "upstream": "prep", "model": None,
                                     "label": "FINISHED → START"}]
    assert "payload" not in json.dumps(doc)


def test_dataset_handoffs_in_the_workflow_json():
    ns = notebook_namespace("def make():\n    return [[1]]\ndef fit(rows):\n    return 1")
    with af.workflow("handoff"):
        with af.job_config("data"):
            af.write_dataset(af.user_define_operation(ns["make"], name="make"), "rows", uri="file:///tmp/rows")
        with af.job_config("learn"):
            af.train(af.read_dataset("rows"), trainer=ns["fit"], model="m")
    doc = af.compile("handoff")._repr_mimebundle_()[MIME_TYPE]
    assert doc["datasets"] == [{"dataset": "rows", "from_job": "data", "to_job": "learn"}]
    data, learn = doc["jobs"]
    assert data["outputs"] == ["rows"] and learn["inputs"] == ["rows"]
    read = next(node for node in learn["nodes"] if node["kind"] == "read_dataset")
    assert read["dataset"] == "rows"


def test_an_interpreter_with_open_panels_exits_promptly(aiflow_home):
    """At exit the panels stop following before the embedded scheduler stops the bus: no hang, no noise."""
    code = ("from aiflow_notebook.widgets import EventPanel, live_threads\n"
            "panel = EventPanel(limit=5)\n"
            "assert len(live_threads()) == 2\n")
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "reconnecting" not in result.stderr, result.stderr
    assert time.monotonic() - started < 30
