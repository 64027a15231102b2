"""Workflow schedules, periodic jobs, workflow triggers and custom conditions with state (issue 13, items 4-6),
through the public API on the embedded scheduler; the kill -9 tests are in test_schedules_recovery.py."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import aiflow_notebook as af
from aiflow_notebook.core.timing import Timing
from aiflow_notebook.core.vocabulary import JOB_STATUS_CHANGED, RUN_STATUS_CHANGED
from aiflow_notebook.events import Event, EventClient
from aiflow_notebook.scheduler.rules import CustomRule, bind
from aiflow_notebook.testing.waiting import wait_for

# --- timing ---------------------------------------------------------------------------------------------


def test_cron_interval_and_ai_flow_expressions_give_the_next_tick():
    noon = datetime(2026, 12, 3, 12, 0, 30, tzinfo=UTC).timestamp()
    assert Timing.parse(cron="*/5 * * * *").next_after(noon, noon) == \
        datetime(2026, 12, 3, 12, 5, tzinfo=UTC).timestamp()
    assert Timing.parse(expression="cron@0 * * * *").next_after(noon, noon) == \
        datetime(2026, 12, 3, 13, 0, tzinfo=UTC).timestamp()
    assert Timing.parse(expression="interval@0 0 1 0") == Timing(interval=60.0)  # AI Flow: days hours minutes seconds
    assert Timing.parse(interval=timedelta(minutes=2)) == Timing(interval=120.0)
    every_10 = Timing.parse(interval=10)
    assert every_10.next_after(1000.0, anchor=995.0) == 1005.0  # keeps the anchor's phase
    assert every_10.next_after(1005.0, anchor=995.0) == 1015.0  # strictly after
    assert every_10.next_after(990.0, anchor=995.0) == 995.0
    assert Timing.coerce("*/2 * * * *") == Timing(cron="*/2 * * * *")
    assert Timing.coerce({"interval": 3}) == Timing(interval=3.0)


@pytest.mark.parametrize("kwargs, message", [
    ({"cron": "every monday"}, "cron expression 'every monday' is not valid"),
    ({"interval": 0}, "must be at least"),
    ({"interval": "soon"}, "must be at least"),
    ({"expression": "weekly@1"}, "must be 'cron@"),
    ({}, "exactly one of"),
    ({"cron": "* * * * *", "interval": 5}, "exactly one of"),
])
def test_a_bad_schedule_is_refused_with_a_clear_error(kwargs, message):
    with pytest.raises(af.InvalidArgumentError, match=message):
        Timing.parse(**kwargs)
    with pytest.raises(af.InvalidArgumentError, match=message):
        af.add_workflow_schedule("anything", **kwargs)  # refused before anything is sent


def test_a_bad_periodic_job_is_refused_where_it_is_declared():
    with af.workflow("bad_periodic"), pytest.raises(af.InvalidArgumentError, match=r"job_config\('j'"):
        af.job_config("j", periodic="cron@not a cron")


# --- custom conditions, in isolation -------------------------------------------------------------------


class EveryThird(af.Condition):
    """Met on every third matching event (its count is a value state)."""

    def is_met(self, event, context):
        count = context.get_state(af.ValueStateDescriptor("count"))
        seen = (count.value() or 0) + 1
        count.update(seen % 3)
        return seen == 3


def _rule(condition: af.Condition) -> CustomRule:
    edge = {"job": "serve", "action": "RESTART", "condition": condition.to_dict()}
    rule = CustomRule.from_edge(edge)
    bind([rule], [edge])
    return rule


def _event(key: str, value: str, version: int, event_type: str = "MODEL_VALIDATED") -> Event:
    event = Event(key=key, value=value, event_type=event_type)
    event.version = version
    return event


def test_a_custom_condition_keeps_its_state_as_json_and_only_sees_its_events():
    rule = _rule(EveryThird(keys="ctr", event_type="MODEL_VALIDATED"))
    fired = [rule.on_event(_event("ctr", "v", 1)), rule.on_event(_event("other", "v", 2)),
             rule.on_event(_event("ctr", "v", 3, "MODEL_GENERATED")), rule.on_event(_event("ctr", "v", 4)),
             rule.on_event(_event("ctr", "v", 5))]
    assert fired == [False, False, False, False, True]
    assert rule.met == [{"count": 0}]
    assert json.loads(json.dumps(rule.met)) == rule.met  # committed as plain JSON with the rule state


def test_a_custom_rule_evaluated_on_a_copy_leaves_the_committed_state_alone():
    import dataclasses

    rule = _rule(EveryThird(keys="ctr"))
    rule.on_event(_event("ctr", "v", 1))
    trial = dataclasses.replace(rule, met=list(rule.met))  # what the scheduler does before committing
    trial.on_event(_event("ctr", "v", 2))
    assert rule.met == [{"count": 1}] and trial.met == [{"count": 2}]


def test_a_custom_condition_whose_state_is_not_json_is_an_error_that_says_so():
    class Bad(af.Condition):
        def is_met(self, event, context):
            context.get_state("x").update({1, 2})
            return True

    rule = _rule(Bad(keys="k"))
    assert rule.on_event(_event("k", "v", 1)) is False  # a failing condition is not met, and changes nothing
    assert rule.met == [{}]
    with pytest.raises(af.InvalidArgumentError, match="is not JSON"):
        af.ConditionContext({}).get_state("x").update({1, 2})


def test_an_unbound_custom_rule_refuses_to_run_code_it_did_not_verify():
    edge = {"job": "j", "action": "START", "condition": EveryThird(keys="k").to_dict()}
    with pytest.raises(RuntimeError, match="verified"):
        CustomRule.from_edge(edge).on_event(_event("k", "v", 1))


def test_a_workflow_with_a_custom_condition_round_trips_without_unpickling_and_hashes_stably():
    def define():
        af.workflow("custom_edges")
        with af.job_config("serve"):
            af.user_define_operation(_noop, name="serve")
        af.action_on_condition("serve", EveryThird(keys="ctr"), action="RESTART")
        return af.compile("custom_edges")

    first = define()
    again = af.Workflow.from_bytes(first.to_bytes())
    assert again.control_edges[0].label == "EveryThird → RESTART"
    assert again.content_hash == first.content_hash
    with pytest.raises(af.InvalidArgumentError, match="does not implement is_met"):
        af.action_on_condition("serve", af.Condition(keys="x"))


def _noop(context=None):
    return None


# --- end to end on the embedded scheduler --------------------------------------------------------------


def record(context):
    """Append this job's run id to the file the test reads."""
    with Path(context.properties["out"]).open("a") as out:
        out.write(f"{os.environ['AIFLOW_RUN_ID']} {time.time()}\n")


