"""The embedded scheduler end to end: real job processes, a real event bus, real SQLite."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import aiflow_notebook as af
from aiflow_notebook.testing.processes import our_processes
from aiflow_notebook.testing.waiting import wait_for


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


# --- requests are answered by the scheduler only ------------------------------------------------------------


@pytest.fixture
def bare_bus(tmp_path):
    """An event bus with no scheduler on it: whatever answers a request there is a forger."""
    from aiflow_notebook.events import EventClient, EventServer

    server = EventServer(f"sqlite:///{tmp_path / 'bus.db'}").start()
    client = EventClient(server.url)
    try:
        yield client
    finally:
        client.close()
        server.stop()


def _forge_replies(client, sender: str, reply_type: str, value: str):
    """Answer every command to scheduler ``nobody`` with a reply naming its request, sent as ``sender``."""
    from aiflow_notebook.core.vocabulary import CONTROL_NAMESPACE, command_key
    from aiflow_notebook.events import Event

    def forge(event):
        request = json.loads(event.value)
        if event.sender != sender and "request_id" in request:
            client.send_event(Event(key=command_key("nobody"), value=value, event_type=reply_type,
                                    namespace=CONTROL_NAMESPACE, sender=sender,
                                    context=json.dumps({"request_id": request["request_id"], "run": 42})))

    return client.listen(command_key("nobody"), since_version=client.latest_version(), callback=forge)


@pytest.mark.parametrize("forger, accepted", [("mallory", False), ("scheduler", True)])
def test_a_reply_from_another_sender_is_ignored_for_a_submission_and_for_a_schedule(bare_bus, forger, accepted):
    from aiflow_notebook.core.vocabulary import RUN_CREATED, SCHEDULE_REPLY
    from aiflow_notebook.scheduler import SchedulerClient, SchedulerError
    from aiflow_notebook.scheduler.schedule_client import ScheduleClient

    with af.workflow("forged"), af.job_config("a"):
        af.user_define_operation(make_numbers, name="make")
    api = SchedulerClient(bare_bus, "nobody")
    listener = _forge_replies(bare_bus, forger, RUN_CREATED, json.dumps({"run": 42, "workflow": "forged"}))
    try:
        if accepted:  # the forger works: what makes the difference is the sender alone
            assert api.submit(af.compile("forged"), timeout=10).run_id == 42
        else:
            with pytest.raises(SchedulerError, match="scheduler 'nobody' did not answer within 2 s"):
                api.submit(af.compile("forged"), timeout=2)
    finally:
        listener.stop()
    listener = _forge_replies(bare_bus, forger, SCHEDULE_REPLY, json.dumps({"result": ["forged"]}))
    try:
        if accepted:
            assert ScheduleClient(api).list_schedules(timeout=10) == ["forged"]
        else:
            with pytest.raises(SchedulerError, match="scheduler 'nobody' did not answer list schedules within 2 s"):
                ScheduleClient(api).list_schedules(timeout=2)
    finally:
        listener.stop()


# --- a wait that can no longer succeed stops at once ------------------------------------------------------


def numbers_a_little_later():
    time.sleep(2)  # the wait has begun before anything fails
    return [[1], [2], [3]]


def _hopeless_workflow(tmp_path: Path) -> str:
    """serve (streaming) runs on; prep → train, which fails → validate, which can never start."""
    with af.workflow("hopeless"):
        with af.job_config("serve", streaming=True):
            af.user_define_operation(serve_forever, name="serve", properties={"marker": str(tmp_path / "served")})
        with af.job_config("prep"):
            af.write_dataset(af.user_define_operation(numbers_a_little_later, name="make"), "nums",
                             uri=str(tmp_path / "n.json"))
        with af.job_config("train"):
            af.write_dataset(af.transform(af.read_dataset("nums"), explode), "out", uri=str(tmp_path / "o.json"))
        with af.job_config("validate"):
            af.write_dataset(af.transform(af.read_dataset("out"), double), "checked", uri=str(tmp_path / "v.json"))
        af.action_on_job_status("train", upstream="prep")
        af.action_on_job_status("validate", upstream="train")
    return "hopeless"


TRAIN_FAILED = r"job 'train' FAILED: exit code 1; log tail:.*ValueError: bad row in the input: boom"


def test_wait_for_stops_at_once_when_a_job_that_leads_there_failed(scheduler, tmp_path):
    from aiflow_notebook.scheduler.client import RunCannotGetThereError

    run = scheduler.submit(af.compile(_hopeless_workflow(tmp_path)))
    started = time.monotonic()
    with pytest.raises(RunCannotGetThereError, match=r"(?s)job 'validate' of run \d+ \('hopeless'\) did not reach "
                                                     r"FINISHED and no longer can: 'train' failed.* it is INIT .*"
                                                     + TRAIN_FAILED):
        run.wait_for("validate", "FINISHED", timeout=600)
    assert time.monotonic() - started < 120, "it waited out (most of) its timeout"
    assert run.status() == "RUNNING" and run.jobs()["serve"] == "RUNNING"  # the run goes on: serve runs
    assert run.stop() == "KILLED"


def test_wait_stops_at_once_when_only_streaming_jobs_are_left_after_a_failure(scheduler, tmp_path):
    from aiflow_notebook.scheduler.client import RunCannotGetThereError

    run = scheduler.submit(af.compile(_hopeless_workflow(tmp_path)))
    started = time.monotonic()
    with pytest.raises(RunCannotGetThereError, match=r"(?s)run \d+ of 'hopeless' will not end by itself: "
                                                     + TRAIN_FAILED + r".*only streaming jobs run \(serve\)"):
        run.wait(timeout=600)
    assert time.monotonic() - started < 120, "it waited out (most of) its timeout"
    assert run.stop() == "KILLED"  # a stop is awaited to the end, failure or not


def test_wait_until_with_a_runs_hopeless_check_stops_at_once_naming_the_failed_job(scheduler, tmp_path):
    from aiflow_notebook.core.waiting import HopelessWaitError

    run = scheduler.submit(af.compile(_hopeless_workflow(tmp_path)))
    started = time.monotonic()
    with pytest.raises(HopelessWaitError, match=r"(?s)gave up waiting for validate's output: in run \d+ of "
                                                r"'hopeless', " + TRAIN_FAILED + ".*nothing that leads to 'validate'"):
        af.wait_until(lambda: (tmp_path / "v.json").exists(), timeout=600, what="validate's output",
                      hopeless=run.hopeless("validate"))
    assert time.monotonic() - started < 120, "it waited out (most of) its timeout"
    # A failure from before the check was made does not count (an event just sent may retry the job)...
    with pytest.raises(TimeoutError):
        af.wait_until(lambda: (tmp_path / "v.json").exists(), timeout=1, hopeless=run.hopeless("validate"))
    # ...an ended run always does, and the error names the job that failed in it.
    assert run.stop() == "KILLED"
    with pytest.raises(HopelessWaitError, match=r"(?s)run \d+ of 'hopeless' ended KILLED; " + TRAIN_FAILED):
        af.wait_until(lambda: False, timeout=600, hopeless=run.hopeless())
