"""The scheduler inside `aiflow server start` (a real process): crash safety, kernels, CURVE."""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

import pytest
from jupyter_client.manager import KernelManager

import aiflow_notebook as af
from aiflow_notebook.events import EventClient
from aiflow_notebook.events.auth import create_server_keys
from aiflow_notebook.scheduler import SchedulerClient
from aiflow_notebook.testing.event_server import EventServerProcess
from aiflow_notebook.testing.waiting import wait_for


def prepare(context):
    Path(context.properties["markers"], "prep.txt").open("a").write("ran\n")
    return [[1]]


def slow_train(rows, context):
    marker_dir = Path(context.properties["markers"])
    (marker_dir / "train_starts.txt").open("a").write("started\n")
    while not (marker_dir / "go").exists():  # the test kills the scheduler meanwhile
        time.sleep(0.05)
    return rows


def serve(rows, context):
    Path(context.properties["markers"], "serve.txt").open("a").write("ran\n")


@pytest.mark.slow
def test_kill_9_of_the_scheduler_while_a_job_runs_starts_nothing_twice(tmp_path, aiflow_home):
    markers = tmp_path / "markers"
    markers.mkdir()
    db = f"sqlite:///{tmp_path / 'server.db'}"
    with af.workflow("crashy"):
        with af.job_config("prep"):
            af.write_dataset(af.user_define_operation(prepare, name="prep", properties={"markers": str(markers)}),
                             "raw", uri=str(tmp_path / "raw.json"))
        with af.job_config("train"):
            af.write_dataset(af.user_define_operation(slow_train, inputs=[af.read_dataset("raw")], name="train",
                                                      properties={"markers": str(markers)}),
                             "trained", uri=str(tmp_path / "trained.json"))
        with af.job_config("serve"):
            af.user_define_operation(serve, inputs=[af.read_dataset("trained")], name="serve",
                                     properties={"markers": str(markers)})
        af.action_on_job_status("train", upstream="prep")
        af.action_on_job_status("serve", upstream="train")
    workflow = af.compile("crashy")

    server = EventServerProcess(db).start()
    try:
        client = EventClient(server.url, deadline=60)
        run = SchedulerClient(client).submit(workflow)
        wait_for(lambda: (markers / "train_starts.txt").exists(), what="train to start")
        server.kill()  # kill -9: no clean-up runs in the scheduler
        server = EventServerProcess(db, port=server.port).start()  # same database, same address
        (markers / "go").touch()
        assert run.wait(90) == "FINISHED"
        assert (markers / "train_starts.txt").read_text().count("started") == 1
        assert (markers / "prep.txt").read_text().count("ran") == 1
        assert (markers / "serve.txt").read_text().count("ran") == 1
        starts = [e.key for e in run.job_events() if e.value == "STARTING"]
        assert starts == ["crashy.prep", "crashy.train", "crashy.serve"]
        assert run.jobs() == {"prep": "FINISHED", "train": "FINISHED", "serve": "FINISHED"}
        client.close()
    finally:
        server.stop()


KERNEL_CODE = """
import aiflow_notebook as af
from aiflow_notebook.testing.waiting import wait_for
af.connect({url!r}, auth={key!r})
def make_rows():
    return [[{n}], [{n} + 1]]
with af.workflow("from_kernel_{n}"):
    with af.job_config("only"):
        af.write_dataset(af.user_define_operation(make_rows, name="make"), "rows_{n}", uri={out!r})
run = af.submit("from_kernel_{n}")
print("RESULT", run.wait(120), run.jobs())
"""


def _run_in_kernel(km: KernelManager, code: str, timeout: float = 180) -> str:
    client = km.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        output: list[str] = []
        reply = client.execute_interactive(code, timeout=timeout, output_hook=lambda msg: output.append(
            msg["content"].get("text", "") if msg["msg_type"] == "stream" else
            f"{msg['content'].get('ename')}: {msg['content'].get('evalue')}" if msg["msg_type"] == "error" else ""))
        return "".join(output) + f"\n[{reply['content']['status']}]"
    finally:
        client.stop_channels()


@pytest.mark.slow
def test_two_kernels_submit_to_one_curve_server_and_a_wrong_key_is_refused(tmp_path, aiflow_home):
    keys, wrong = tmp_path / "keys", tmp_path / "wrong"
    create_server_keys(keys)
    create_server_keys(wrong)
    from aiflow_notebook.cli import main

    for n in range(2):
        assert main(["server", "keys", str(keys), "--client", f"kernel{n}"]) == 0
    server = EventServerProcess(f"sqlite:///{tmp_path / 'server.db'}", extra_args=["--curve", str(keys)]).start()
    kernels = [KernelManager(kernel_name="python3") for _ in range(2)]
    try:
        for km in kernels:
            km.start_kernel(cwd=str(tmp_path))
        outputs = [_run_in_kernel(km, textwrap.dedent(KERNEL_CODE.format(
            url=server.url, key=(str(keys / "server.key"), str(keys / f"kernel{n}.key_secret")), n=n,
            out=str(tmp_path / f"rows_{n}.json"))))
            for n, km in enumerate(kernels)]
        for n, output in enumerate(outputs):
            assert "RESULT FINISHED {'only': 'FINISHED'}" in output, output
            assert json.loads((tmp_path / f"rows_{n}.json").read_text()) == [[n], [n + 1]]
        with pytest.raises(af.AIFlowError, match="did not answer|unavailable|no answer"):
            af.connect(server.url, auth=(str(wrong / "server.key"), str(keys / "kernel0.key_secret")), timeout=3)
        with pytest.raises(af.AIFlowError, match="did not answer|unavailable|no answer"):
            af.connect(server.url, auth=str(keys / "server.key"), timeout=3)  # the server's public key alone
    finally:
        for km in kernels:
            km.shutdown_kernel(now=True)
        server.stop()
