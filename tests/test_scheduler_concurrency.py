"""Several live runs of one workflow: each run's job-status rules see only its own jobs' status events.

Every job here is a real process; each run's first job waits for a gate file named by its run id, so the
test decides which run's ``a`` finishes when, while all runs are live at once.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

import aiflow_notebook as af
from aiflow_notebook.core.vocabulary import JOB_STATUS_CHANGED
from aiflow_notebook.events import Event
from aiflow_notebook.testing.waiting import wait_for


def wait_for_gate(context):
    gate = Path(context.properties["gates"]) / os.environ["AIFLOW_RUN_ID"]
    af.wait_until(gate.exists, 120, f"gate {gate} to open", interval=0.05)


def note_start(context):
    with open(context.properties["log"], "a") as fh:
        fh.write(f"b {os.environ['AIFLOW_RUN_ID']}\n")


def _define(tmp_path: Path) -> tuple[Path, Path]:
    gates, log = tmp_path / "gates", tmp_path / "b_starts.txt"
    gates.mkdir()
    with af.workflow("twice"):
        with af.job_config("a"):
            af.user_define_operation(wait_for_gate, name="gate", properties={"gates": str(gates)})
        with af.job_config("b"):
            af.user_define_operation(note_start, name="note", properties={"log": str(log)})
        af.action_on_job_status("b", upstream="a")
    return gates, log


def _check_order(run) -> None:
    """In the run's own events: b started once, and only after its own a finished."""
    events = [(e.key, e.value) for e in run.job_events()]
    assert events.count(("twice.b", "STARTING")) == 1, events
    assert events.count(("twice.a", "STARTING")) == 1, events
    assert events.index(("twice.a", "FINISHED")) < events.index(("twice.b", "STARTING")), events
    assert {json.loads(e.context)["run"] for e in run.job_events()} == {run.run_id}


def test_two_live_runs_of_one_workflow_do_not_trigger_each_other(scheduler, tmp_path):
    gates, log = _define(tmp_path)
    workflow = af.compile("twice")
    first, second = scheduler.submit(workflow), scheduler.submit(workflow)
    wait_for(lambda: first.jobs()["a"] == "RUNNING" and second.jobs()["a"] == "RUNNING", what="both a jobs to run")

    # Someone else's claim that the second run's a finished starts nothing: the scheduler did not say so.
    scheduler.client.send_event(Event("twice.a", "FINISHED", JOB_STATUS_CHANGED, sender="mallory",
                                      context=json.dumps({"run": second.run_id})))
    (gates / str(first.run_id)).touch()
    assert first.wait(60) == "FINISHED"
    # The first run's "a FINISHED" was decided (and its b started and finished) before the run ended, so a
    # wrong start of the second run's b would already be on the bus.
    assert second.jobs() == {"a": "RUNNING", "b": "INIT"}

    (gates / str(second.run_id)).touch()
    assert second.wait(60) == "FINISHED"
    for run in (first, second):
        _check_order(run)
    assert sorted(log.read_text().split("\n")[:-1]) == sorted([f"b {first.run_id}", f"b {second.run_id}"])


@pytest.mark.slow
def test_ten_live_runs_of_one_workflow_each_run_in_their_own_order(scheduler, tmp_path):
    gates, log = _define(tmp_path)
    workflow = af.compile("twice")
    runs = [scheduler.submit(workflow) for _ in range(10)]
    wait_for(lambda: all(run.jobs()["a"] == "RUNNING" for run in runs), timeout=120, what="every a to run")
    order = random.Random(7).sample(runs, len(runs))
    for done, run in enumerate(order):
        (gates / str(run.run_id)).touch()
        assert run.wait(60) == "FINISHED"
        for waiting in order[done + 1:]:  # nobody else's b started
            assert waiting.jobs()["b"] == "INIT", (run.run_id, waiting.run_id, waiting.jobs())
    for run in runs:
        _check_order(run)
    assert sorted(log.read_text().split("\n")[:-1]) == sorted(f"b {run.run_id}" for run in runs)
