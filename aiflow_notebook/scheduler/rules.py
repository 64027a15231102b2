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

A custom condition (``af.Condition``, mode ``CUSTOM``) is user code: its filters pick the events and its
``is_met`` decides. A :class:`CustomRule` behaves like a :class:`Rule` for the scheduler — ``on_event``
says whether it fires — and its ``met`` is plain JSON too: ``[value states]``, the condition's
:class:`~aiflow_notebook.sdk.conditions.ValueState` values by name. ``on_event`` never changes ``met`` in
place (it replaces the list), so the scheduler's evaluate-on-a-copy keeps the committed state intact until
the commit succeeds. The condition object is unpickled by :func:`bind` only from a payload the caller read
from its own verified blob store; an unbound rule refuses to evaluate.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiflow_notebook.core.vocabulary import WILDCARD as ANY
from aiflow_notebook.core.vocabulary import matches as _same
from aiflow_notebook.sdk.conditions import (
    CUSTOM,
    EQUALS,
    ONCE,
    UPDATED,
    ConditionContext,
    MeetAll,
    load_condition,
)

log = logging.getLogger(__name__)


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
        if edge["condition"]["mode"] == CUSTOM:  # user code decides
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
        fired = all(done) if self.mode == MeetAll.mode else any(done)
        if fired:
            for index, condition in enumerate(self.conditions):
                if condition.get("life", ONCE) == ONCE:
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
    if condition.get("value_condition", EQUALS) == UPDATED:
        return True
    return _same(condition.get("value", ANY), event.value)



@dataclass
class CustomRule:
    """A control edge whose condition is user code (``af.Condition``), with its value states."""

    job: str
    action: str
    mode: str
    conditions: list[dict[str, str]]  # the event filters
    met: list[dict[str, Any]]  # [value states]
    name: str = "Condition"
    condition: Any = field(default=None, compare=False, repr=False)  # the unpickled af.Condition, once bound

    @classmethod
    def from_edge(cls, edge: dict[str, Any], state: list | None = None) -> CustomRule:
        data = edge["condition"]
        return cls(job=edge["job"], action=edge["action"], mode=data["mode"],
                   conditions=[dict(c) for c in data["events"]], met=list(state) if state else [{}],
                   name=data.get("name", "Condition"))

    def on_event(self, event: EventLike) -> bool:
        """Ask the condition about ``event`` if a filter matches; its state changes are kept in ``met``."""
        if not any(matches(condition, event) for condition in self.conditions):
            return False
        if self.condition is None:
            raise RuntimeError(f"custom condition {self.name} was not loaded from the verified workflow payload")
        states = copy.deepcopy(self.met[0]) if self.met else {}
        try:
            fired = bool(self.condition.is_met(event, ConditionContext(states)))
        except Exception:  # user code: a failing condition is not met and changes no state
            log.exception("custom condition %s failed on event %s (%s); not met", self.name, event.version, event.key)
            return False
        self.met = [states]
        return fired

    def keys(self) -> set[str]:
        return {c["key"] for c in self.conditions}


def bind(rules: list, edges: list[dict[str, Any]]) -> None:
    """Give the custom rules among ``rules`` their condition objects, unpickled from ``edges`` — the control
    edges of a workflow read from the scheduler's own verified blob store, in the same order."""
    for rule, edge in zip(rules, edges, strict=False):
        if isinstance(rule, CustomRule) and rule.condition is None:
            rule.condition = load_condition(edge["condition"])
