"""The server extension live: the push channel over jupyter_server's event bus, a kernel started by the
server submitting to the scheduler the API shows, installation, and shutdown."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import aiflow_notebook as af
import aiflow_notebook.session.submit as submission
from aiflow_notebook.server_extension import BUS_EVENT_SCHEMA_ID
from aiflow_notebook.testing.event_server import EventServerProcess
from aiflow_notebook.testing.processes import wait_no_process_left
from aiflow_notebook.testing.waiting import wait_for_async

API = ("aiflow", "api")

SEND_FROM_ANOTHER_PROCESS = """
import json, sys
from aiflow_notebook.events import Event, EventClient
client = EventClient(sys.argv[1])
event = client.send_event(Event(key="pushed", value="hello", event_type="USER_EVENT", sender="elsewhere",
                                context=json.dumps({"run": 7})))
print(event.version)
client.close()
"""


async def test_the_push_channel_delivers_a_bus_event_published_by_another_process(jp_ws_fetch, jp_serverapp):
    url = jp_serverapp.web_app.settings["aiflow_service"].client.url
    extension = next(iter(jp_serverapp.extension_manager.extension_apps["aiflow_notebook.server_extension"]))
    assert await asyncio.to_thread(extension.forwarder.following.wait, 30), "the forwarder does not follow the bus"
    socket = await jp_ws_fetch("api", "events", "subscribe")
    try:
        sender = await asyncio.create_subprocess_exec(sys.executable, "-c", SEND_FROM_ANOTHER_PROCESS, url,
                                                      stdout=asyncio.subprocess.PIPE)
        out, _ = await asyncio.wait_for(sender.communicate(), 60)
        assert sender.returncode == 0
        version = int(out.decode().strip())
        deadline = time.monotonic() + 30
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, "the bus event did not arrive on /api/events/subscribe within 30 s"
            message = await asyncio.wait_for(socket.read_message(), remaining)
            assert message is not None, "the event WebSocket closed"
            data = json.loads(message)
            if data.get("schema_id") == BUS_EVENT_SCHEMA_ID and data.get("key") == "pushed":
                break
    finally:
        socket.close()
    assert {k: data[k] for k in ("version", "key", "value", "event_type", "namespace", "sender", "run_id")} == {
        "version": version, "key": "pushed", "value": "hello", "event_type": "USER_EVENT", "namespace": "default",
        "sender": "elsewhere", "run_id": 7}
    assert isinstance(data["create_time"], float) and abs(data["create_time"] - time.time()) < 60


@pytest.mark.slow
async def test_a_kernel_started_by_the_server_submits_to_the_scheduler_the_api_shows(jp_fetch, jp_serverapp,
                                                                                     aiflow_home):
    manager = jp_serverapp.kernel_manager
    kernel_id = await manager.start_kernel(kernel_name="python3")
    client = manager.get_kernel(kernel_id).client()
    client.start_channels()
    printed: list[str] = []

    def collect(message: dict) -> None:
        if message["header"]["msg_type"] == "stream":
            printed.append(message["content"]["text"])
        elif message["header"]["msg_type"] == "error":
            printed.append("\n".join(message["content"]["traceback"]))

    try:
        await client.wait_for_ready(timeout=90)
        reply = await client.execute_interactive("""
import aiflow_notebook as af

def hello():
    print("hello from the kernel's run", flush=True)

with af.workflow("from_kernel"):
    with af.job_config("hello"):
        af.user_define_operation(hello, name="hello")