def _runs_started(client: EventClient, workflow: str) -> list[dict]:
    return [json.loads(e.context) for e in client.list_events(key=workflow, event_type=RUN_STATUS_CHANGED)
            if e.value == "RUNNING"]


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _barrier() -> None:
    """Return once the scheduler has decided every event sent before this call: it answers a schedule
    command only after the events before it, and announces the runs and jobs they started before that."""
    af.list_workflow_triggers()


def _clock_checked_after(moment: float) -> None:
    """Return once the scheduler's clock has fired what was due at ``moment`` (seconds since the epoch): the
    moment passes, then two commands — the second is answered only after the loop finished the batch of the
    first, which ends with firing what is due (and announcing what that started)."""
    wait_for(lambda: time.time() > moment, max(0.0, moment - time.time()) + 10, "the moment to pass")
    _barrier()
    _barrier()


@pytest.mark.slow
def test_a_workflow_schedule_fires_and_can_be_paused_resumed_listed_and_deleted(tmp_path):
    out = tmp_path / "ticks.txt"
    with af.workflow("every_second"):
        with af.job_config("tick"):
            af.user_define_operation(record, name="tick", properties={"out": str(out)})
    schedule_id = af.add_workflow_schedule("every_second", interval=1)
    client = EventClient.from_environment()
    [listed] = af.list_workflow_schedules("every_second")
    assert listed["id"] == schedule_id and listed["timing"] == {"interval": 1.0} and not listed["paused"]
    assert af.list_workflow_schedules("another") == []

    wait_for(lambda: len(_lines(out)) >= 2, 60, "two scheduled runs to record")
    paused = af.pause_workflow_schedule(schedule_id)
    assert paused["paused"] is True
    paused_at = len(_runs_started(client, "every_second"))  # a run fired before the pause was announced before
    _clock_checked_after(max(paused["next_tick"], time.time()) + 1)  # two of its ticks are past
    assert len(_runs_started(client, "every_second")) == paused_at, "a paused schedule fired"

    af.resume_workflow_schedule(schedule_id)
    wait_for(lambda: len(_runs_started(client, "every_second")) >= paused_at + 2, 30, "the resumed schedule to fire")
    deleted = af.delete_workflow_schedule(schedule_id)
    assert deleted["id"] == schedule_id
    after_delete = len(_runs_started(client, "every_second"))
    _clock_checked_after(max(deleted["next_tick"], time.time()) + 1)  # two of its ticks are past
    assert len(_runs_started(client, "every_second")) == after_delete
    assert af.list_workflow_schedules() == []
    with pytest.raises(af.AIFlowError, match="no workflow schedule"):
        af.pause_workflow_schedule(schedule_id)
    with pytest.raises(af.AIFlowError, match="never submitted to this scheduler"):
        af.add_workflow_schedule("not_defined_anywhere", interval=5)
    with pytest.raises(af.InvalidArgumentError, match="condition must be"):
        af.add_workflow_trigger("every_second", "clicks")

    started = _runs_started(client, "every_second")
    assert all(run["schedule"] == schedule_id for run in started)
    ticks = [run["tick"] for run in started]
    assert ticks == sorted(set(ticks)), "a tick fired twice"
    wait_for(lambda: len(_lines(out)) == len(started), 30, "every scheduled run's job to record")
    assert len({line.split()[0] for line in _lines(out)}) == len(started)  # one job run per run


