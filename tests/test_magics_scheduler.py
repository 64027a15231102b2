"""%aiflow submit / status / stop / lineage in a real IPython shell, on the embedded scheduler."""

from __future__ import annotations

import pytest
from sdk_support import close_shell, new_shell, run

import aiflow_notebook.session.submit as submit_module


@pytest.fixture
def shell(tmp_path, aiflow_home):
    shell = new_shell(str(tmp_path / "ipython"))
    yield shell
    close_shell()  # the fresh_sdk fixture then stops the embedded scheduler, as the kernel's exit does


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
