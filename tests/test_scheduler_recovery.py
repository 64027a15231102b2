"""Recovery of what a crash kept from the bus.

The window between committing a job's final state and publishing its status event is a few
microseconds wide, too narrow to hit with a real kill -9; so this test injects the fault (the first
scheduler fails exactly there, as if it died) and checks that the next scheduler publishes the missing
event once, and the run carries on. (kill -9 of a real server is tested in test_scheduler_remote.py.)
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

import aiflow_notebook as af
from aiflow_notebook.core.vocabulary import RUN_STATUS_CHANGED, SCHEDULER_SENDER, JobState
from aiflow_notebook.events import Event, EventClient, EventServer
from aiflow_notebook.events.publisher import EventBusPublisher
from aiflow_notebook.meta.store import MetadataStore
from aiflow_notebook.scheduler import Scheduler, SchedulerClient
from aiflow_notebook.storage.blobs import LocalBlobStore
from aiflow_notebook.testing.waiting import wait_for


@pytest.fixture
def bus(tmp_path):
    """A real event server on a SQLite file, a client of it, and the store the schedulers share."""
    server = EventServer(f"sqlite:///{tmp_path / 'meta.db'}", bind="tcp://127.0.0.1:0").start()
    client = EventClient(server.url)
    store = MetadataStore(server.db_url, publisher=EventBusPublisher(client))
    try:
        yield client, store
    finally:
        client.close()
        store.close()
        server.stop()


def make():
    return [[1]]


def dies_announcing(scheduler: Scheduler, announcement: str, when: Callable[..., bool], window: str) -> Scheduler:
    """The scheduler's announcer fails where it would make ``announcement`` (``job_status``,
    ``run_status``) with arguments for which ``when(...)`` holds, as if the process died there: the loop
    ends, the state is committed, the event is never sent."""
    publish = getattr(scheduler.announcer, announcement)

    def announce(*args, **kwargs):
        if when(*args, **kwargs):
            scheduler.stop()
            raise RuntimeError(f"simulated crash between {window}")
        publish(*args, **kwargs)

    setattr(scheduler.announcer, announcement, announce)
    return scheduler


def dies_before_publishing_finished(scheduler: Scheduler) -> Scheduler:
    """Dies where it would publish job a's FINISHED."""
    return dies_announcing(scheduler, "job_status", lambda run, job, job_run_id, attempt, state, *_, **__:
                           job == "a" and state == JobState.FINISHED, "commit and publish")


def test_a_final_state_committed_but_not_published_is_published_after_restart(tmp_path, bus):
    with af.workflow("recover"):
        with af.job_config("a"):
            af.write_dataset(af.user_define_operation(make, name="make"), "x", uri=str(tmp_path / "x.json"))
        with af.job_config("b"):
            af.write_dataset(af.transform(af.read_dataset("x"), lambda rows: rows, name="copy"), "y",
                             uri=str(tmp_path / "y.json"))
        af.action_on_job_status("b", upstream="a")
    client, store = bus
    first = dies_before_publishing_finished(Scheduler(store, client, home=tmp_path)).start()
    api = SchedulerClient(client, blob_store=LocalBlobStore(tmp_path / "blobs"))
    run = api.submit(af.compile("recover"))
    first._thread.join(60)
    assert not first.alive and run.jobs() == {"a": "RUNNING", "b": "INIT"}  # FINISHED never reached the bus

    second = Scheduler(store, client, home=tmp_path).start()
    assert run.wait(60) == "FINISHED"
    finished_a = [e for e in run.job_events() if e.key == "recover.a" and e.value == "FINISHED"]
    assert len(finished_a) == 1
    assert json.loads(Path(tmp_path / "y.json").read_text()) == [[1]]
    second.stop()


def work_until_lost(context):
    marker = Path(context.properties["marker"])
    with marker.open("a") as fh:
        fh.write("start\n")
    if marker.read_text().count("start") == 1:  # the first attempt runs until it is lost
        while True:
            time.sleep(0.1)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("policy", ["restart", None])
def test_a_job_lost_while_the_scheduler_was_down_fails_or_restarts_per_policy(tmp_path, policy, bus):
    marker = tmp_path / "starts.txt"
    with af.workflow("lossy"):
        with af.job_config("work", properties={"on_lost": policy} if policy else None):
            af.user_define_operation(work_until_lost, name="work", properties={"marker": str(marker)})
    client, store = bus
    first = Scheduler(store, client, home=tmp_path).start()
    run = SchedulerClient(client, blob_store=LocalBlobStore(tmp_path / "blobs")).submit(af.compile("lossy"))
    wait_for(lambda: marker.exists(), what="the job to start")
    leader = first.state.active_job_runs()[0].record["pid"]
    first.stop(kill_jobs=False)
    os.killpg(leader, signal.SIGKILL)  # the job and its launcher vanish: no exit status is written
    wait_for(lambda: _gone(leader), timeout=10, what="the job to vanish")

    second = Scheduler(store, client, home=tmp_path).start()
    states = None
    if policy == "restart":
        assert run.wait(60) == "FINISHED"
        assert marker.read_text().count("start") == 2
        states = [e.value for e in run.job_events()]
        assert states == ["STARTING", "RUNNING", "FAILED", "STARTING", "RUNNING", "FINISHED"]
        assert [json.loads(e.context)["attempt"] for e in run.job_events()][-1] == 1
    else:
        assert run.wait(60) == "FAILED"
        assert "the process was killed" in run.errors()["work"]
        assert marker.read_text().count("start") == 1
    second.stop()