def record_trigger(context):
    """Append the value of the event that started this job's run."""
    with Path(context.properties["out"]).open("a") as out:
        out.write(f"{context.trigger['value']}\n")


@pytest.mark.slow
def test_a_trigger_starts_one_run_per_triggering_event_and_can_be_deleted(tmp_path):
    out = tmp_path / "runs.txt"
    with af.workflow("on_data"):
        with af.job_config("use"):
            af.user_define_operation(record_trigger, name="use", properties={"out": str(out)})
    trigger_id = af.add_workflow_trigger("on_data", key="clicks", event_type="DATASET_UPDATED")
    [listed] = af.list_workflow_triggers()
    assert listed["id"] == trigger_id and listed["workflow"] == "on_data"
    client = EventClient.from_environment()
    client.send_event(Event("clicks", "v1", "DATASET_UPDATED"))
    client.send_event(Event("clicks", "v1", "OTHER_TYPE"))
    client.send_event(Event("views", "v1", "DATASET_UPDATED"))
    client.send_event(Event("clicks", "v2", "DATASET_UPDATED"))
    wait_for(lambda: len(_lines(out)) == 2, 60, "two triggered runs to record")
    assert sorted(_lines(out)) == ["v1", "v2"]  # each run's job got its triggering event
    started = _runs_started(client, "on_data")
    assert [run["trigger"] for run in started] == [trigger_id, trigger_id]
    assert len({run["event"] for run in started}) == 2

    af.delete_workflow_trigger(trigger_id)
    assert af.list_workflow_triggers() == []
    client.send_event(Event("clicks", "v3", "DATASET_UPDATED"))
    _barrier()
    assert len(_runs_started(client, "on_data")) == 2


class BeatsBestAuc(af.Condition):
    """Only if the new AUC beats the best seen so far (the best is a value state)."""

    def is_met(self, event, context):
        best = context.get_state("best_auc")
        auc = float(event.value)
        if best.value() is not None and auc <= best.value():
            return False
        best.update(auc)
        return True


def serve_until_stopped():
    while True:
        time.sleep(0.1)


def deploy(context):
    trigger = context.trigger or {}
    with Path(context.properties["out"]).open("a") as out:
        out.write(f"{trigger.get('value')}\n")


@pytest.mark.slow
def test_a_control_edge_with_a_stateful_condition_deploys_only_a_better_auc(tmp_path):
    out = tmp_path / "deployed.txt"
    with af.workflow("auc_gate"):
        with af.job_config("serve"):  # keeps the run alive (a run whose every job has run is over)
            af.user_define_operation(serve_until_stopped, name="serve")
        with af.job_config("deploy"):
            af.user_define_operation(deploy, name="deploy", properties={"out": str(out)})
        af.action_on_condition("deploy", BeatsBestAuc(keys="auc", event_type="AUC_MEASURED"), action="START")
    run = af.submit("auc_gate")
    client = EventClient.from_environment()
    for auc in ("0.70", "0.65", "0.81", "0.80", "0.90"):
        before = len(run.job_events())
        client.send_event(Event("auc", auc, "AUC_MEASURED"))
        if auc in ("0.70", "0.81", "0.90"):
            wait_for(lambda before=before: any(e.value == "FINISHED" for e in run.job_events()[before:]), 60,
                     f"deploy for AUC {auc}")
        else:
            _barrier()
            assert run.job_events()[before:] == [], f"AUC {auc} started deploy"
    assert _lines(out) == ["0.70", "0.81", "0.90"]
    run.stop()


