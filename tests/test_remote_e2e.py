"""Notebook and server as two processes that share no paths (DESIGN §4.8): a real `aiflow server start
--curve` with its own working directory and AIFLOW_HOME, and a real kernel with others, connected only
by the authenticated bus. A model version validated in the notebook restarts the server's streaming
`serve` job, which serves exactly that version (model object uploaded from the notebook)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from jupyter_client.manager import KernelManager

from aiflow_notebook.cli import main
from aiflow_notebook.events.auth import create_server_keys
from aiflow_notebook.meta import MetadataStore
from aiflow_notebook.testing.event_server import EventServerProcess
from aiflow_notebook.testing.processes import wait_no_process_left
from aiflow_notebook.testing.waiting import wait_for

CONNECT_AND_SUBMIT = """
import json, time
import aiflow_notebook as af
af.connect({url!r}, auth=({server_key!r}, {client_key!r}))

class Tagger:
    def __init__(self, tag):
        self.tag = tag
    def predict(self, row):
        return [*row, self.tag]

def publish_and_hold(rows, context):
    # a streaming job: write what was scored, then keep serving until stopped
    with open(context.properties["out"], "w") as fh:
        json.dump(rows, fh)
    while True:
        time.sleep(0.1)

af.register_model("m")
v1 = af.register_model_version("m", uri=af.save_model(Tagger("v1"), "m"))
af.update_model_version("m", v1.version, "VALIDATED")
with af.workflow("remote_serving"):
    with af.job_config("serve", streaming=True):
        scores = af.predict(af.read_dataset("requests", uri="requests.json"), model="m")
        af.user_define_operation(publish_and_hold, inputs=[scores], name="publish",
                                 properties={{"out": "scores.json"}}, output_num=0)
    af.action_on_model_version_event("serve", model="m", event_type="MODEL_VALIDATED", action="RESTART")
run = af.submit("remote_serving")
print("RUN", run.run_id)
"""

VALIDATE_V2 = """
v2 = af.register_model_version("m", uri=af.save_model(Tagger("v2"), "m"), metrics={"auc": 0.9})
af.update_model_version("m", v2.version, "VALIDATED")
print("VALIDATED", v2.version)
"""

AFTER = """
graph = af.lineage("m", 2)
start = next(n.key for n in graph.nodes_of("model_version") if n.attrs["version"] == 2)
print("SERVED_BY", sorted(graph.nodes[d].id for s, d, r in graph.edges if s == start and r == "served_by"))
serve_runs = [jr for jr in af.default_store().list_job_runs(run.run_id) if jr.job == "serve"]
print("REMOTE_LOG", "serving model m version 2" in af.default_store().job_log(serve_runs[-1].id, 50))
print("STATUS", run.status(), run.jobs())
print("STOPPED", run.stop(60))
"""


def _execute(client, code: str, timeout: float = 180) -> str:
    output: list[str] = []
    reply = client.execute_interactive(textwrap.dedent(code), timeout=timeout, output_hook=lambda msg: output.append(
        msg["content"].get("text", "") if msg["msg_type"] == "stream" else
        f"{msg['content'].get('ename')}: {msg['content'].get('evalue')}" if msg["msg_type"] == "error" else ""))
    text = "".join(output)
    assert reply["content"]["status"] == "ok", text
    return text


@pytest.mark.slow
def test_a_version_validated_in_the_notebook_restarts_the_remote_serving_job_on_it(tmp_path, aiflow_home):
    keys = tmp_path / "keys"
    create_server_keys(keys)
    assert main(["server", "keys", str(keys), "--client", "notebook"]) == 0
    server_cwd, server_home = tmp_path / "server_cwd", tmp_path / "server_home"
    notebook_cwd, notebook_home = tmp_path / "notebook_cwd", tmp_path / "notebook_home"
    for directory in (server_cwd, server_home, notebook_cwd, notebook_home):
        directory.mkdir()
    (server_cwd / "requests.json").write_text("[[1], [2]]")  # the job's relative path: the server's directory
    server_db = f"sqlite:///{server_home / 'meta.db'}"
    server = EventServerProcess(server_db, extra_args=["--curve", str(keys), "--home", str(server_home)],
                                env={"AIFLOW_HOME": str(server_home)}, cwd=server_cwd).start()
    kernel = KernelManager(kernel_name="python3")
    scores = server_cwd / "scores.json"
    try:
        kernel.start_kernel(cwd=str(notebook_cwd), env={**__import__("os").environ, "AIFLOW_HOME": str(notebook_home)})
        client = kernel.client()
        client.start_channels()
        client.wait_for_ready(timeout=60)
        out = _execute(client, CONNECT_AND_SUBMIT.format(url=server.url, server_key=str(keys / "server.key"),
                                                         client_key=str(keys / "notebook.key_secret")))
        run_id = int(out.split("RUN", 1)[1].split()[0])
        wait_for(lambda: scores.exists() and json.loads(scores.read_text()) == [[1, "v1"], [2, "v1"]],
                 timeout=120, what="the remote serve job to score with v1")
        assert "VALIDATED 2" in _execute(client, VALIDATE_V2)
        wait_for(lambda: scores.exists() and json.loads(scores.read_text()) == [[1, "v2"], [2, "v2"]],
                 timeout=120, what="the remote serve job to restart on v2 validated in the notebook")
        with MetadataStore(server_db) as store:  # the server's side: its job log and its records
            attempts = [jr for jr in store.list_job_runs(run_id) if jr.job == "serve"]
            log = Path(attempts[-1].log_uri.removeprefix("file://")).read_text()
            assert "serving model m version 2 (VALIDATED): the job run was started by MODEL_VALIDATED of version 2" \
                in log, log
            assert str(store.get_model_version("m", 2).uri).startswith((server_home / "blobs").as_uri())
        after = _execute(client, AFTER)
        assert f"SERVED_BY [{attempts[-1].id}]" in after, after
        assert "STOPPED KILLED" in after and "REMOTE_LOG True" in after, after
        # nothing went to the notebook's own store or disk
        assert not (notebook_home / "meta.db").exists() and not (notebook_home / "models").exists(), \
            sorted(p.name for p in notebook_home.iterdir())
        assert not (notebook_cwd / "scores.json").exists()
        client.stop_channels()
    finally:
        kernel.shutdown_kernel(now=True)
        server.stop()
    assert wait_no_process_left(cmdline=str(server_home)) == []
