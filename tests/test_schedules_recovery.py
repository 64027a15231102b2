"""Schedules, triggers and stateful conditions survive a ``kill -9`` of ``aiflow server start`` (a real
process) with exactly-once firing: a tick missed while down fires once, a triggering event starts one run,
a condition's value state carries on where it was."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

import aiflow_notebook as af
from aiflow_notebook.core.vocabulary import RUN_STATUS_CHANGED
from aiflow_notebook.events import Event, EventClient
from aiflow_notebook.meta.store import MetadataStore
from aiflow_notebook.testing.event_server import EventServerProcess
from aiflow_notebook.testing.waiting import wait_for


def record(context):
    with Path(context.properties["out"]).open("a") as out:
        out.write(f"{os.environ['AIFLOW_RUN_ID']}\n")


def _started(client: EventClient, workflow: str) -> list[dict]:
    """The runs of ``workflow`` the scheduler announced: their context, with ``at`` (the announcement's time)."""
    return [{**json.loads(e.context), "at": e.create_time / 1000}
            for e in client.list_events(key=workflow, event_type=RUN_STATUS_CHANGED) if e.value == "RUNNING"]


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _define(name: str, out: Path) -> None:
    with af.workflow(name):
        with af.job_config("job"):
            af.user_define_operation(record, name="job", properties={"out": str(out)})


@pytest.mark.slow
def test_a_tick_missed_during_a_kill_9_fires_once_after_the_restart(tmp_path):
    out = tmp_path / "runs.txt"
    _define("hourly", out)
    db = f"sqlite:///{tmp_path / 'server.db'}"
    server = EventServerProcess(db).start()
    try:
        af.connect(server.url, timeout=30)
        schedule_id = af.add_workflow_schedule("hourly", interval=2)
        client = EventClient(server.url, deadline=60)
        wait_for(lambda: len(_started(client, "hourly")) >= 2, 60, "two scheduled runs before the crash")
        server.kill()  # kill -9, at whatever point of a tick it is
        killed_at = time.time()
        time.sleep(7)  # three or four ticks are missed
        restarting_at = time.time()  # a regular tick may come before start() returns: it has a later tick
        server = EventServerProcess(db, port=server.port).start()
        restarted_at = time.time()
        wait_for(lambda: any(run["tick"] > restarted_at for run in _started(client, "hourly")), 60,
                 "a regular tick after the restart")
        started = _started(client, "hourly")
        ticks = [run["tick"] for run in started]
        assert ticks == sorted(set(ticks)), f"a tick fired twice: {ticks}"
        # the ticks missed while it was down fire once, together, right after the restart (a run created
        # before the kill but announced only after the restart is not a catch-up: its tick fired in time;
        # a tick after the scheduler started is a regular one, even when it came before start() returned)
        with closing(MetadataStore(db)) as store:
            created = {run.id: run.created_at.timestamp() for run in store.list_workflow_runs("hourly")}
        caught_up = [run for run in started if created[run["run"]] > killed_at and run["tick"] < restarting_at]
        assert len(caught_up) == 1, f"missed ticks fired {len(caught_up)} times: {caught_up}"
        assert caught_up[0]["at"] - restarted_at < 5
        [listed] = af.list_workflow_schedules("hourly")
        assert listed["id"] == schedule_id
        # the schedule goes on ticking: its count and its runs agree between two ticks (read them together)
        wait_for(lambda: af.list_workflow_schedules("hourly")[0]["fired"] == len(_started(client, "hourly")), 30,
                 "the schedule's fired count to match its runs")
        wait_for(lambda: len(_lines(out)) >= len(started), 60, "every scheduled run's job")
        assert len(set(_lines(out))) == len(_lines(out)), "a scheduled run's job ran twice"
        client.close()
    finally:
        server.stop()


@pytest.mark.slow
def test_a_triggering_event_starts_exactly_one_run_across_a_kill_9(tmp_path):
    out = tmp_path / "runs.txt"
    _define("on_dataset", out)
    db = f"sqlite:///{tmp_path / 'server.db'}"
    server = EventServerProcess(db).start()
    try:
        af.connect(server.url, timeout=30)
        trigger_id = af.add_workflow_trigger("on_dataset", key="clicks", event_type="DATASET_UPDATED")
        client = EventClient(server.url, deadline=60)
        client.send_event(Event("clicks", "day-1", "DATASET_UPDATED"))
        wait_for(lambda: len(_started(client, "on_dataset")) == 1, 60, "the first triggered run")
        client.send_event(Event("clicks", "day-2", "DATASET_UPDATED"))
        server.kill()  # at once: the scheduler may or may not have handled day-2
        server = EventServerProcess(db, port=server.port).start()
        client.send_event(Event("clicks", "day-3", "DATASET_UPDATED"))
        wait_for(lambda: len(_started(client, "on_dataset")) >= 3, 60, "a run for each of the three events")
        af.list_workflow_triggers()  # answered after every event before it was decided: a duplicate shows now
        started = _started(client, "on_dataset")
        assert len(started) == 3 and {run["trigger"] for run in started} == {trigger_id}
        assert len({run["event"] for run in started}) == 3
        wait_for(lambda: len(_lines(out)) == 3, 60, "the three runs' jobs")
        [listed] = af.list_workflow_triggers("on_dataset")
        assert listed["fired"] == 3
        client.close()
    finally:
        server.stop()


class EveryThirdValidated(af.Condition):
    """Restart serving after three validated versions (the count is a value state)."""

    def is_met(self, event, context):
        count = context.get_state(af.ValueStateDescriptor("validated"))
        seen = (count.value() or 0) + 1
        count.update(seen % 3)
        return seen == 3


@pytest.mark.slow
def test_a_stateful_condition_keeps_its_count_across_a_kill_9(tmp_path):
    out = tmp_path / "runs.txt"
    _define("retrain_report", out)
    db = f"sqlite:///{tmp_path / 'server.db'}"
    server = EventServerProcess(db).start()
    try:
        af.connect(server.url, timeout=30)
        af.add_workflow_trigger("retrain_report", EveryThirdValidated(keys="ctr", event_type="MODEL_VALIDATED"))
        client = EventClient(server.url, deadline=60)
        for version in (1, 2):
            client.send_event(Event("ctr", str(version), "MODEL_VALIDATED"))
        af.list_workflow_triggers()  # answered after the two events were decided (and their state committed)
        server.kill()
        server = EventServerProcess(db, port=server.port).start()
        client.send_event(Event("ctr", "3", "MODEL_VALIDATED"))  # the third: fires only if the count survived
        wait_for(lambda: len(_started(client, "retrain_report")) == 1, 60, "the run after the third validation")
        for version in (4, 5):
            client.send_event(Event("ctr", str(version), "MODEL_VALIDATED"))
        af.list_workflow_triggers()  # answered after the two events were decided
        assert len(_started(client, "retrain_report")) == 1  # counting starts again after firing
        client.send_event(Event("ctr", "6", "MODEL_VALIDATED"))
        wait_for(lambda: len(_started(client, "retrain_report")) == 2, 60, "the run after the sixth validation")
        client.close()
    finally:
        server.stop()


@pytest.mark.slow
def test_the_schedule_cli_lists_pauses_resumes_and_deletes(tmp_path):
    out = tmp_path / "runs.txt"
    _define("cli_flow", out)
    server = EventServerProcess(f"sqlite:///{tmp_path / 'server.db'}").start()
    try:
        af.connect(server.url, timeout=30)
        af.submit("cli_flow").wait(60)  # `schedule add NAME` runs the workflow as last submitted

        def cli(*args: str) -> str:
            done = subprocess.run([sys.executable, "-m", "aiflow_notebook.cli", "schedule", *args, "--url", server.url],
                                  capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr
            return done.stdout

        def cli_trigger(*args: str) -> str:
            done = subprocess.run([sys.executable, "-m", "aiflow_notebook.cli", "trigger", *args, "--url", server.url],
                                  capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr
            return done.stdout

        added = json.loads(cli("add", "cli_flow", "--cron", "0 0 1 1 *", "--json"))
        schedule_id = added[0]["id"]
        assert "cron" in cli("list") and "cli_flow" in cli("list")
        assert json.loads(cli("pause", str(schedule_id), "--json"))[0]["paused"] is True
        assert json.loads(cli("resume", str(schedule_id), "--json"))[0]["paused"] is False
        cli("delete", str(schedule_id))
        assert "(none)" in cli("list")
        trigger_id = af.add_workflow_trigger("cli_flow", key="clicks")
        listed = json.loads(cli_trigger("list", "--json"))
        assert [t["id"] for t in listed] == [trigger_id] and "clicks" in listed[0]["condition"]
        cli_trigger("delete", str(trigger_id))
        assert "(none)" in cli_trigger("list")
        refused = subprocess.run([sys.executable, "-m", "aiflow_notebook.cli", "schedule", "add", "never_submitted",
                                  "--interval", "5", "--url", server.url], capture_output=True, text=True, timeout=60)
        assert refused.returncode == 1 and "never submitted" in refused.stderr
    finally:
        server.stop()


@pytest.mark.slow
def test_schedules_and_triggers_over_a_curve_server(tmp_path):
    """Under CURVE the scheduler's replies carry its authenticated name, which the client checks."""
    from aiflow_notebook.cli import main
    from aiflow_notebook.events.auth import create_server_keys

    keys = tmp_path / "keys"
    create_server_keys(keys)
    assert main(["server", "keys", str(keys), "--client", "alice"]) == 0
    out = tmp_path / "runs.txt"
    _define("secured", out)
    server = EventServerProcess(f"sqlite:///{tmp_path / 'server.db'}", extra_args=["--curve", str(keys)]).start()
    try:
        af.connect(server.url, auth=(str(keys / "server.key"), str(keys / "alice.key_secret")), timeout=30)
        schedule_id = af.add_workflow_schedule("secured", interval=1)
        wait_for(lambda: len(_lines(out)) >= 1, 60, "a scheduled run on the CURVE server")
        af.delete_workflow_schedule(schedule_id)
        trigger_id = af.add_workflow_trigger("secured", key="go")
        assert [t["id"] for t in af.list_workflow_triggers()] == [trigger_id]
    finally:
        server.stop()


@pytest.mark.slow
def test_a_periodic_job_carries_on_after_a_kill_9(tmp_path):
    out = tmp_path / "ticks.txt"
    with af.workflow("periodic_survivor"):
        with af.job_config("tick", periodic=1):
            af.user_define_operation(record, name="tick", properties={"out": str(out)})
    db = f"sqlite:///{tmp_path / 'server.db'}"
    server = EventServerProcess(db).start()
    try:
        af.connect(server.url, timeout=30)
        run = af.submit("periodic_survivor")
        wait_for(lambda: len(_lines(out)) >= 2, 60, "two ticks before the crash")
        server.kill()
        time.sleep(3)
        server = EventServerProcess(db, port=server.port).start()
        before = len(_lines(out))
        wait_for(lambda: len(_lines(out)) >= before + 2, 60, "two ticks after the restart")
        assert run.status() == "RUNNING"
        assert run.stop() == "KILLED"
        assert set(_lines(out)) == {str(run.run_id)}  # one run, its periodic job restarted at every tick
    finally:
        server.stop()