def _starts(client: EventClient, key: str) -> int:
    return sum(e.value == "STARTING" for e in client.list_events(key=key, event_type=JOB_STATUS_CHANGED))


def tick_job(context):
    with Path(context.properties["out"]).open("a") as out:
        out.write(f"{context.job_run_id if hasattr(context, 'job_run_id') else os.environ['AIFLOW_JOB_RUN_ID']}\n")


@pytest.mark.slow
def test_a_periodic_job_reruns_while_its_run_lives_and_stops_with_it(tmp_path):
    out = tmp_path / "periodic.txt"
    with af.workflow("periodic_job"):
        with af.job_config("tick", periodic=1):
            af.user_define_operation(tick_job, name="tick", properties={"out": str(out)})
    run = af.submit("periodic_job")
    client = EventClient.from_environment()
    wait_for(lambda: len(_lines(out)) >= 3, 60, "three periodic runs of the job")
    assert run.status() == "RUNNING"  # a run with a periodic job lives until stopped
    assert run.stop() == "KILLED"  # its job's processes are gone
    stopped_at, starts = len(_lines(out)), _starts(client, "periodic_job.tick")
    _clock_checked_after(time.time() + 1.5)  # the job's next tick is past
    assert _starts(client, "periodic_job.tick") == starts, "a periodic job started after its run was stopped"
    assert len(_lines(out)) == stopped_at
    assert len(set(_lines(out))) == len(_lines(out))  # each tick a new job run


# --- the durable state, on SQLite and PostgreSQL ---------------------------------------------------------


def test_a_tick_commits_its_run_once_and_a_trigger_commits_with_the_cursor(meta_url):
    from aiflow_notebook.meta.store import MetadataStore
    from aiflow_notebook.scheduler.schedule_state import NewRun, ScheduleState
    from aiflow_notebook.scheduler.state import SchedulerState

    store = MetadataStore(meta_url)
    try:
        cursor = SchedulerState(store)
        state = ScheduleState(cursor)
        snapshot = store.save_workflow_snapshot("nightly", "hash", b"{}")
        tick = 1_764_000_000.123456
        schedule_id = state.add_schedule(5, "nightly", "default", "file:///blob", snapshot, {"interval": 60.0},
                                         tick - 60, tick, "alice", None)
        assert cursor.last_version() == 5  # the command's event, in the same transaction
        run = NewRun(snapshot, [], ["job"], 5, {"schedule": schedule_id})
        first = state.fire_schedule(schedule_id, tick, tick + 60, run)
        assert first is not None
        assert state.fire_schedule(schedule_id, tick, tick + 60, run) is None  # the same tick never fires twice
        [row] = state.schedules()
        assert (row.next_tick, row.fired, row.last_run_id) == (tick + 60, 1, first)
        assert [a.job for a in cursor.pending_actions(first)] == ["job"]
        assert state.set_paused(6, schedule_id, True, row.next_tick)
        assert state.fire_schedule(schedule_id, tick + 60, tick + 120, run) is None  # paused

        trigger_id = state.add_trigger(7, "nightly", "default", "file:///blob", snapshot, "file:///cond", [None],
                                       None, None)
        created: list = []
        cursor.commit_event(9, [], [], also=state.trigger_work({trigger_id: [None]}, [(trigger_id, run)], created))
        assert cursor.last_version() == 9 and len(created) == 1
        [trigger] = state.triggers()
        assert (trigger.fired, trigger.last_run_id, trigger.since_version) == (1, created[0][1], 7)
        assert state.delete_trigger(10, trigger_id) and state.triggers() == []
        assert state.delete_schedule(11, schedule_id) and state.schedules() == []
        assert cursor.last_version() == 11
    finally:
        store.close()