run = af.submit("from_kernel")
print("RUN", run.run_id, run.wait(90))
""", timeout=150, output_hook=collect)
        assert reply["content"]["status"] == "ok", "".join(printed)
    finally:
        await manager.shutdown_kernel(kernel_id, now=True)
        client.stop_channels()
    found = re.search(r"RUN (\d+) (\w+)", "".join(printed))
    assert found and found.group(2) == "FINISHED", "".join(printed)
    run_id = found.group(1)
    response = await jp_fetch(*API, "runs")
    runs = json.loads(response.body)["runs"]
    assert [(str(r["id"]), r["workflow"], r["state"]) for r in runs] == [(run_id, "from_kernel", "FINISHED")]
    response = await jp_fetch(*API, "runs", run_id, "jobs", "hello", "log")
    assert "hello from the kernel's run" in json.loads(response.body)["log"]
    assert (await asyncio.to_thread(wait_no_process_left, cmdline=str(aiflow_home / "runs"))) == []


def serve_forever():
    import time

    while True:
        time.sleep(0.1)


@pytest.fixture
def remote_server(aiflow_home, monkeypatch):
    """A real `aiflow server start` (bus + scheduler), named to the Jupyter server by $AIFLOW_EVENT_URL."""
    aiflow_home.mkdir(parents=True, exist_ok=True)
    db = f"sqlite:///{aiflow_home / 'server.db'}"
    server = EventServerProcess(db).start()
    try:
        monkeypatch.setenv("AIFLOW_EVENT_URL", server.url)
        monkeypatch.setenv("AIFLOW_META_URL", db)
        yield server
    finally:
        server.stop()


@pytest.mark.slow
async def test_with_aiflow_event_url_the_api_shows_and_drives_the_remote_scheduler(remote_server, jp_fetch,
                                                                                  aiflow_home):
    assert submission._embedded is None  # no scheduler of its own
    assert os.environ["AIFLOW_SCHEDULER_URL"] == remote_server.url  # kernels submit to the remote one
    with af.workflow("far"):
        with af.job_config("serve"):
            af.user_define_operation(serve_forever, name="serve")
    run = await asyncio.to_thread(af.submit, "far")  # as a kernel of this server would

    async def state(job_state: str, run_state: str):
        detail = json.loads((await jp_fetch(*API, "runs", str(run.run_id))).body)
        return detail["jobs"][0]["state"] == job_state and detail["state"] == run_state

    await wait_for_async(lambda: state("RUNNING", "RUNNING"), what="serve to run on the remote scheduler")
    response = await jp_fetch(*API, "runs", str(run.run_id), "stop", method="POST", body="")
    assert response.code == 202
    await wait_for_async(lambda: state("KILLED", "KILLED"), what="the remote scheduler to stop the run")
    assert (await asyncio.to_thread(wait_no_process_left, cmdline=str(aiflow_home / "runs"))) == []


@pytest.fixture
def bus_down(monkeypatch):
    """AIFLOW_EVENT_URL names a server that is not running (yet)."""
    from aiflow_notebook.core.ports import free_port

    monkeypatch.setenv("AIFLOW_EVENT_URL", f"tcp://127.0.0.1:{free_port()}")


async def test_a_remote_bus_that_is_down_does_not_hold_up_the_server(bus_down, jp_serverapp, jp_fetch):
    extension = next(iter(jp_serverapp.extension_manager.extension_apps["aiflow_notebook.server_extension"]))
    assert not extension.forwarder.following.is_set()  # still waiting for the bus, on its own thread
    response = await jp_fetch(*API, "runs")  # the metadata database answers meanwhile
    assert response.code == 200 and json.loads(response.body) == {"runs": []}


@pytest.fixture
def bus_of_another_process(aiflow_home):
    """An event server already serving this AIFLOW_HOME's database (as another Jupyter server's would)."""
    from aiflow_notebook.events import EventServer

    server = EventServer().start()
    try:
        yield server
    finally:
        server.stop()


async def test_without_a_scheduler_every_route_answers_503_with_the_reason(bus_of_another_process, jp_fetch):
    assert "AIFLOW_SCHEDULER_URL" not in os.environ  # kernels are not sent to a scheduler that is not there
    for path in (("runs",), ("models",), ("runs", "1", "stop")):
        method = "POST" if path[-1] == "stop" else "GET"
        response = await jp_fetch(*API, *path, method=method, body="" if method == "POST" else None,
                                  raise_error=False)
        assert response.code == 503, response.body
        assert "another event server" in json.loads(response.body)["error"]


async def test_stopping_the_server_stops_the_forwarder_and_the_scheduler_and_restores_the_environment(
        jp_serverapp):
    extension = next(iter(jp_serverapp.extension_manager.extension_apps["aiflow_notebook.server_extension"]))
    hosted = os.environ["AIFLOW_SCHEDULER_URL"]
    assert hosted == submission.embedded_scheduler().event_url == os.environ["AIFLOW_EVENT_URL"]
    assert extension.forwarder.error is None and _threads("aiflow-event-server") == 1
    await extension.stop_extension()
    assert "AIFLOW_SCHEDULER_URL" not in os.environ and "AIFLOW_EVENT_URL" not in os.environ
    assert submission._embedded is None and _threads("aiflow-event-server") == 0
    assert _threads("aiflow-event-listener") == 0 and _threads("aiflow-api") == 0
    await extension.stop_extension()  # the server's own shutdown calls it again: nothing happens


def _threads(prefix: str) -> int:
    return sum(thread.name.startswith(prefix) and thread.is_alive() for thread in threading.enumerate())


def test_the_extension_is_enabled_by_the_installation():
    jupyter = Path(sys.executable).parent / "jupyter"
    listed = subprocess.run([str(jupyter), "server", "extension", "list"], capture_output=True, text=True,
                            timeout=120)
    text = re.sub(r"\x1b\[[0-9;]*m", "", listed.stdout + listed.stderr)
    assert re.search(r"aiflow_notebook\.server_extension\s+enabled", text), text
    assert re.search(r"aiflow_notebook\.server_extension 0\.1\.0\s+OK", text), text
