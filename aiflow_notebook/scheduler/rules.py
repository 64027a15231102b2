"""Scheduling rules: when does an event make a control edge fire (AI Flow's semantics).

A rule is a control edge in its plain form (``ControlEdge.to_dict()``): the job, the action and a
condition ``{"mode": "ALL" | "ANY", "events": [event condition, ...]}``. Its state is, per event
condition, the version of the event that met it (or None). The state is plain JSON so the scheduler can
commit it together with the version of the last event it handled — the basis of exactly-once.

- An event *matches* a condition when key, event type, namespace and sender match (``"*"`` matches
  anything) and, for ``value_condition == "EQUALS"``, the value matches too; ``"UPDATED"`` accepts any
  value (every new event on the key is an update).
- ``ALL`` fires when every condition is met, ``ANY`` when one is — and only on an event that met one of
  its conditions, so a long-met REPEATED condition does not fire again on unrelated events.
- After firing, conditions with ``life == "ONCE"`` are consumed (reset); ``"REPEATED"`` ones stay met.
- Events are handled in version order; an event older than the one that met a condition does not
  replace it (out-of-order delivery cannot move a condition backwards).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from aiflow_notebook.core.vocabulary import WILDCARD as ANY
from aiflow_notebook.core.vocabulary import matches as _same
from aiflow_notebook.sdk.conditions import CUSTOM


class EventLike(Protocol):
    key: str
    value: str
    event_type: str
    namespace: str
    sender: str | None
    version: int


@dataclass
class Rule:
    """One control edge of one workflow run, with its evaluation state."""

    job: str
    action: str
    mode: str
    conditions: list[dict[str, str]]
    met: list[int | None]

    @classmethod
    def from_edge(cls, edge: dict[str, Any], state: list[int | None] | None = None) -> Rule:
        if edge["condition"]["mode"] == CUSTOM:  # user code decides (scheduler.custom_rules)
            from aiflow_notebook.scheduler.custom_rules import CustomRule

            return CustomRule.from_edge(edge, state)  # type: ignore[return-value]
        conditions = [dict(c) for c in edge["condition"]["events"]]
        met = list(state) if state is not None else [None] * len(conditions)
        return cls(job=edge["job"], action=edge["action"], mode=edge["condition"]["mode"],
                   conditions=conditions, met=met)

    def on_event(self, event: EventLike) -> bool:
        """Update the state with ``event``; True when the rule fires (its ONCE conditions are consumed)."""
        touched = False
        for index, condition in enumerate(self.conditions):
            if matches(condition, event) and (self.met[index] is None or event.version > self.met[index]):
                self.met[index] = event.version
                touched = True
        if not touched:
            return False
        done = [m is not None for m in self.met]
        fired = all(done) if self.mode == "ALL" else any(done)
        if fired:
            for index, condition in enumerate(self.conditions):
                if condition.get("life", "ONCE") == "ONCE":
                    self.met[index] = None
        return fired

    def keys(self) -> set[str]:
        return {c["key"] for c in self.conditions}


def matches(condition: dict[str, str], event: EventLike) -> bool:
    """Does ``event`` meet ``condition`` (ignoring life)?"""
    if not _same(condition.get("key", ANY), event.key):
        return False
    if not _same(condition.get("event_type", ANY), event.event_type):
        return False
    if not _same(condition.get("namespace", ANY), event.namespace):
        return False
    if not _same(condition.get("sender", ANY), event.sender or ""):
        return False
    if condition.get("value_condition", "EQUALS") == "UPDATED":
        return True
    return _same(condition.get("value", ANY), event.value)

