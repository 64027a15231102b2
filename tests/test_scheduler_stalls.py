"""The scheduler's loop never waits on a job, its threads end, and a WorkflowRun follows the bus."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

import aiflow_notebook as af
from aiflow_notebook.core.vocabulary import JOB_STOP_FAILED
from aiflow_notebook.engines.process import JobProcess
from aiflow_notebook.events import Event, EventClient, EventServer
from aiflow_notebook.meta.store import MetadataStore
from aiflow_notebook.scheduler import Scheduler, SchedulerClient
from aiflow_notebook.storage.blobs import LocalBlobStore
from aiflow_notebook.testing.processes import our_processes, wait_no_process_left
from aiflow_notebook.testing.waiting import wait_for

GRACE_S = 5.0


def stubborn(context):
    """A job that ignores SIGTERM: stopping it takes the whole grace period, then SIGKILL."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    Path(context.properties["marker"]).write_text("up")
    while True:
        time.sleep(0.1)


def note(context):
    Path(context.properties["marker"]).write_text(str(time.monotonic()))


def nap(context):
    time.sleep(float(context.properties["seconds"]))


def test_stopping_a_stubborn_job_does_not_hold_up_other_decisions(scheduler, tmp_path):
    up, quick = tmp_path / "up", tmp_path / "quick"
    with af.workflow("stalls"):
        with af.job_config("stubborn", properties={"stop_grace": GRACE_S}):
            af.user_define_operation(stubborn, name="stubborn", properties={"marker": str(up)})
        with af.job_config("quick"):
            af.user_define_operation(note, name="note", properties={"marker": str(quick)})
        af.action_on_event("stubborn", key="halt", action="STOP")
        af.action_on_event("quick", key="go")
    run = scheduler.submit(af.compile("stalls"))
    wait_for(lambda: up.exists(), what="the stubborn job to start")

    scheduler.client.send_event(Event("halt", "now"))
    sent = time.monotonic()
    scheduler.client.send_event(Event("go", "now"))  # decided after the STOP, while the stop goes on
    wait_for(lambda: quick.exists(), timeout=GRACE_S - 1, what="quick to start while stubborn is being stopped")
    assert float(quick.read_text()) - sent < GRACE_S - 1
    assert run.jobs()["stubborn"] == "RUNNING"  # its stop is still waiting out the grace period

    wait_for(lambda: run.jobs()["stubborn"] == "KILLED", timeout=GRACE_S + 15, what="stubborn to be killed")
    killed = [e for e in run.job_events() if e.key == "stalls.stubborn" and e.value == "KILLED"]
    assert len(killed) == 1 and json.loads(killed[0].context)["stop_seconds"] >= GRACE_S - 0.5
    assert run.wait(30) == "FINISHED"  # every job ended, none failed (one was stopped by a rule)


def stay(context):
    Path(context.properties["marker"]).write_text("up")
    while True:
        time.sleep(0.1)


def test_a_stop_that_fails_is_reported_on_the_bus_and_tried_again(scheduler, tmp_path, monkeypatch):
    # A stop that raises cannot be produced for real (its signals' errors are handled inside), so the
    # first call of JobProcess.stop is made to raise here; the second is the real one.
    up = tmp_path / "up"
    with af.workflow("failstop"):
        with af.job_config("stay"):
            af.user_define_operation(stay, name="stay", properties={"marker": str(up)})
    run = scheduler.submit(af.compile("failstop"))
    wait_for(lambda: up.exists(), what="the job to start")
    real_stop, calls = JobProcess.stop, []

    def stop_once_broken(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OSError("simulated: cannot signal the job")
        return real_stop(self, *args, **kwargs)

    monkeypatch.setattr(JobProcess, "stop", stop_once_broken)
    with pytest.raises(TimeoutError):
        run.stop(timeout=3)
    failed = wait_for(lambda: scheduler.client.list_events(key="failstop.stay", event_type=JOB_STOP_FAILED),
                      what="the failed stop to be reported")
    assert "cannot signal the job" in failed[0].value
    assert run.stop(timeout=30) == "KILLED"


def test_watcher_threads_end_with_the_scheduler(tmp_path):
    up = tmp_path / "up"
    with af.workflow("watched"):
        with af.job_config("stay"):
            af.user_define_operation(stay, name="stay", properties={"marker": str(up)})
    db = f"sqlite:///{tmp_path / 'w.db'}"
    server = EventServer(db).start()
    client = EventClient(server.url)
    store = MetadataStore(db)
    leader = None
    try:
        sched = Scheduler(store, client, home=tmp_path / "home", blob_store=LocalBlobStore(tmp_path / "b")).start()
        SchedulerClient(client, blob_store=sched.blobs).submit(af.compile("watched"))
        wait_for(lambda: up.exists(), what="the job to start")
        leader = sched.state.active_job_runs()[0].record["pid"]
        assert any(t.name.startswith("aiflow-job-") for t in threading.enumerate())
        sched.stop(kill_jobs=False)  # the job goes on (a restarted scheduler would adopt it)
        wait_for(lambda: not any(t.name.startswith("aiflow-job-") for t in threading.enumerate()), timeout=5,
                 what="the job's watcher thread to end with the scheduler")
        assert our_processes(pids=[leader])
    finally:
        if leader is not None:
            os.killpg(leader, signal.SIGKILL)
        client.close()
        store.close()
        server.stop()
    assert wait_no_process_left(cmdline=str(tmp_path / "home" / "runs")) == []


def test_a_workflow_run_follows_the_bus_instead_of_listing_its_history(scheduler, tmp_path, monkeypatch):
    with af.workflow("followed"):
        for name in ("a", "b"):
            with af.job_config(name):
                af.user_define_operation(nap, name=f"nap_{name}", properties={"seconds": 1.0})
        af.action_on_job_status("b", upstream="a")
    run = scheduler.submit(af.compile("followed"))
    listed = []  # listings asked for by this thread (the scheduler shares the client and lists too)
    real_list, me = scheduler.client.list_events, threading.current_thread()

    def spy(*args, **kwargs):
        if threading.current_thread() is me:
            listed.append(kwargs.get("since_version"))
        return real_list(*args, **kwargs)

    monkeypatch.setattr(scheduler.client, "list_events", spy)
    listeners = _listener_threads()
    run.jobs()
    seen = listed[-1]
    assert run.wait(60) == "FINISHED"  # woken by the bus: at most one listing to catch up, no polling
    assert len(listed) <= 2 and all(since >= seen for since in listed[1:]), listed
    assert run.jobs() == {"a": "FINISHED", "b": "FINISHED"} and run.status() == "FINISHED"
    assert len(listed) <= 2, "a finished run is not read again"
    wait_for(lambda: _listener_threads() == listeners, timeout=5, what="the wait's listener to end")


def _listener_threads() -> int:
    return sum(t.name == "aiflow-event-listener" and t.is_alive() for t in threading.enumerate())
