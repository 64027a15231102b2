"""A new run, from its workflow to the loop: what it starts with, and taking it in once it is committed.

Runs begin three ways — a submission, a schedule's tick, a trigger's event — and each commits the run (its
rules and the START actions of its initial jobs) with the decision that made it. :class:`Intake` then
takes it into the loop the same way for all three.
"""

from __future__ import annotations

from typing import Any

from aiflow_notebook.core.vocabulary import RunState
from aiflow_notebook.scheduler.actions import Actions
from aiflow_notebook.scheduler.announce import Announcer
from aiflow_notebook.scheduler.live import Live
from aiflow_notebook.scheduler.periodic import PERIODIC, PeriodicJobs
from aiflow_notebook.scheduler.rules import bind
from aiflow_notebook.sdk.control import Action


def control_edges(workflow: Any) -> list[dict[str, Any]]:
    """The workflow's control edges in their plain form: a run's rules, in order."""
    return [edge.to_dict() for edge in workflow.control_edges]


def initial_jobs(workflow: Any, edges: list[dict[str, Any]]) -> list[str]:
    """The jobs a run starts with: those no rule STARTs, except periodic jobs (they start at their ticks)."""
    started_by_rule = {edge["job"] for edge in edges if edge["action"] == Action.START}
    return [name for name, job in workflow.jobs.items()
            if name not in started_by_rule and not (job.properties or {}).get(PERIODIC)]


class Intake:
    """``state``: the loop's (durable) scheduler state."""

    def __init__(self, state: Any, live: Live, periodic: PeriodicJobs, actions: Actions, announcer: Announcer):
        self.state, self.live, self.periodic, self.actions, self.announcer = state, live, periodic, actions, announcer

    def take(self, run_id: int, workflow: Any, request_id: str | None = None,
             origin: dict[str, Any] | None = None) -> None:
        """Take a run just committed into the loop: its rules (custom conditions loaded from ``workflow``,
        read from our blob store), its periodic jobs, the announcements, its initial jobs. ``origin``: what
        started a scheduled or triggered run (``{"schedule": id, "tick": t}``, ``{"trigger": id, "event": v}``)."""
        run = next(r for r in self.state.active_runs() if r.run_id == run_id)
        bind(run.rules, control_edges(workflow))
        self.live.add(run, workflow)
        self.periodic.follow(run_id)
        self.announcer.run_created(run_id, workflow.name, request_id)
        self.announcer.run_status(run_id, workflow.name, RunState.RUNNING, **(origin or {}))
        self.actions.execute_pending(run_id)
