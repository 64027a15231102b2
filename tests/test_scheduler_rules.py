"""Rule evaluation (pure): matching, MeetAll/MeetAny, ONCE/REPEATED, EQUALS/UPDATED, out-of-order events."""

from __future__ import annotations

import json
from dataclasses import dataclass

from aiflow_notebook.scheduler.rules import Rule, matches


@dataclass
class Ev:
    key: str
    value: str
    version: int
    event_type: str = "JOB_STATUS_CHANGED"
    namespace: str = "default"
    sender: str | None = "scheduler"


def cond(key, value="*", event_type="*", namespace="default", sender="*", value_condition="EQUALS", life="ONCE"):
    return {"key": key, "value": value, "event_type": event_type, "namespace": namespace, "sender": sender,
            "value_condition": value_condition, "life": life}


def rule(*conditions, mode="ALL", job="train", action="START"):
    return Rule.from_edge({"job": job, "action": action, "condition": {"mode": mode, "events": list(conditions)}})


def test_matching_fields_and_wildcards():
    c = cond("wf.prep", "FINISHED", event_type="JOB_STATUS_CHANGED")
    assert matches(c, Ev("wf.prep", "FINISHED", 1))
    assert not matches(c, Ev("wf.prep", "FAILED", 1))
    assert not matches(c, Ev("wf.other", "FINISHED", 1))
    assert not matches(c, Ev("wf.prep", "FINISHED", 1, event_type="X"))
    assert not matches(c, Ev("wf.prep", "FINISHED", 1, namespace="ns2"))
    assert matches(cond("*", "*", namespace="*"), Ev("anything", "v", 1, namespace="n"))
    assert not matches(cond("k", sender="alice"), Ev("k", "v", 1, sender="bob"))
    assert matches(cond("k", "old", value_condition="UPDATED"), Ev("k", "new", 1))


def test_meet_all_needs_every_condition_and_once_consumes_them():
    r = rule(cond("a", "1"), cond("b", "1"))
    assert not r.on_event(Ev("a", "1", 1))
    assert not r.on_event(Ev("x", "1", 2))
    assert r.on_event(Ev("b", "1", 3))
    assert r.met == [None, None]  # ONCE: consumed
    assert not r.on_event(Ev("b", "1", 4))  # needs a new "a" too
    assert r.on_event(Ev("a", "1", 5))


def test_repeated_conditions_stay_met_but_do_not_fire_on_unrelated_events():
    r = rule(cond("model", value_condition="UPDATED", life="REPEATED"), cond("tick", life="ONCE"))
    assert not r.on_event(Ev("model", "v1", 1))
    assert r.on_event(Ev("tick", "t", 2))
    assert r.met == [1, None]
    assert not r.on_event(Ev("unrelated", "x", 3))
    assert r.on_event(Ev("tick", "t", 4))  # model still met (REPEATED)


def test_meet_any_fires_on_each_matching_event():
    r = rule(cond("a"), cond("b"), mode="ANY")
    assert r.on_event(Ev("a", "1", 1))
    assert r.on_event(Ev("b", "1", 2))
    assert not r.on_event(Ev("c", "1", 3))


def test_equals_ignores_other_values():
    r = rule(cond("wf.prep", "FINISHED"))
    assert not r.on_event(Ev("wf.prep", "RUNNING", 1))
    assert not r.on_event(Ev("wf.prep", "FAILED", 2))
    assert r.on_event(Ev("wf.prep", "FINISHED", 3))


def test_an_older_event_does_not_move_a_condition_backwards():
    r = rule(cond("a", life="REPEATED"), cond("b"))
    r.on_event(Ev("a", "x", 10))
    assert r.met[0] == 10
    r.on_event(Ev("a", "x", 7))  # late delivery of an older event
    assert r.met[0] == 10


def test_state_round_trips_through_json():
    edge = {"job": "serve", "action": "RESTART", "condition": {"mode": "ALL", "events": [cond("a"), cond("b")]}}
    r = Rule.from_edge(edge)
    r.on_event(Ev("a", "1", 1))
    restored = Rule.from_edge(edge, json.loads(json.dumps(r.met)))
    assert restored.on_event(Ev("b", "1", 2)) and restored.action == "RESTART"
