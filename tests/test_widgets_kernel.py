"""The panels in a real kernel (jupyter_client): events published by another process reach the widgets as
``comm_msg`` updates on IOPub while the kernel is idle, and a click sent as the front end sends it stops
a run. Nothing is left running after the kernel shuts down."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from jupyter_client import KernelManager

from aiflow_notebook.testing.processes import wait_no_process_left

REPO = Path(__file__).resolve().parents[1]
PUBLISH = """
import json, sys
from aiflow_notebook.events import Event, EventClient
url, key, value, event_type, context = sys.argv[1:6]
with EventClient(url) as client:
    client.send_event(Event(key, value, event_type, sender="another-process", context=context or None))
"""


class Kernel:
    """A kernel and a client of it; ``run`` executes a cell and returns its IOPub messages."""

    def __init__(self, env: dict[str, str]):
        self.manager = KernelManager(kernel_name="python3")
        self.manager.start_kernel(env=env, cwd=str(REPO))
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)
        self.models: dict[str, dict] = {}  # comm id -> the widget state it opened with (+ updates)

    def run(self, code: str, timeout: float = 60) -> list[dict]:
        msg_id = self.client.execute(code)
        messages = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.client.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
            self._track(msg)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            messages.append(msg)
            if msg["msg_type"] == "error":
                raise AssertionError("\n".join(msg["content"]["traceback"]))
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                return messages
        raise AssertionError(f"cell did not finish within {timeout} s: {code}")

    def text(self, messages: list[dict]) -> str:
        return "".join(m["content"].get("text", "") for m in messages if m["msg_type"] == "stream")

    def await_update(self, condition, what: str, timeout: float = 30, allow: str | None = None) -> dict:
        """Wait for a widget ``comm_msg`` update whose state meets ``condition``; fail if the kernel went
        busy meanwhile (the update must come while no cell runs), except for message ``allow``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = self.client.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
            except Exception:  # queue.Empty
                continue
            self._track(msg)
            if msg["msg_type"] == "status" and msg["parent_header"].get("msg_id") != allow:
                assert msg["content"]["execution_state"] == "idle", "the kernel ran something meanwhile"
            if msg["msg_type"] == "comm_msg" and msg["content"]["data"].get("method") == "update":
                state = msg["content"]["data"]["state"]
                if condition(state):
                    return state
        raise AssertionError(f"no comm_msg update with {what} within {timeout} s")

    def click(self, comm_id: str) -> str:
        """Send what JupyterLab sends when a Button is clicked; returns the message id."""
        msg = self.client.session.msg("comm_msg", {"comm_id": comm_id,
                                                   "data": {"method": "custom", "content": {"event": "click"}}})
        self.client.shell_channel.send(msg)
        return msg["header"]["msg_id"]

    def _track(self, msg: dict) -> None:
        content = msg["content"]
        if msg["msg_type"] == "comm_open":
            self.models[content["comm_id"]] = dict(content["data"].get("state", {}))
        elif msg["msg_type"] == "comm_msg" and content["data"].get("method") == "update":
            self.models.setdefault(content["comm_id"], {}).update(content["data"]["state"])

    def shutdown(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=False)


@pytest.fixture
def kernel(aiflow_home):
    env = {**os.environ, "AIFLOW_HOME": str(aiflow_home), "PYTHONPATH": str(REPO)}
    kernel = Kernel(env)
    try:
        yield kernel
    finally:
        kernel.shutdown()
    assert wait_no_process_left(home=aiflow_home) == []  # the kernel's scheduler stopped its jobs


def publish(url: str, key: str, value: str, event_type: str = "READING", context: str = "") -> None:
    subprocess.run([sys.executable, "-c", PUBLISH, url, key, value, event_type, context], check=True, timeout=60,
                   env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.mark.slow
def test_event_panel_updates_arrive_while_the_kernel_is_idle(kernel):
    kernel.run("%load_ext kernel_magics")
    shown = kernel.run("%aiflow events --key sensor --limit 5")
    assert any(m["msg_type"] == "display_data" and "application/vnd.jupyter.widget-view+json" in m["content"]["data"]
               for m in shown)
    url = kernel.text(kernel.run("import os; print(os.environ['AIFLOW_EVENT_URL'])")).strip()
    for value in ("20.5", "21.0"):
        publish(url, "sensor", value)  # another process, while no cell runs
    state = kernel.await_update(lambda s: [e["value"] for e in s.get("events", [])] == ["21.0", "20.5"],
                                "the two sensor readings")
    assert state["events"][0]["sender"] == "another-process" and state["events"][0]["key"] == "sensor"


@pytest.mark.slow
def test_run_panel_follows_a_run_and_its_stop_button_stops_it(kernel):
    kernel.run("%load_ext kernel_magics")
    kernel.run("import time\n"
               "def loop():\n    print('tick', flush=True)\n    while True:\n        time.sleep(0.2)\n"
               "with af.workflow('loop'), af.job_config('forever', streaming=True):\n"
               "    af.user_define_operation(loop, name='loop')\n"
               "run = af.submit('loop')")
    kernel.run("%aiflow status")
    run_id = 1
    panel = next(comm for comm, s in kernel.models.items() if s.get("run_id") == run_id)
    if kernel.models[panel]["jobs"]["forever"]["state"] != "RUNNING":  # else it opened with it
        kernel.await_update(lambda s: s.get("jobs", {}).get("forever", {}).get("state") == "RUNNING",
                            "job forever RUNNING", timeout=60)
    url = kernel.text(kernel.run("import os; print(os.environ['AIFLOW_EVENT_URL'])")).strip()
    publish(url, "loop.forever", "0.5", "JOB_PROGRESS", json.dumps({"run": run_id}))
    kernel.await_update(lambda s: s.get("jobs", {}).get("forever", {}).get("progress") == 0.5,
                        "the progress a job reported from another process")
    (stop,) = [comm for comm, s in kernel.models.items() if s.get("description") == "Stop run"]
    click = kernel.click(stop)
    kernel.await_update(lambda s: s.get("run_status") == "KILLED", "the run KILLED after the click", 60,
                        allow=click)
    assert kernel.models[panel]["jobs"]["forever"]["state"] == "KILLED"  # the panel's state as the front end has it
    assert "KILLED" in kernel.text(kernel.run("print(run.status())"))
