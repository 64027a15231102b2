"""The embedded scheduler end to end: real job processes, a real event bus, real SQLite."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import aiflow_notebook as af
from aiflow_notebook.scheduler import EmbeddedScheduler
from aiflow_notebook.testing.processes import our_processes, wait_no_process_left
from aiflow_notebook.testing.waiting import wait_for


@pytest.fixture
def scheduler(aiflow_home):
    with EmbeddedScheduler() as embedded:
        yield embedded
    assert wait_no_process_left(cmdline=str(aiflow_home / "runs")) == [], "the scheduler left job processes behind"


def _job_processes(home: Path) -> list[str]:
    """Live processes started for jobs under this AIFLOW_HOME (by their spec path on the command line)."""
    return our_processes(cmdline=str(home / "runs"))




def make_numbers():
    return [[1], [2], [3]]


def double(rows):
    return [[int(r[0]) * 2] for r in rows]


def explode(rows):
    raise ValueError("bad row in the input: boom")


def test_a_chain_runs_in_order_and_records_lineage(scheduler, tmp_path):
    with af.workflow("chain"):
        with af.job_config("a"):
            af.write_dataset(af.user_define_operation(make_numbers, name="make"), "nums", uri=str(tmp_path / "n.json"))
        with af.job_config("b"):
            af.write_dataset(af.transform(af.read_dataset("nums"), double), "doubled", uri=str(tmp_path / "d.json"))
        af.action_on_job_status("b", upstream="a")
    run = scheduler.submit(af.compile("chain"))
    assert run.wait(90) == "FINISHED"
    assert json.loads((tmp_path / "d.json").read_text()) == [[2], [4], [6]]
    assert run.jobs() == {"a": "FINISHED", "b": "FINISHED"}
    events = [(e.key, e.value) for e in run.job_events()]
    assert events.index(("chain.a", "FINISHED")) < events.index(("chain.b", "STARTING"))
    assert [e.value for e in scheduler.client.list_events(key="doubled", event_type="DATASET_UPDATED")] == [
        str(tmp_path / "d.json")]
    b_run = json.loads(run.job_events()[-1].context)["job_run"]
    assert scheduler.store.get_job_run(b_run).state == "FINISHED"


def test_a_failing_job_fails_the_run_with_its_log_tail_and_blocks_downstream(scheduler, tmp_path):
    with af.workflow("broken"):
        with af.job_config("a"):
            af.write_dataset(af.user_define_operation(make_numbers, name="make"), "nums", uri=str(tmp_path / "n.json"))
        with af.job_config("b"):
            af.write_dataset(af.transform(af.read_dataset("nums"), explode), "out", uri=str(tmp_path / "o.json"))
        with af.job_config("c"):
            af.write_dataset(af.transform(af.read_dataset("out"), double), "never", uri=str(tmp_path / "x.json"))
        af.action_on_job_status("b", upstream="a")
        af.action_on_job_status("c", upstream="b")
    run = scheduler.submit(af.compile("broken"))
    assert run.wait(90) == "FAILED"
    assert run.jobs() == {"a": "FINISHED", "b": "FAILED", "c": "INIT"}
    error = run.errors()["b"]
    assert "exit code 1" in error and "ValueError: bad row in the input: boom" in error
    assert not (tmp_path / "x.json").exists()


def serve_forever(context):
    Path(context.properties["marker"]).open("a").write("started\n")
    while True:
        time.sleep(0.1)


def test_stop_kills_a_long_running_job_and_leaves_no_process(scheduler, aiflow_home, tmp_path):
    marker = tmp_path / "starts.txt"
    with af.workflow("forever"):
        with af.job_config("serve"):
            af.user_define_operation(serve_forever, name="serve", properties={"marker": str(marker)})
    run = scheduler.submit(af.compile("forever"))
    wait_for(lambda: marker.exists(), what="the job to start")
    assert _job_processes(aiflow_home)
    assert run.stop() == "KILLED"
    assert run.jobs() == {"serve": "KILLED"}
    wait_for(lambda: not _job_processes(aiflow_home), timeout=15, what="job processes to go")


def test_validating_a_model_version_restarts_the_serving_job_exactly_once(scheduler, tmp_path):
    marker = tmp_path / "starts.txt"
    with af.workflow("serving"):
        with af.job_config("serve"):
            af.user_define_operation(serve_forever, name="serve", properties={"marker": str(marker)})
        af.action_on_model_version_event("serve", model="ctr", event_type="MODEL_VALIDATED", action="RESTART")
    run = scheduler.submit(af.compile("serving"))
    wait_for(lambda: marker.exists() and marker.read_text().count("started") == 1, what="serve to start")
    store = scheduler.store  # publishes model-center events onto the scheduler's bus
    store.register_model("ctr")
    store.register_model_version("ctr", uri="file:///m/1")
    store.register_model_version("ctr", uri="file:///m/2")  # GENERATED events do not match the rule
    store.update_model_version("ctr", 2, "VALIDATED")
    wait_for(lambda: marker.read_text().count("started") == 2, what="serve to restart")
    # Barrier: the stop is handled after every action the earlier events decided, so a duplicate restart
    # would show up as a third start before the final KILLED.
    assert run.stop() == "KILLED"
    assert marker.read_text().count("started") == 2
    assert [e.value for e in run.job_events()] == ["STARTING", "RUNNING", "KILLED", "STARTING", "RUNNING", "KILLED"]


def test_an_engine_without_a_runner_is_refused_at_submit(scheduler, monkeypatch):
    from aiflow_notebook.core import engine_names
    from aiflow_notebook.scheduler import SchedulerError

    monkeypatch.setitem(engine_names._known, "quantum", None)  # the compiler accepts the name...
    with af.workflow("exotic"):
        with af.job_config("train", engine="quantum"):
            af.user_define_operation(make_numbers, name="noop")
    with pytest.raises(SchedulerError, match="refused workflow 'exotic': no runner is installed for engine 'quantum'"):
        scheduler.submit(af.compile("exotic"))  # ...but no runner is registered for it


def environment_keys(context):
    import os

    Path(context.properties["out"]).write_text("\n".join(sorted(os.environ)))


def test_jobs_do_not_inherit_pyflink_worker_variables(scheduler, tmp_path, monkeypatch):
    # what a process that ran a local PyFlink job (a kernel, a test) carries afterwards
    monkeypatch.setenv("PYFLINK_GATEWAY_DISABLED", "true")
    monkeypatch.setenv("_PYFLINK_CONN_INFO_PATH", "/tmp/gone")
    out = tmp_path / "env.txt"
    with af.workflow("envcheck"):
        with af.job_config("job"):
            af.user_define_operation(environment_keys, name="keys", properties={"out": str(out)})
    assert scheduler.submit(af.compile("envcheck")).wait(60) == "FINISHED"
    keys = out.read_text().split()
    assert "AIFLOW_JOB_RUN_ID" in keys
    assert "PYFLINK_GATEWAY_DISABLED" not in keys and "_PYFLINK_CONN_INFO_PATH" not in keys


def mark_once(context):
    Path(context.properties["marker"]).open("a").write("ran\n")


def test_restart_job_runs_a_new_attempt_of_one_job_and_the_run_goes_on(scheduler, tmp_path):
    from aiflow_notebook.scheduler import SchedulerError

    serving, once = tmp_path / "serve.txt", tmp_path / "once.txt"
    with af.workflow("restartable"):
        with af.job_config("serve"):
            af.user_define_operation(serve_forever, name="serve", properties={"marker": str(serving)})
        with af.job_config("once"):
            af.user_define_operation(mark_once, name="once", properties={"marker": str(once)})
    run = scheduler.submit(af.compile("restartable"))
    wait_for(lambda: run.jobs()["once"] == "FINISHED" and serving.exists(), what="once to finish, serve to start")
    run.restart_job("once")  # a job that ended runs again
    wait_for(lambda: once.read_text().count("ran") == 2 and run.jobs()["once"] == "FINISHED", what="once again")
    run.restart_job("serve")  # a running job is stopped first
    wait_for(lambda: serving.read_text().count("started") == 2, what="serve's second attempt")
    with pytest.raises(SchedulerError, match="has no job 'nope'"):
        run.restart_job("nope")
    scheduler.api.restart_job(run.run_id + 100, "serve")  # no such live run: ignored, the loop goes on
    assert run.stop() == "KILLED"
    serve_events = [e for e in run.job_events() if e.key == "restartable.serve"]
    assert [e.value for e in serve_events] == ["STARTING", "RUNNING", "KILLED", "STARTING", "RUNNING", "KILLED"]
    assert [json.loads(e.context)["attempt"] for e in serve_events] == [0, 0, 0, 1, 1, 1]
    with pytest.raises(SchedulerError, match="already ended KILLED"):
        run.restart_job("serve")


def test_a_process_given_a_host_submits_to_the_hosts_scheduler(scheduler, monkeypatch, tmp_path):
    import aiflow_notebook.session.submit as submission
    from aiflow_notebook.scheduler.embedded import HostedScheduler

    monkeypatch.setenv("AIFLOW_SCHEDULER_URL", scheduler.event_url)  # as the Jupyter server sets it for a kernel
    hosted = submission.embedded_scheduler()
    assert isinstance(hosted, HostedScheduler) and hosted.event_url == scheduler.event_url
    once = tmp_path / "once.txt"
    with af.workflow("guest"):
        with af.job_config("once"):
            af.user_define_operation(mark_once, name="once", properties={"marker": str(once)})
    run = af.submit("guest")
    assert run.wait(60) == "FINISHED" and once.read_text() == "ran\n"
    assert scheduler.store.get_workflow_run(run.run_id).state == "FINISHED"  # the host ran and recorded it
    submission.stop_embedded_scheduler()  # the guest lets go; the host's scheduler goes on
    assert scheduler.scheduler.alive
    assert scheduler.submit(af.compile("guest")).wait(60) == "FINISHED"
