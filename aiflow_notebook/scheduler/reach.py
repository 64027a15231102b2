"""Whether a run can still get where a wait wants it: the judgement that lets a wait give up at once.

A job starts when one of the workflow's rules fires, and a rule on a job's status fires only when that job
reaches the status. So when a job that leads to the awaited one has failed, none of the jobs that lead
there runs, and no rule into them has yet to act on a state they reached, nothing the run does will get
there: only a new event from outside would (a retrain announced, a job restarted by hand). A wait that
went on would wait out its whole timeout — what the quickstart's ``run.wait_for("validate", ...)`` did
after its training job failed.

The judgement is on the run's status events alone (what a :class:`~aiflow_notebook.scheduler.client.
WorkflowRun` sees over the bus), and it is careful in three ways: only a failure that came after the wait
began counts (one from before may be what the event the notebook just sent is about to retry); a rule
that may still act on a state, also a custom condition, counts as on its way; and it speaks only while a
job outside those that lead there still runs — when nothing runs, the run ends by itself and its end
says the same.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiflow_notebook.core.vocabulary import (
    ACTIVE_STATES,
    DEFAULT_NAMESPACE,
    JOB_STATUS_CHANGED,
    SCHEDULER_SENDER,
    JobState,
    matches,
)
from aiflow_notebook.sdk.conditions import ValueCondition
from aiflow_notebook.sdk.control import Action

STARTING_ACTIONS = (Action.START, Action.RESTART, Action.SWAP)


@dataclass(frozen=True)
class JobNow:
    """A job's latest status event in a run: its state, the event's version, its error (when it failed)."""

    state: str
    version: int
    error: str | None = None


def job_now(event: Any) -> JobNow:
    """A job's state from its ``JOB_STATUS_CHANGED`` event (a waiting run keeps the latest of each job: a
    wait checks it at every event, so it must not go back over the run's history)."""
    return JobNow(event.value, event.version, error_of(event) if event.value == JobState.FAILED else None)


def error_of(event: Any) -> str | None:
    """The error a ``JOB_STATUS_CHANGED`` event of a failed job carries (its log tail included), else None."""
    context = json.loads(event.context) if event.context else None
    return context.get("error") if isinstance(context, dict) else None


def leading_to(workflow: Any, job: str) -> set[str]:
    """``job`` and every job whose status starts it (through the workflow's rules), transitively."""
    found: set[str] = set()
    todo = [job]
    while todo:
        name = todo.pop()
        if name not in found:
            found.add(name)
            todo += [upstream for edge in workflow.control_edges if edge.job == name
                     and edge.action in STARTING_ACTIONS for upstream in _watched_jobs(workflow, edge)]
    return found


def failed_for_good(workflow: Any, latest: Mapping[str, JobNow], jobs: set[str], since: int) -> dict[str, str]:
    """The jobs among ``jobs`` that failed after version ``since`` (each with its error), when nothing among
    ``jobs`` can move any more while the run goes on; else nothing (an empty dict)."""
    failed = {name: latest[name].error or "(no error recorded)" for name in sorted(jobs)
              if name in latest and latest[name].state == JobState.FAILED and latest[name].version > since}
    if not failed:  # the common case, checked at every event of a wait: first and cheapest
        return {}
    active = {name for name, now in latest.items() if now.state in ACTIVE_STATES}
    if active & jobs or not active - jobs or _rule_on_its_way(workflow, latest, jobs):
        return {}
    return failed


def describe(failed: Mapping[str, str]) -> str:
    """``job 'train' FAILED: <error>`` for each failed job, for an error message."""
    return "; ".join(f"job {job!r} FAILED: {error}" for job, error in failed.items())


def _rule_on_its_way(workflow: Any, latest: Mapping[str, JobNow], jobs: set[str]) -> bool:
    """Whether a rule that starts one of ``jobs`` may still act on a job state it has not answered: the
    state came after the started job's own latest status."""
    for edge in workflow.control_edges:
        if edge.job not in jobs or edge.action not in STARTING_ACTIONS:
            continue
        answered = latest[edge.job].version if edge.job in latest else 0
        for name, now in latest.items():
            if now.version > answered and _may_fire(edge.condition, f"{workflow.name}.{name}", now.state):
                return True
    return False


def _watched_jobs(workflow: Any, edge: Any) -> list[str]:
    """The jobs of the workflow whose status events the rule's condition may match (a custom condition:
    any of them)."""
    return [name for name in workflow.jobs
            if any(_may_fire(edge.condition, f"{workflow.name}.{name}", state) for state in JobState)]


def _may_fire(condition: Any, key: str, state: str) -> bool:
    """Whether ``condition`` may count the scheduler's status event ``key`` = ``state``."""
    events = getattr(condition, "events", None)
    if events is None:
        return True  # a custom condition: it may act on any event
    return any(matches(e.key, key) and matches(e.event_type, JOB_STATUS_CHANGED)
               and matches(e.namespace, DEFAULT_NAMESPACE) and matches(e.sender, SCHEDULER_SENDER)
               and (e.value_condition == ValueCondition.UPDATED or matches(e.value, state)) for e in events)
