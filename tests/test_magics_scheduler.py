"""%aiflow submit / status / stop / lineage in a real IPython shell, on the embedded scheduler."""

from __future__ import annotations

import pytest
from sdk_support import run

import aiflow_notebook.session.submit as submit_module


def test_submit_wait_status_and_lineage(shell, tmp_path):
    cells = ["%aiflow workflow tiny",
             "def make():\n    return [[1], [2]]\n\ndef fit(rows):\n    return {'n': len(rows)}",
             f"%%aiflow job data\naf.write_dataset(af.user_define_operation(make, name='make'), 'rows', uri={str(tmp_path / 'rows.json')!r})",
             "%%aiflow job learn\naf.train(af.read_dataset('rows'), trainer=fit, model='tiny_model')",
             "af.action_on_job_status('learn', upstream='data')"]
    for cell in cells:
        result = run(shell, cell)
        assert result.success and not result.stderr, (cell, result.stderr)
    result = run(shell, "%aiflow submit --wait --timeout 120")
    assert result.success and not result.stderr, result.stderr
    assert "run 1 of 'tiny': FINISHED; jobs: data FINISHED, learn FINISHED" in result.stdout
    assert any("image/svg+xml" in output for output in result.outputs)
    status = run(shell, "%aiflow status")
    assert "FINISHED" in status.stdout
    (panel,) = [o for o in status.outputs if "application/vnd.jupyter.widget-view+json" in o]  # the RunPanel
    assert "data: FINISHED (attempt 1" in panel["text/plain"] and "learn: FINISHED" in panel["text/plain"]
    lineage = run(shell, "%aiflow lineage tiny_model")
    svg = next(o["image/svg+xml"] for o in lineage.outputs if "image/svg+xml" in o)
    assert "tiny.learn" in svg and "tiny_model v1" in svg and "rows" in svg


def test_stop_a_running_workflow_and_bad_lines(shell, tmp_path):
    cells = ["%aiflow workflow looping",
             "import time\ndef loop():\n    while True:\n        time.sleep(0.1)",
             "%%aiflow job forever\naf.user_define_operation(loop, name='loop')"]
    for cell in cells:
        assert run(shell, cell).success
    result = run(shell, "%aiflow submit")
    assert "submitted 'looping': run" in result.stdout
    stopped = run(shell, "%aiflow stop")
    assert "KILLED" in stopped.stdout
    for line, problem in [("%aiflow status nothing_here", "no run of nothing_here was submitted in this session"),
                          ("%aiflow submit --wait --timeout soon", "argument --timeout: invalid float value"),
                          ("%aiflow lineage ghost", "model 'ghost' is not registered")]:
        bad = run(shell, line)
        assert bad.success and "Traceback" not in bad.stderr and problem in bad.stderr, (line, bad.stderr)


def test_after_the_embedded_scheduler_stops_the_model_center_works_without_it(shell):
    import os

    import aiflow_notebook as af

    assert run(shell, "%aiflow workflow solo").success
    assert run(shell, "def one():\n    return 1").success
    assert run(shell, "%%aiflow job only\naf.user_define_operation(one, name='one')").success
    assert "FINISHED" in run(shell, "%aiflow submit --wait --timeout 60").stdout
    assert os.environ.get("AIFLOW_EVENT_URL")  # while it runs, this process's model events go to its bus
    submit_module._shutdown()
    assert "AIFLOW_EVENT_URL" not in os.environ
    af.register_model("after")  # no dead bus in the way
    assert af.register_model_version("after", uri="file:///m").version == 1


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_local_server_starts_runs_this_kernels_workflow_and_stops(shell, aiflow_home):
    """%aiflow server start: a real `aiflow server start` process on a private socket, this kernel connected
    to it (the run is in the server's own database, not the kernel's), refused twice, stopped by %aiflow
    server stop with its whole process group; bad lines are one paragraph."""
    from aiflow_notebook.testing.processes import wait_no_process_left

    assert "no local aiflow server" in run(shell, "%aiflow server").stdout
    started = run(shell, "%aiflow server start")
    assert started.success and not started.stderr, started.stderr
    assert "local aiflow server running: ipc://" in started.stdout
    assert "this process is connected to it" in started.stdout
    from aiflow_notebook.session.local_server import local_server

    server = local_server()
    assert server.alive and server.url.startswith("ipc://") and str(aiflow_home) in str(server.home)
    try:
        for cell in ("%aiflow workflow on_server", "def one():\n    return 1",
                     "%%aiflow job only\naf.user_define_operation(one, name='one')"):
            assert run(shell, cell).success
        assert "FINISHED" in run(shell, "%aiflow submit --wait --timeout 120").stdout
        assert _runs_in(server.home / "meta.db") == 1  # the server's store recorded the run...
        assert _runs_in(aiflow_home / "meta.db") == 0  # ...and nothing went into the kernel's own
        again = run(shell, "%aiflow server start")
        assert "already runs at" in again.stderr and "Traceback" not in again.stderr
        assert "pid" in run(shell, "%aiflow server status").stdout
        bad = run(shell, "%aiflow server restart")
        assert "invalid choice: 'restart'" in bad.stderr and "%aiflow server" in bad.stderr
    finally:
        stopped = run(shell, "%aiflow server stop")
    assert f"stopped the local aiflow server at {server.url}" in stopped.stdout
    assert not server.alive
    assert wait_no_process_left(pids=[server.pid], timeout=30) == []
    import aiflow_notebook as af

    assert not af.connected()
    assert "no local aiflow server was started" in run(shell, "%aiflow server stop").stdout


def _runs_in(database) -> int:
    """How many workflow runs a SQLite metadata database holds (none when it or its tables do not exist)."""
    import sqlite3

    if not database.exists():
        return 0
    with sqlite3.connect(database) as db:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'workflow_run'").fetchone():
            return 0
        return db.execute("SELECT count(*) FROM workflow_run").fetchone()[0]
