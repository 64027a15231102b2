"""AI Flow's own samples for periodic tasks, workflow schedules, event-triggered workflows and custom
conditions, ported to our API (issue 13). Each test cites its original in flink-extended/ai-flow (the
``samples/`` directory); the changes are the API's names, seconds instead of minutes so the test is quick,
and bounded loops where the original runs forever.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

import aiflow_notebook as af
from aiflow_notebook.core.vocabulary import RUN_STATUS_CHANGED
from aiflow_notebook.events import Event, EventClient
from aiflow_notebook.testing.waiting import wait_for


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.slow
def test_periodic_task_sample(tmp_path):
    """samples/periodic/periodic_task.py: ``periodic_expression='cron@*/1 * * * *'`` on task_1 and
    ``'interval@0 0 1 0'`` on task_3; task_2 / task_4 start after them. Here every 2 s (croniter's sixth
    field is seconds) and every 2 s."""
    out = tmp_path / "tasks.txt"
    with af.workflow("periodic_task_example"):
        with af.job_config("task_1", engine="bash", periodic="cron@* * * * * */2",
                           properties={"command": f"echo I am the 1st task >> {out}"}):
            pass
        with af.job_config("task_2", engine="bash", properties={"command": f"echo I am the 2nd task >> {out}"}):
            pass
        af.action_on_job_status("task_2", upstream="task_1")
        with af.job_config("task_3", engine="bash", periodic="interval@0 0 0 2",
                           properties={"command": f"echo I am the 3rd task >> {out}"}):
            pass
        with af.job_config("task_4", engine="bash", properties={"command": f"echo I am the 4th task >> {out}"}):
            pass
        af.action_on_job_status("task_4", upstream="task_3")
    run = af.submit("periodic_task_example")
    wait_for(lambda: all(_lines(out).count(f"I am the {n} task") >= 2 for n in ("1st", "2nd", "3rd", "4th")), 90,
             "every task to run twice")
    assert run.status() == "RUNNING"
    assert run.stop() == "KILLED"
    lines = _lines(out)
    assert lines.count("I am the 2nd task") <= lines.count("I am the 1st task")  # one task_2 per task_1 at most
    assert lines.count("I am the 4th task") <= lines.count("I am the 3rd task")


@pytest.mark.slow
def test_periodic_workflow_sample(tmp_path):
    """samples/periodic/periodic_workflow.py: two workflows bound to schedules, one by cron, one by interval
    (``ops.add_workflow_schedule(expression=..., workflow_name=...)`` unless ``list_workflow_schedules``
    already has one). Here every 2 s instead of every minute."""
    outs = {name: tmp_path / f"{name}.txt" for name in ("periodic_workflow_by_cron", "periodic_workflow_by_interval")}
    for name, out in outs.items():
        with af.workflow(name):
            with af.job_config("task", engine="bash", properties={"command": f"echo Hello World! >> {out}"}):
                pass
    expressions = {"periodic_workflow_by_cron": "cron@* * * * * */2",
                   "periodic_workflow_by_interval": "interval@0 0 0 2"}
    for name, expression in expressions.items():
        if not af.list_workflow_schedules(name):
            af.add_workflow_schedule(name, expression=expression)
    for name in expressions:  # as the sample does on a second run: nothing is added twice
        if not af.list_workflow_schedules(name):
            af.add_workflow_schedule(name, expression=expressions[name])
    assert len(af.list_workflow_schedules()) == 2
    wait_for(lambda: all(len(_lines(out)) >= 2 for out in outs.values()), 90, "both workflows to run twice")
    for schedule in af.list_workflow_schedules():
        af.delete_workflow_schedule(schedule["id"])


def send_event():
    """The sample's event_task: tell the world (here, the bus of the scheduler that runs this job)."""
    with EventClient.from_environment() as client:
        client.send_event(Event(key="trigger_workflow", value="ready"))


@pytest.mark.slow
def test_event_trigger_workflow_sample(tmp_path):
    """samples/event_trigger_workflow/event_trigger_workflow.py: workflow 1's task sends an event; a
    ``WorkflowRule(SingleEventCondition(expect_event_key="trigger_workflow"))`` trigger starts workflow 2."""
    out = tmp_path / "w2.txt"
    with af.workflow("event_trigger_workflow_1"):
        with af.job_config("event_task"):
            af.user_define_operation(send_event, name="event_task")
    with af.workflow("event_trigger_workflow_2"):
        with af.job_config("task1", engine="bash", properties={"command": f"echo I am 1st task. >> {out}"}):
            pass
    af.add_workflow_trigger("event_trigger_workflow_2", key="trigger_workflow")
    assert af.submit("event_trigger_workflow_1").wait(60) == "FINISHED"
    wait_for(lambda: _lines(out) == ["I am 1st task."], 60, "workflow 2 to run")
    client = EventClient.from_environment()
    runs = [e for e in client.list_events(key="event_trigger_workflow_2", event_type=RUN_STATUS_CHANGED)]
    wait_for(lambda: any(e.value == "FINISHED" for e in
                         client.list_events(key="event_trigger_workflow_2", event_type=RUN_STATUS_CHANGED)), 60,
             "workflow 2's run to finish")
    assert [e.value for e in runs][:1] == ["RUNNING"]
    assert len([e for e in client.list_events(key="event_trigger_workflow_2", event_type=RUN_STATUS_CHANGED)
                if e.value == "RUNNING"]) == 1


class NumCondition(af.Condition):
    """The sample's condition: met once the numbers on ``num_event`` add up to 100 (once). The sample keeps
    a ``Consumer`` object in the value state; ours keeps the same fields as JSON."""

    def is_met(self, event, context):
        state = context.get_state(af.ValueStateDescriptor(name="consumer"))
        con = state.value() or {"is_consumed": False, "accumulator": 0}
        con["accumulator"] += int(event.value)
        if con["accumulator"] >= 100 and not con["is_consumed"]:
            con["is_consumed"] = True
            state.update(con)
            return True
        state.update(con)
        return False


def random_produce():
    """Send random numbers until stopped (the sample sleeps 1 s between them; 50 ms here)."""
    with EventClient.from_environment() as client:
        for _ in range(10_000):
            client.send_event(Event(key="num_event", value=str(random.randint(0, 9))))
            time.sleep(0.05)


@pytest.mark.slow
def test_custom_condition_sample(tmp_path):
    """samples/custom_condition/custom_condition_example.py: three producers send numbers; the consumer
    starts once 100 have been produced (a custom condition with a value state); the producers stop when
    the consumer has succeeded."""
    out = tmp_path / "consumer.txt"
    with af.workflow("condition_workflow"):
        for n in (1, 2, 3):
            with af.job_config(f"producer_{n}"):
                af.user_define_operation(random_produce, name=f"producer_{n}")
        with af.job_config("consumer", engine="bash", properties={"command": f"echo Got 100 records. >> {out}"}):
            pass
        af.action_on_condition("consumer", NumCondition(expect_event_keys=["num_event"]), action="START")
        for n in (1, 2, 3):
            af.action_on_job_status(f"producer_{n}", upstream="consumer", status="FINISHED", action="STOP")
    run = af.submit("condition_workflow")
    assert run.wait(120) == "FINISHED"
    assert run.jobs() == {"producer_1": "KILLED", "producer_2": "KILLED", "producer_3": "KILLED",
                          "consumer": "FINISHED"}
    assert _lines(out) == ["Got 100 records."]
    produced = [int(e.value) for e in EventClient.from_environment().list_events(key="num_event")]
    assert sum(produced) >= 100
