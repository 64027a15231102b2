"""Deciding on events: the live runs' rules (and the workflow triggers) evaluated on a batch of events, the
outcome committed once, then acted on.

Rules are evaluated on copies: the runs' rules in memory change only once the commit succeeded, so a batch
that could not be committed leaves no trace and is decided again from the same state.

Runs are isolated: a status event of a job of this workflow counts for a run's rules only if the scheduler
published it for that run (its context names the run), and an event a job sent from its process
(``EventClient.from_environment`` names the job's run and workflow in the context) only for that run
among the live runs of its workflow. Everything else (events from outside any run, ``MODEL_*`` changes
made in a notebook, ``DATASET_UPDATED``, status of other workflows' jobs) is seen by every live run.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping
from typing import Any

from aiflow_notebook.core.vocabulary import (
    FINAL_STATES,
    JOB_STATUS_CHANGED,
    RUN_STATUS_CHANGED,
    SCHEDULER_SENDER,
    run_in_context,
)
from aiflow_notebook.events import Event
from aiflow_notebook.scheduler.actions import Actions
from aiflow_notebook.scheduler.live import Live
from aiflow_notebook.scheduler.schedules import Schedules
from aiflow_notebook.scheduler.settle import Settler
from aiflow_notebook.scheduler.state import ActiveRun
from aiflow_notebook.sdk.control import Action

RUN_SCOPED_TYPES = frozenset({JOB_STATUS_CHANGED, RUN_STATUS_CHANGED})  # a run's own status events
CURSOR_LAG_S = 1.0  # events that changed nothing move the cursor at most this long after the first of them

Decision = tuple[int, str, str, int]  # (run id, job, action, version of the event that decided it)


class Decisions:
    """``state``: the loop's (durable) scheduler state; ``seconds``: when a list, the time from each event's
    arrival to its actions being committed is appended (benchmarks)."""

    def __init__(self, state: Any, live: Live, schedules: Schedules, actions: Actions, settler: Settler,
                 seconds: list[float] | None = None):
        self.state, self.live, self.schedules, self.actions, self.settler = state, live, schedules, actions, settler
        self.seconds = seconds
        self._lag_since = 0.0  # when the first event that changed nothing arrived since the cursor last moved

    def handle(self, events: list[tuple[Event, float]]) -> None:
        """Evaluate rules on ``events`` (each with its arrival time) in version order; commit the outcome
        once, then act."""
        if not events:
            return
        working: dict[int, list] = {}  # run id -> copies of its rules, for runs an event touched
        actions: list[Decision] = []
        decided = [arrived for event, arrived in events if self._evaluate(event, working, actions)]
        last = events[-1][0].version
        triggered = self.schedules.evaluate([event for event, _ in events])  # workflow triggers
        if working or actions or triggered:
            self._commit(last, working, actions, triggered, decided)
        else:
            self._changed_nothing(last)
        for run_id in sorted({run_id for run_id, _, action, _ in actions if action != Action.NONE}):
            self.actions.execute_pending(run_id)
        for event, _ in events:
            if event.event_type == JOB_STATUS_CHANGED and event.value in FINAL_STATES and event.context:
                run_id = run_in_context(event.context)
                if run_id in self.live.runs and run_id not in self.live.stopping:
                    self.settler.check_run_done(run_id)

    def _evaluate(self, event: Event, working: dict[int, list], actions: list[Decision]) -> bool:
        """Evaluate the rules of every run that sees ``event`` (on copies, kept in ``working``); True when
        one fired (its action is appended to ``actions``)."""
        fired = False
        event_run = run_in_context(event.context) if event.event_type in RUN_SCOPED_TYPES else None
        origin = sent_from_run(event)
        for run in self.live.runs.values():
            if not self._sees(run, event, event_run, origin):
                continue
            rules = working.get(run.run_id) or run.rules
            for index, rule in enumerate(rules):
                trial = dataclasses.replace(rule, met=list(rule.met))
                if trial.on_event(event):
                    actions.append((run.run_id, rule.job, rule.action, event.version))
                    fired = True
                if trial.met != rule.met:
                    rules = working.setdefault(run.run_id, list(run.rules))
                    rules[index] = trial
        return fired

    def _sees(self, run: ActiveRun, event: Event, event_run: int | None, origin: Mapping[str, Any] | None) -> bool:
        """Whether ``run``'s rules may match ``event``: events after the run began; of the status events
        of this workflow's jobs only those the scheduler published for this very run; of the events a job
        of this workflow sent (``origin``), only those of this very run."""
        if event.version <= run.since_version or run.run_id in self.live.stopping:
            return False
        if (origin is not None and run_in_context(origin) != run.run_id and origin.get("workflow") == run.workflow
                and origin.get("project", run.project) == run.project):
            return False
        if event.event_type in RUN_SCOPED_TYPES and (event.key == run.workflow
                                                     or event.key.startswith(run.workflow + ".")):
            return event_run == run.run_id and event.sender == SCHEDULER_SENDER
        return True

    def _commit(self, last: int, working: dict[int, list], actions: list[Decision],
                triggered: tuple[Any, Any] | None, decided: list[float]) -> None:
        touched = [dataclasses.replace(self.live.runs[run_id], rules=rules) for run_id, rules in working.items()]
        self.state.commit_event(last, touched, actions, also=triggered[0] if triggered else None)
        for run_id, rules in working.items():  # committed: now the runs' rules are the new ones
            self.live.runs[run_id].rules = rules
        if triggered:
            triggered[1]()
        self._lag_since = 0.0
        if self.seconds is not None:
            now = time.perf_counter()
            self.seconds.extend(now - arrived for arrived in decided)

    def _changed_nothing(self, last: int) -> None:
        """Keep the cursor near (so a restart replays little) without a write per event."""
        if self._lag_since == 0.0:
            self._lag_since = time.monotonic()
        elif time.monotonic() - self._lag_since > CURSOR_LAG_S:
            self.state.advance(last)
            self._lag_since = 0.0


def sent_from_run(event: Event) -> dict | None:
    """The context of ``event`` when a job of a run sent it (``EventClient.from_environment`` in a job names
    the run and workflow: ``{"run": 7, "workflow": "ctr", "project": "demo"}``), else None: it is global."""
    if not event.context or '"workflow"' not in event.context or event.sender == SCHEDULER_SENDER:
        return None
    try:
        context = json.loads(event.context)
    except ValueError:
        return None
    if run_in_context(context) is None or not isinstance(context.get("workflow"), str):
        return None
    return context
