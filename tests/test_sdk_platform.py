"""``$AIFLOW_PLATFORM`` is the default platform of every job; explicit settings win; python jobs ignore it."""

from __future__ import annotations

import pytest

import aiflow_notebook as af
from aiflow_notebook.scheduler import EmbeddedScheduler

CLUSTER = "flink://127.0.0.1:1"  # nothing listens there: a job that tried to use it would fail



def test_the_environment_names_the_default_platform_and_explicit_settings_win(monkeypatch):
    monkeypatch.setenv("AIFLOW_PLATFORM", CLUSTER)
    with af.workflow("plat"):
        with af.job_config("on_cluster", engine="flink"):
            af.read_dataset("a")
        with af.job_config("local", engine="flink", platform="local"):
            af.read_dataset("b")
        with af.global_config(platform="flink://10.0.0.1:8081"), af.job_config("outer", engine="flink"):
            af.read_dataset("c")
    jobs = af.compile("plat").jobs
    assert {name: job.platform for name, job in jobs.items()} == {
        "on_cluster": CLUSTER, "local": "local", "outer": "flink://10.0.0.1:8081"}


def test_without_the_variable_jobs_run_locally(monkeypatch):
    monkeypatch.delenv("AIFLOW_PLATFORM", raising=False)
    with af.workflow("plat_default"):
        with af.job_config("j"):
            af.read_dataset("a")
    assert af.compile("plat_default").jobs["j"].platform == "local"


@pytest.mark.slow
def test_a_python_job_runs_where_the_scheduler_runs_it_whatever_the_platform(monkeypatch, tmp_path):
    monkeypatch.setenv("AIFLOW_PLATFORM", CLUSTER)
    out = tmp_path / "out.txt"
    with af.workflow("plat_python"):
        with af.job_config("py"):
            af.user_define_operation(lambda: out.write_text("ran"), name="write")
    with EmbeddedScheduler() as scheduler:
        run = scheduler.submit(af.compile("plat_python"))
        assert run.wait(60) == "FINISHED", run.errors()
    assert out.read_text() == "ran"
