"""AI Flow's quickstart, ported: two live runs must not start each other's tasks (issue 13, bug 3 and item 7).

Original: flink-extended/ai-flow, ``samples/quickstart/quickstart_workflow.py``::

    def func():
        time.sleep(5)
        notification_client = AIFlowNotificationClient("localhost:50052")
        notification_client.send_event(key=EVENT_KEY, value='This is a custom message.')

    with Workflow(name='quickstart_workflow') as w1:
        task1 = BashOperator(name='task1', bash_command='echo I am the 1st task.')
        task2 = BashOperator(name='task2', bash_command='echo I am the 2nd task.')
        task3 = PythonOperator(name='task3', python_callable=func)
        task4 = BashOperator(name='task4', bash_command='echo I am the 4th task.')
        task3.start_after([task1, task2])
        task4.action_on_event_received(action=TaskAction.START, event_key=EVENT_KEY)

Here: ``af.action_on_job_status("task3", upstream=["task1", "task2"])`` is ``start_after([...])``, the event
is sent from inside task3 with ``EventClient.from_environment().send_event(key=..., value=...)`` (AI Flow's
``AIFlowNotificationClient`` also stamps the workflow execution into the event), and instead of sleeping
5 s each run's task3 waits for a gate file named by its run id, so the test decides when each run sends.
Real job processes, the embedded scheduler.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

import aiflow_notebook as af
from aiflow_notebook.testing.waiting import wait_for

EVENT_KEY = "key"

pytestmark = pytest.mark.slow


def echo(context):
    with open(context.properties["log"], "a") as fh:
        fh.write(f"{os.environ['AIFLOW_RUN_ID']} {context.job}\n")


def func(context):
    from aiflow_notebook.events import EventClient

    gate = Path(context.properties["gates"]) / os.environ["AIFLOW_RUN_ID"]
    deadline = time.monotonic() + 120
    while not gate.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {gate} never opened")
        time.sleep(0.05)
    client = EventClient.from_environment()
    client.send_event(key=EVENT_KEY, value="This is a custom message.")
    client.close()


def define(tmp_path: Path) -> tuple[Path, Path]:
    gates, log = tmp_path / "gates", tmp_path / "tasks.log"
    gates.mkdir()
    with af.workflow("quickstart_workflow"):
        for name in ("task1", "task2", "task4"):
            with af.job_config(name):
                af.user_define_operation(echo, name=f"{name}_op", properties={"log": str(log)})
        with af.job_config("task3"):
            af.user_define_operation(func, name="func", properties={"gates": str(gates)})
        af.action_on_job_status("task3", upstream=["task1", "task2"])
        af.action_on_event("task4", key=EVENT_KEY)
    return gates, log


def test_two_live_runs_of_the_quickstart_do_not_start_each_others_tasks(scheduler, tmp_path, monkeypatch):
    monkeypatch.delenv("AIFLOW_RUN_ID", raising=False)
    gates, log = define(tmp_path)
    workflow = af.compile("quickstart_workflow")
    first, second = scheduler.submit(workflow), scheduler.submit(workflow)
    wait_for(lambda: first.jobs()["task3"] == "RUNNING" and second.jobs()["task3"] == "RUNNING",
             timeout=120, what="task3 of both runs (after task1 and task2)")

    (gates / str(first.run_id)).touch()
    assert first.wait(120) == "FINISHED"
    # The first run's event was decided (its task4 started and finished) before the run ended: a task4 of
    # the second run started by it would already be on the bus.
    assert second.jobs()["task4"] == "INIT"

    (gates / str(second.run_id)).touch()
    assert second.wait(120) == "FINISHED"
    for run in (first, second):
        starts = [e.key for e in run.job_events() if e.value == "STARTING"]
        assert sorted(starts) == [f"quickstart_workflow.task{i}" for i in (1, 2, 3, 4)], starts
        events = [(e.key, e.value) for e in run.job_events()]
        starting3 = events.index(("quickstart_workflow.task3", "STARTING"))
        assert events.index(("quickstart_workflow.task1", "FINISHED")) < starting3
        assert events.index(("quickstart_workflow.task2", "FINISHED")) < starting3
    ran = sorted(log.read_text().splitlines())
    assert ran == sorted(f"{run.run_id} task{i}" for run in (first, second) for i in (1, 2, 4))

    # each event a job sent names its run
    sent = scheduler.client.list_events(key=EVENT_KEY)
    assert sorted(json.loads(e.context)["run"] for e in sent) == sorted([first.run_id, second.run_id])
