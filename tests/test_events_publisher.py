"""The model center publishes onto the event bus: a stage change reaches a bus listener."""

from __future__ import annotations

import json
import time

import pytest

import aiflow_notebook as af
from aiflow_notebook.events import EventBusPublisher, EventClient
from aiflow_notebook.meta import default_store
from aiflow_notebook.meta.model_center import MODEL_NAMESPACE
from aiflow_notebook.testing.event_server import EventServerProcess

pytestmark = pytest.mark.timeout(120)


def test_model_stage_changes_reach_a_bus_listener(tmp_path, monkeypatch):
    with EventServerProcess(f"sqlite:///{tmp_path / 'events.db'}") as server:
        monkeypatch.setenv("AIFLOW_EVENT_URL", server.url)
        with EventClient(server.url) as watcher:
            heard = []
            listener = watcher.listen("ctr", callback=heard.append)
            assert listener.wait_ready(30)
            store = default_store()
            assert isinstance(store.publisher, EventBusPublisher)
            af.register_model("ctr")
            af.register_model_version("ctr", uri="file:///models/ctr/1")
            af.update_model_version("ctr", 1, "VALIDATED")
            end = time.monotonic() + 10
            while len(heard) < 2 and time.monotonic() < end:
                time.sleep(0.02)
            listener.stop()
        assert [(e.event_type, e.namespace, e.sender) for e in heard] == [
            ("MODEL_GENERATED", MODEL_NAMESPACE, "model_center"), ("MODEL_VALIDATED", MODEL_NAMESPACE, "model_center")]
        assert json.loads(heard[1].value)["stage"] == "VALIDATED"
        monkeypatch.delenv("AIFLOW_EVENT_URL")
        assert not isinstance(default_store().publisher, EventBusPublisher)  # back to the in-process default


def test_import_aiflow_notebook_does_not_import_zmq():
    import subprocess
    import sys

    code = "import sys, aiflow_notebook; sys.exit('zmq' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