def count_start(context):
    with Path(context.properties["marker"]).open("a") as fh:
        fh.write("start\n")


def once(name: str, marker: Path):
    """A one-job workflow whose job appends a line to ``marker`` each time it starts."""
    with af.workflow(name):
        with af.job_config("once"):
            af.user_define_operation(count_start, name="once", properties={"marker": str(marker)})
    return af.compile(name)


def dies_right_after_launching(scheduler: Scheduler) -> Scheduler:
    """Dies between starting a job's process and committing its pid, and only once the job has ended: the
    few milliseconds a real kill -9 rarely hits (test_schedules_recovery's kill -9 test hit it once, and the
    restarted scheduler ran the job again)."""
    launch = scheduler.launcher.launch

    def launch_and_die(*args, **kwargs):
        process = launch(*args, **kwargs)
        process.wait(60)
        scheduler.stop()
        raise RuntimeError("simulated crash between launching a job and recording its process")

    scheduler.launcher.launch = launch_and_die
    return scheduler


def test_a_job_that_ended_before_its_process_was_recorded_is_not_run_again(tmp_path, bus):
    marker = tmp_path / "starts.txt"
    workflow = once("launched", marker)
    client, store = bus
    first = dies_right_after_launching(Scheduler(store, client, home=tmp_path)).start()
    run = SchedulerClient(client, blob_store=LocalBlobStore(tmp_path / "blobs")).submit(workflow)
    first._thread.join(60)
    assert not first.alive and marker.read_text() == "start\n"

    second = Scheduler(store, client, home=tmp_path).start()
    assert run.wait(60) == "FINISHED"
    assert marker.read_text() == "start\n", "the restarted scheduler ran the job again"
    assert [e.value for e in run.job_events()] == ["STARTING", "RUNNING", "FINISHED"]
    second.stop()


def dies_before_announcing_the_run(scheduler: Scheduler, announced: str) -> Scheduler:
    """Dies where it would announce a run ``announced`` (RUNNING, FINISHED), the run's state already
    committed (a CI run's kill -9 of ``aiflow server`` once hit the RUNNING window: the run ran, but nobody
    on the bus saw it start)."""
    return dies_announcing(scheduler, "run_status", lambda run_id, workflow, state, **_: state == announced,
                           "committing a run's state and announcing it")


def test_a_triggered_run_committed_but_not_announced_is_announced_once_after_restart(tmp_path, bus):
    marker = tmp_path / "starts.txt"
    workflow = once("announced", marker)
    client, store = bus
    first = dies_before_announcing_the_run(Scheduler(store, client, home=tmp_path), "RUNNING").start()
    api = SchedulerClient(client, blob_store=LocalBlobStore(tmp_path / "blobs"))
    trigger_id = af.add_workflow_trigger(workflow, key="clicks", event_type="DATASET_UPDATED",
                                         scheduler=api)
    sent = client.send_event(Event("clicks", "day-1", "DATASET_UPDATED"))
    first._thread.join(60)
    assert not first.alive

    def started() -> list[dict]:
        return [json.loads(e.context) for e in client.list_events(key="announced", event_type=RUN_STATUS_CHANGED,
                                                                  sender=SCHEDULER_SENDER) if e.value == "RUNNING"]

    assert started() == []  # the run is committed, its start never reached the bus
    # a status from anyone but the scheduler is not its word: it must not stand in for the announcement
    client.send_event(Event("announced", "RUNNING", RUN_STATUS_CHANGED, sender="mallory", context='{"run": 1}'))
    second = Scheduler(store, client, home=tmp_path).start()
    try:
        wait_for(lambda: started(), 60, "the run's RUNNING status")
        wait_for(lambda: marker.exists(), 60, "the run's job")
        [announced] = started()
        assert announced["trigger"] == trigger_id and announced["event"] == sent.version
        assert marker.read_text() == "start\n"
    finally:
        second.stop()


def test_a_run_end_committed_but_not_announced_is_announced_once_after_restart(tmp_path, bus):
    marker = tmp_path / "starts.txt"
    workflow = once("ended", marker)
    client, store = bus
    first = dies_before_announcing_the_run(Scheduler(store, client, home=tmp_path), "FINISHED").start()
    run = SchedulerClient(client, blob_store=LocalBlobStore(tmp_path / "blobs")).submit(workflow)
    first._thread.join(60)
    assert not first.alive and run.jobs() == {"once": "FINISHED"} and run.status() == "RUNNING"

    second = Scheduler(store, client, home=tmp_path).start()
    try:
        assert run.wait(60) == "FINISHED"  # without the re-announcement this wait would hang
        ends = [e for e in client.list_events(key="ended", event_type=RUN_STATUS_CHANGED) if e.value != "RUNNING"]
        assert [e.value for e in ends] == ["FINISHED"]
        assert marker.read_text() == "start\n"
    finally:
        second.stop()
    Scheduler(store, client, home=tmp_path).start().stop()  # recovers at start: the bus has the end now
    ends = [e for e in client.list_events(key="ended", event_type=RUN_STATUS_CHANGED) if e.value != "RUNNING"]
    assert len(ends) == 1, "an end the bus had was announced again"
