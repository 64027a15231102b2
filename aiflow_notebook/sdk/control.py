"""Control edges: rules that start, stop or restart a job when events arrive (AI Flow's semantics).

A control edge is plain data: the job it acts on, the action, and a condition over events (the kinds of
condition are in :mod:`aiflow_notebook.sdk.conditions`). The scheduler evaluates them; here they are only
recorded and checked. ``action_on_job_status`` and ``action_on_model_version_event`` are sugar over
``action_on_event``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import aiflow_notebook.sdk.graph as _graph
from aiflow_notebook.core.errors import InvalidArgumentError
from aiflow_notebook.core.vocabulary import (
    DEFAULT_NAMESPACE,
    JOB_STATUS_CHANGED,
    MODEL_EVENT_TYPES,
    JobState,
    Stage,
    model_event_type,
)
from aiflow_notebook.core.vocabulary import JOB_STATES as JOB_STATUSES
from aiflow_notebook.core.vocabulary import WILDCARD as ANY
from aiflow_notebook.sdk.conditions import (
    CUSTOM,
    Condition,
    EventCondition,
    EventLife,
    MeetAll,
    MeetAny,
    PickledCondition,
    ValueCondition,
    choice,
)


class Action(StrEnum):
    """What the scheduler does to the job when the condition is met."""

    START = "START"
    STOP = "STOP"
    RESTART = "RESTART"
    NONE = "NONE"
    SWAP = "SWAP"  # model-version rules only: the running job switches to the event's version in place


START, STOP, RESTART, NONE, SWAP = Action.START, Action.STOP, Action.RESTART, Action.NONE, Action.SWAP


@dataclass(frozen=True, repr=False)
class ControlEdge:
    """Do ``action`` to ``job`` when ``condition`` is met.

    ``upstream`` (job-status rules: a job, or a tuple of jobs that must all reach the status) and
    ``model`` (model-version rules) only say where the rule came from, for checking and drawing;
    ``condition`` alone says when it fires.
    """

    job: str
    action: Action
    condition: MeetAll | MeetAny
    upstream: str | tuple[str, ...] | None = None
    model: str | None = None
    origin: str | None = field(default=None, compare=False)
    location: str = field(default="", compare=False)

    def __repr__(self) -> str:
        return f"<ControlEdge {self._call()}: {self.label}>"

    @property
    def upstream_jobs(self) -> tuple[str, ...]:
        """The jobs whose status this rule waits for (none for other rules)."""
        if self.upstream is None:
            return ()
        return (self.upstream,) if isinstance(self.upstream, str) else tuple(self.upstream)

    def to_dict(self) -> dict[str, Any]:
        upstream = list(self.upstream) if isinstance(self.upstream, tuple) else self.upstream
        return {"job": self.job, "action": self.action.value, "condition": self.condition.to_dict(),
                "upstream": upstream, "model": self.model}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ControlEdge:
        if data["condition"]["mode"] == CUSTOM:  # never unpickled here (see conditions.PickledCondition)
            return cls(job=data["job"], action=Action(data["action"]), condition=PickledCondition(data["condition"]),
                       upstream=data.get("upstream"), model=data.get("model"))
        condition_type = MeetAll if data["condition"]["mode"] == "ALL" else MeetAny
        events = [EventCondition(**event) for event in data["condition"]["events"]]
        upstream = data.get("upstream")
        return cls(job=data["job"], action=Action(data["action"]), condition=condition_type(*events),
                   upstream=tuple(upstream) if isinstance(upstream, list) else upstream, model=data.get("model"))

    @property
    def label(self) -> str:
        """Short text for the graph: ``FINISHED → START``, ``MODEL_VALIDATED → RESTART``..."""
        if self.upstream is not None:
            return f"{self.condition.events[0].value} → {self.action.value}"
        if self.model is not None:
            return f"{self.condition.events[0].event_type} → {self.action.value}"
        if self.condition.mode == CUSTOM:
            return f"{self.condition.name} → {self.action.value}"
        joiner = " AND " if self.condition.mode == "ALL" else " OR "
        return f"{joiner.join(e.describe() for e in self.condition.events)} → {self.action.value}"

    def describe(self) -> str:
        """How error messages name this edge: the call that made it and where."""
        call = self._call() if self.upstream or self.model else f"{self._call()} ({self.label})"
        return f"{call}{f' at {self.location}' if self.location else ''}"

    def _call(self) -> str:
        if self.upstream is not None:
            return f"action_on_job_status({self.job!r}, upstream={self.upstream!r})"
        if self.model is not None:
            return f"action_on_model_version_event({self.job!r}, model={self.model!r})"
        return f"control edge to job {self.job!r}"


# ---------------------------------------------------------------------------------------------------------
# The public functions (DESIGN §4.1)


def action_on_event(job: str, key: str, value: str = ANY, event_type: str = ANY,
                    namespace: str = DEFAULT_NAMESPACE, sender: str = ANY,
                    value_condition: ValueCondition | str = ValueCondition.EQUALS,
                    action: Action | str = Action.START, life: EventLife | str = EventLife.ONCE) -> ControlEdge:
    """Do ``action`` to ``job`` when an event matching key/value/type/namespace/sender arrives."""
    with _culprit(f"action_on_event({job!r}, key={key!r})"):
        condition = EventCondition(key=key, value=value, event_type=event_type, namespace=namespace,
                                   sender=sender, value_condition=value_condition, life=life)
    return _add(job, action, MeetAny(condition))


def action_on_events(job: str, condition: MeetAll | MeetAny | Condition,
                     action: Action | str = Action.START) -> ControlEdge:
    """Do ``action`` to ``job`` when ``af.MeetAll(...)`` / ``af.MeetAny(...)`` of event conditions is met,
    or when a custom ``af.Condition`` says so."""
    if not isinstance(condition, MeetAll | MeetAny | Condition):
        raise InvalidArgumentError(f"action_on_events({job!r}, ...): condition must be af.MeetAll(...) or "
                                   f"af.MeetAny(...) of af.EventCondition(...), or an af.Condition, got {condition!r}")
    if isinstance(condition, Condition):
        return action_on_condition(job, condition, action)
    return _add(job, action, condition)


def action_on_job_status(job: str, upstream: str | list[str] | tuple[str, ...], status: str = JobState.FINISHED,
                         action: Action | str = Action.START) -> ControlEdge:
    """Do ``action`` to ``job`` when job ``upstream`` of this workflow reaches ``status`` — or, given a
    list of jobs (``upstream=["a", "b"]``, AI Flow's ``start_after([a, b])``), when every one of them has.

    Sugar for an event condition on key ``<workflow>.<upstream>``, type ``JOB_STATUS_CHANGED``, value
    ``status`` (what the scheduler publishes, DESIGN §4.4); ``MeetAll`` of one per job for a list.
    """
    names = [upstream] if isinstance(upstream, str) else upstream
    if not isinstance(names, list | tuple) or not names:
        raise InvalidArgumentError(f"action_on_job_status({job!r}, ...): upstream must be a job name or a "
                                   f"non-empty list of job names, got {upstream!r}")
    for name in names:
        _graph.check_name(name, "upstream job")
    if len(set(names)) != len(names):
        raise InvalidArgumentError(f"action_on_job_status({job!r}, upstream={upstream!r}): a job is named twice")
    if status not in JOB_STATUSES:
        raise InvalidArgumentError(f"action_on_job_status({job!r}, upstream={upstream!r}): status {status!r} "
                                   f"is not one of {', '.join(JOB_STATUSES)}")
    workflow = _graph.current_graph().name
    conditions = [EventCondition(key=f"{workflow}.{name}", value=status, event_type=JOB_STATUS_CHANGED)
                  for name in names]
    if isinstance(upstream, str):
        return _add(job, action, MeetAny(*conditions), upstream=upstream)
    return _add(job, action, MeetAll(*conditions), upstream=tuple(names))


def action_on_model_version_event(job: str, model: str, event_type: str = model_event_type(Stage.GENERATED),
                                  action: Action | str = Action.RESTART) -> ControlEdge:
    """Do ``action`` to ``job`` each time a version of ``model`` has event ``event_type`` (a new stage).

    Sugar for an event condition on key = model name, type = ``event_type``, namespace ``default``, any
    value, ``UPDATED``.
    """
    if not isinstance(model, str) or not model:
        raise InvalidArgumentError(f"action_on_model_version_event({job!r}, ...): model must be a model name, "
                                   f"got {model!r}")
    if event_type not in MODEL_EVENT_TYPES:
        raise InvalidArgumentError(f"action_on_model_version_event({job!r}, model={model!r}): event_type "
                                   f"{event_type!r} is not one of {', '.join(MODEL_EVENT_TYPES)}")
    condition = EventCondition(key=model, event_type=event_type, value_condition=ValueCondition.UPDATED)
    return _add(job, action, MeetAny(condition), model=model)


def _no_swap(job: str, action: Action | str, call: str) -> None:
    """SWAP names a model version: only a model-version rule can ask for it."""
    if Action(action) is Action.SWAP:
        raise InvalidArgumentError(f"{call}: action SWAP switches a running job to the model version an event "
                                   f"names; use it with action_on_model_version_event({job!r}, model=..., "
                                   "action='SWAP')")


def action_on_condition(job: str, condition: Condition, action: Action | str = Action.START) -> ControlEdge:
    """Do ``action`` to ``job`` when the custom ``condition`` (an ``af.Condition`` subclass) is met; its
    value state lives with the run's rules (see ``aiflow_notebook.sdk.conditions``)."""
    if not isinstance(condition, Condition):
        raise InvalidArgumentError(f"action_on_condition({job!r}, ...): condition must be an instance of an "
                                   f"af.Condition subclass with is_met(event, context), got {condition!r}")
    if type(condition).is_met is Condition.is_met:
        raise InvalidArgumentError(f"action_on_condition({job!r}, ...): {condition.name} does not implement "
                                   "is_met(event, context)")
    with _culprit(f"action_on_condition({job!r}, {condition.name})"):
        condition.to_dict()  # fails now, naming what cannot be pickled, rather than at compile time
    return _add(job, action, condition)


def _add(job: str, action: Action | str, condition: MeetAll | MeetAny, upstream: str | None = None,
         model: str | None = None) -> ControlEdge:
    _graph.check_name(job, "job")
    with _culprit(f"control edge to job {job!r}"):
        action = choice(Action, action, "action")
    if action is Action.SWAP and model is None:
        _no_swap(job, action, f"control edge to job {job!r}")
    edge = ControlEdge(job=job, action=action, condition=condition, upstream=upstream, model=model,
                       origin=_graph.current_origin(), location=_graph.caller_location())
    _graph.current_graph().add_control_edge(edge)
    return edge


@contextmanager
def _culprit(prefix: str) -> Iterator[None]:
    """Prefix an argument error with the call it came from, so the message names the culprit."""
    try:
        yield
    except InvalidArgumentError as err:
        raise InvalidArgumentError(f"{prefix}: {err}") from None
