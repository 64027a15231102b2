"""The REST shape of a job run carries its savepoint (the sidebar and scripts see where a restart resumes)."""

from __future__ import annotations

from aiflow_notebook.meta.models import JobRun
from aiflow_notebook.server_extension.service import _job_run


def test_a_job_run_in_the_rest_answer_names_its_savepoint():
    stopped = JobRun(5, "ctr", "serve", "KILLED", 0, None, None, None, None, 3, savepoint="/h/savepoints/ctr/3/serve/sp-1")
    running = JobRun(7, "ctr", "serve", "RUNNING", 1, None, None, None, None, 3)
    assert _job_run(stopped)["savepoint"] == "/h/savepoints/ctr/3/serve/sp-1"
    assert _job_run(running)["savepoint"] is None
