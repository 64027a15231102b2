"""``af.add_workflow_schedule`` and friends: workflows that run on a clock or when events say so.

- Schedules: ``af.add_workflow_schedule(workflow, cron="*/5 * * * *" | interval=60 |
  expression="cron@..." | "interval@D H M S")`` → schedule id; ``af.list_workflow_schedules(workflow=None)``,
  ``af.pause_workflow_schedule(id)``, ``af.resume_workflow_schedule(id)``, ``af.delete_workflow_schedule(id)``.
- Triggers: ``af.add_workflow_trigger(workflow, condition)`` → trigger id, where ``condition`` is
  ``af.MeetAll(...)`` / ``af.MeetAny(...)`` of event conditions, one ``af.EventCondition``, a custom
  ``af.Condition``, or the simple form ``key=..., event_type=...``; ``af.list_workflow_triggers``,
  ``af.delete_workflow_trigger(id)``.

``workflow`` is a compiled ``Workflow``, the name of a workflow defined in this session (compiled and
uploaded, like ``af.submit``), or the name of one already submitted to the scheduler. Requests go to the
connected server (``af.connect``) or the embedded scheduler. See docs/schedules.md.
"""

from __future__ import annotations

from typing import Any

from aiflow_notebook.core.errors import InvalidArgumentError, UnknownWorkflowError
from aiflow_notebook.core.vocabulary import DEFAULT_NAMESPACE
from aiflow_notebook.core.vocabulary import WILDCARD as ANY
from aiflow_notebook.sdk.conditions import Condition, EventCondition, MeetAll, MeetAny


def add_workflow_schedule(workflow: Any = None, cron: str | None = None, interval: Any = None,
                          expression: str | None = None, *, scheduler: Any = None) -> int:
    """Run ``workflow`` at every tick of ``cron`` (UTC) or every ``interval`` seconds; the schedule's id.

    A tick missed while the scheduler was down fires once when it is back (not once per missed tick)."""
    from aiflow_notebook.core.timing import Timing

    timing = Timing.parse(cron=cron, interval=interval, expression=expression)
    return int(_client(scheduler).add_schedule(_workflow(workflow), timing)["id"])


def list_workflow_schedules(workflow: str | None = None, *, scheduler: Any = None) -> list[dict[str, Any]]:
    """The schedules (of ``workflow``, or all): dicts with ``id``, ``workflow``, ``timing``, ``paused``,
    ``next_tick`` (epoch seconds), ``fired`` (runs started) and ``last_run_id``."""
    return _client(scheduler).list_schedules(_name(workflow))


def pause_workflow_schedule(schedule_id: int, *, scheduler: Any = None) -> dict[str, Any]:
    """Stop firing (runs already started go on)."""
    return _client(scheduler).pause_schedule(schedule_id)


def resume_workflow_schedule(schedule_id: int, *, scheduler: Any = None) -> dict[str, Any]:
    """Fire again from the next tick after now (ticks that passed while paused are skipped)."""
    return _client(scheduler).resume_schedule(schedule_id)


def delete_workflow_schedule(schedule_id: int, *, scheduler: Any = None) -> dict[str, Any]:
    return _client(scheduler).delete_schedule(schedule_id)


def add_workflow_trigger(workflow: Any = None, condition: Any = None, *, key: str | None = None,
                         value: str = ANY, event_type: str = ANY, namespace: str = DEFAULT_NAMESPACE, sender: str = ANY,
                         value_condition: str = "UPDATED", scheduler: Any = None) -> int:
    """Start a new run of ``workflow`` each time ``condition`` is met (exactly one run per triggering event,
    also across a scheduler crash); the trigger's id. It sees events sent after it was added."""
    if condition is None and key is not None:
        condition = EventCondition(key=key, value=value, event_type=event_type, namespace=namespace, sender=sender,
                                   value_condition=value_condition)
    if isinstance(condition, EventCondition):
        condition = MeetAny(condition)
    if isinstance(condition, Condition):
        if type(condition).is_met is Condition.is_met:
            raise InvalidArgumentError(f"add_workflow_trigger(...): {condition.name} does not implement "
                                       "is_met(event, context)")
    elif not isinstance(condition, MeetAll | MeetAny):
        raise InvalidArgumentError("add_workflow_trigger(workflow, condition): condition must be af.MeetAll(...) / "
                                   "af.MeetAny(...) of af.EventCondition(...), an af.EventCondition, an af.Condition, "
                                   f"or key=... (with event_type=...), got {condition!r}")
    return int(_client(scheduler).add_trigger(_workflow(workflow), condition.to_dict())["id"])


def list_workflow_triggers(workflow: str | None = None, *, scheduler: Any = None) -> list[dict[str, Any]]:
    """The triggers (of ``workflow``, or all): dicts with ``id``, ``workflow``, ``condition`` (described),
    ``fired`` (runs started) and ``last_run_id``."""
    return _client(scheduler).list_triggers(_name(workflow))


def delete_workflow_trigger(trigger_id: int, *, scheduler: Any = None) -> dict[str, Any]:
    return _client(scheduler).delete_trigger(trigger_id)


def _client(scheduler: Any):
    from aiflow_notebook.scheduler.schedule_client import ScheduleClient
    from aiflow_notebook.session.submit import scheduler_client

    return ScheduleClient(scheduler_client(scheduler))


def _workflow(workflow: Any) -> Any:
    """A compiled workflow to upload, or the name of one the scheduler already has."""
    if hasattr(workflow, "to_bytes"):
        return workflow
    from aiflow_notebook.sdk.compile import compile as compile_workflow

    try:
        compiled = compile_workflow(workflow)
    except UnknownWorkflowError:
        if isinstance(workflow, str):
            return workflow  # not defined here: the scheduler runs what was last submitted under that name
        raise
    if not compiled.jobs:
        raise InvalidArgumentError(f"workflow {compiled.name!r} has no jobs, so there is nothing to schedule")
    return compiled


def _name(workflow: Any) -> str | None:
    return getattr(workflow, "name", workflow)
