"""The scheduler's clock and its workflow starts: schedules, triggers and periodic jobs.

:class:`Schedules` runs on the scheduler's loop thread. It

- takes the ``SCHEDULE_COMMAND`` commands (add / pause / resume / delete / list schedules, add / delete /
  list triggers) that clients send on the bus like a submission, and answers each with ``SCHEDULE_REPLY``;
- fires **workflow schedules** and **periodic jobs** (``periodic``) when their tick is due (the loop wakes
  for it);
- evaluates **workflow triggers** on every batch of events, inside the transaction that moves the cursor.

Exactly once across a crash or ``kill -9``:
- a schedule's tick creates its run and moves ``next_tick`` in one transaction (guarded by the old
  ``next_tick``, so one tick fires once). **Missed ticks** (the scheduler was down, or busy) **fire once**:
  the first check after the restart sees ``next_tick`` in the past, starts one run and moves
  ``next_tick`` to the first tick after *now* — never one run per missed tick, never two for one tick;
- a trigger's rule state and the runs it starts commit with the cursor past the triggering event, so a
  replayed event finds the state it left and starts nothing again;
- a periodic job's tick queues its START action and moves ``next_tick`` in one transaction.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from aiflow_notebook.core.errors import AIFlowError
from aiflow_notebook.core.timing import Timing
from aiflow_notebook.core.vocabulary import SCHEDULE_REPLY
from aiflow_notebook.engines import engine_runner
from aiflow_notebook.events import Event
from aiflow_notebook.scheduler.admission import Admission
from aiflow_notebook.scheduler.announce import Announcer
from aiflow_notebook.scheduler.durable import SchedulerStopped
from aiflow_notebook.scheduler.intake import Intake, control_edges, initial_jobs
from aiflow_notebook.scheduler.live import Live
from aiflow_notebook.scheduler.periodic import PeriodicJobs
from aiflow_notebook.scheduler.rules import CustomRule, Rule, bind
from aiflow_notebook.scheduler.schedule_state import NewRun, ScheduleRow, TriggerRow
from aiflow_notebook.sdk.control import Action
from aiflow_notebook.storage.blobs import BlobStore

log = logging.getLogger(__name__)

IDLE_WAKE_S = 0.2  # the loop's longest sleep when nothing is due
RETRY_S = 5.0  # a tick that failed (not a database outage: those are waited out) is tried again after this
READ_ONLY_OPS = ("list_schedules", "list_triggers")  # open to every client on the bus


class Schedules:
    """``state``: the (durable) schedule state; ``cursor`` and ``store``: the loop's (durable) scheduler
    state and metadata store; ``intake`` takes in the runs schedules and triggers start."""

    def __init__(self, state: Any, cursor: Any, store: Any, blobs: BlobStore, live: Live, intake: Intake,
                 periodic: PeriodicJobs, admission: Admission, announcer: Announcer):
        self.state, self.cursor, self.store, self.blobs, self.live = state, cursor, store, blobs, live
        self.intake, self.periodic, self.admission, self.announcer = intake, periodic, admission, announcer
        self.lateness = periodic.lateness  # one record of ticks, periodic jobs' and schedules'
        self.name = state.name
        self._schedules: dict[int, ScheduleRow] = {}
        self._triggers: dict[int, tuple[TriggerRow, Any]] = {}  # id -> (row, rule)
        self._workflows: dict[str, Any] = {}  # blob uri -> Workflow (read from the verified blob store)
        self._retry_at: dict[int, float] = {}  # schedule id -> when to try again after a tick failed

    @property
    def tick_lateness(self) -> list[float] | None:
        """Seconds from each tick (of schedules and periodic jobs) to its firing; benchmarks set a list."""
        return self.lateness.values

    @tick_lateness.setter
    def tick_lateness(self, values: list[float] | None) -> None:
        self.lateness.values = values

    # --- start-up ------------------------------------------------------------------------------------

    def recover(self) -> None:
        """Load schedules and triggers (missed ticks are due at once) and the live runs' periodic jobs."""
        self._schedules = {row.id: row for row in self.state.schedules()}
        self._triggers = {}
        for row in self.state.triggers():
            try:
                self._triggers[row.id] = (row, self._trigger_rule(row.condition_uri, row.state))
            except Exception:  # noqa: BLE001 - a trigger that cannot load must not stop the scheduler
                log.exception("scheduler %s: cannot load trigger %s of %r", self.name, row.id, row.workflow)
        self.periodic.recover()

    # --- the clock -----------------------------------------------------------------------------------

    def seconds_until_due(self) -> float:
        ticks = [self._due(row) for row in self._schedules.values() if not row.paused] + self.periodic.next_ticks()
        if not ticks:
            return IDLE_WAKE_S
        return max(0.0, min(IDLE_WAKE_S, min(ticks) - time.time()))

    def fire_due(self, _: Any = None) -> None:
        now = time.time()
        for row in list(self._schedules.values()):
            if not row.paused and self._due(row) <= now:
                self._try_schedule(row, now)
        self.periodic.fire_due(now)

    def _due(self, row: ScheduleRow) -> float:
        return max(row.next_tick, self._retry_at.get(row.id, 0.0))

    def _try_schedule(self, row: ScheduleRow, now: float) -> None:
        try:
            self._fire_schedule(row, now)
        except SchedulerStopped:
            raise
        except Exception:  # noqa: BLE001 - e.g. its workflow's blob is gone: retry later, keep going
            log.exception("scheduler %s: schedule %s of %r could not fire; retrying in %g s",
                          self.name, row.id, row.workflow, RETRY_S)
            self._retry_at[row.id] = now + RETRY_S

    def _fire_schedule(self, row: ScheduleRow, now: float) -> None:
        timing = Timing.from_dict(row.timing)
        next_tick = timing.next_after(now, row.anchor)  # missed ticks coalesce into this one firing
        workflow = self._workflow(row.uri)
        new_run = self._new_run(workflow, row.snapshot_id, self.live.last_seen,
                                {"schedule": row.id, "tick": row.next_tick, "uri": row.uri, "cwd": row.cwd,
                                 "submitted_by": f"schedule {row.id}"})
        run_id = self.state.fire_schedule(row.id, row.next_tick, next_tick, new_run)
        self._retry_at.pop(row.id, None)
        self.lateness.record(row.next_tick)
        self._schedules[row.id] = replace(row, next_tick=next_tick, fired=row.fired + (run_id is not None),
                                          last_run_id=run_id or row.last_run_id)
        if run_id is not None:
            log.info("scheduler %s: schedule %s (%s) started run %s of %r", self.name, row.id,
                     timing.describe(), run_id, row.workflow)
            self.intake.take(run_id, workflow, origin={"schedule": row.id, "tick": row.next_tick})

    # --- triggers ------------------------------------------------------------------------------------

    def evaluate(self, events: list[Event]) -> tuple[Callable, Callable[[], None]] | None:
        """Evaluate the triggers on ``events`` (on copies). None when nothing changed; else ``(work, done)``:
        ``work(session)`` adds the triggers' state and new runs to the cursor's transaction, ``done()``
        installs them once it committed."""
        if not self._triggers or not events:
            return None
        working: dict[int, Any] = {}  # trigger id -> its rule with the new state
        starts: list[tuple[int, NewRun]] = []
        causes: dict[int, list[int]] = {}  # trigger id -> the versions of the events that fired it, in order
        for event in events:
            for trigger_id, (row, rule) in self._triggers.items():
                if event.version > row.since_version:
                    self._try_trigger(row, working.get(trigger_id, rule), event, events[-1].version,
                                      working, starts, causes)
        if not working and not starts:
            return None
        created: list[tuple[int, int]] = []
        work = self.state.trigger_work({t: rule.met for t, rule in working.items()}, starts, created)
        return work, lambda: self._triggered(working, causes, created)

    def _try_trigger(self, row: TriggerRow, current: Any, event: Event, last: int, working: dict[int, Any],
                     starts: list[tuple[int, NewRun]], causes: dict[int, list[int]]) -> None:
        """One trigger on one event: the run it starts (if it fires) and its new state, into the batch's."""
        trial = replace(current, met=list(current.met))
        if trial.on_event(event):
            causes.setdefault(row.id, []).append(event.version)
            new_run = self._new_run(self._workflow(row.uri), row.snapshot_id, last,
                                    {"trigger": row.id, "event": event.version, "uri": row.uri, "cwd": row.cwd,
                                     "submitted_by": f"trigger {row.id}"})
            # its initial jobs get the triggering event (context.trigger), like a rule-started job
            starts.append((row.id, replace(new_run, start_version=event.version)))
        if trial.met != current.met:
            working[row.id] = trial

    def _triggered(self, working: dict[int, Any], causes: dict[int, list[int]],
                   created: list[tuple[int, int]]) -> None:
        """After the commit: the triggers' new state, and the runs they started taken in."""
        for trigger_id, rule in working.items():
            if trigger_id in self._triggers:
                self._triggers[trigger_id] = (self._triggers[trigger_id][0], rule)
        fired = {trigger_id: list(versions) for trigger_id, versions in causes.items()}
        for trigger_id, run_id in list(created):
            row, rule = self._triggers[trigger_id]
            row = replace(row, fired=row.fired + 1, last_run_id=run_id)
            self._triggers[trigger_id] = (row, rule)
            version = fired[trigger_id].pop(0)
            log.info("scheduler %s: trigger %s started run %s of %r (event %s)", self.name, trigger_id,
                     run_id, row.workflow, version)
            self.intake.take(run_id, self._workflow(row.uri), origin={"trigger": trigger_id, "event": version})

    def _trigger_rule(self, condition_uri: str, state: list | None) -> Any:
        condition = json.loads(self.blobs.get(condition_uri))  # verified: our own store
        edge = {"job": "", "action": Action.START, "condition": condition}
        rule = Rule.from_edge(edge, state)
        bind([rule], [edge])
        return rule

    # --- commands ------------------------------------------------------------------------------------

    def handle_command(self, event: Event) -> None:
        """Carry out one ``SCHEDULE_COMMAND`` and answer it; a bad request is answered with its error."""
        try:
            request = json.loads(event.value)
            op = request.get("op")
            handler = getattr(self, f"_op_{op}", None) if isinstance(op, str) else None
            if handler is None:
                raise AIFlowError(f"unknown schedule command {op!r}")
            if op not in READ_ONLY_OPS and not self.admission.admits(event):
                raise AIFlowError(f"{event.sender!r} is not an admitted client of this server, so it may not change "
                                  "schedules or triggers")
            result = handler(event, request)
        except SchedulerStopped:
            raise
        except Exception as exc:  # noqa: BLE001 - a bad request (or a condition that cannot load) is answered
            if not isinstance(exc, AIFlowError | ValueError | KeyError | TypeError):
                log.exception("scheduler %s: schedule command failed", self.name)
            self.cursor.advance(event.version)
            self._reply(event, {"error": f"{type(exc).__name__}: {exc}" if not isinstance(exc, AIFlowError)
                                else str(exc)})
            return
        self._reply(event, {"result": result})

    def _op_add_schedule(self, event: Event, request: dict[str, Any]) -> dict[str, Any]:
        timing = Timing.parse(**request["timing"])
        workflow, uri, snapshot_id, cwd = self._resolve(request)
        now = time.time()
        next_tick = timing.next_after(now, now)
        schedule_id = self.state.add_schedule(event.version, workflow.name, request.get("project") or workflow.project,
                                              uri, snapshot_id, timing.to_dict(), now, next_tick, event.sender, cwd)
        self._schedules[schedule_id] = ScheduleRow(schedule_id, workflow.name, request.get("project") or
                                                   workflow.project, uri, snapshot_id, timing.to_dict(), now,
                                                   next_tick, False, 0, None, cwd)
        return self._schedules[schedule_id].to_dict()

    def _op_pause_schedule(self, event: Event, request: dict[str, Any]) -> dict[str, Any]:
        return self._set_paused(event, int(request["id"]), True)

    def _op_resume_schedule(self, event: Event, request: dict[str, Any]) -> dict[str, Any]:
        return self._set_paused(event, int(request["id"]), False)

    def _set_paused(self, event: Event, schedule_id: int, paused: bool) -> dict[str, Any]:
        row = self._schedule(schedule_id)
        # resuming skips the ticks that passed while paused: the next one is the first after now
        next_tick = row.next_tick if paused else Timing.from_dict(row.timing).next_after(time.time(), row.anchor)
        self.state.set_paused(event.version, schedule_id, paused, next_tick)
        self._schedules[schedule_id] = replace(row, paused=paused, next_tick=next_tick)
        return self._schedules[schedule_id].to_dict()

    def _op_delete_schedule(self, event: Event, request: dict[str, Any]) -> dict[str, Any]:
        row = self._schedule(int(request["id"]))
        self.state.delete_schedule(event.version, row.id)
        self._schedules.pop(row.id, None)
        return row.to_dict()

    def _op_list_schedules(self, event: Event, request: dict[str, Any]) -> list[dict[str, Any]]:
        self.cursor.advance(event.version)
        wanted = request.get("workflow")
        return [row.to_dict() for row in self._schedules.values() if wanted in (None, row.workflow)]

    def _op_add_trigger(self, event: Event, request: dict[str, Any]) -> dict[str, Any]:
        workflow, uri, snapshot_id, cwd = self._resolve(request)
        rule = self._trigger_rule(request["condition_uri"], None)
        trigger_id = self.state.add_trigger(event.version, workflow.name, request.get("project") or workflow.project,
                                            uri, snapshot_id, request["condition_uri"], list(rule.met), event.sender,
                                            cwd)
        row = TriggerRow(trigger_id, workflow.name, request.get("project") or workflow.project, uri, snapshot_id,
                         request["condition_uri"], event.version, list(rule.met), 0, None, cwd)
        self._triggers[trigger_id] = (row, rule)
        return self._trigger_dict(row, rule)

    def _op_delete_trigger(self, event: Event, request: dict[str, Any]) -> dict[str, Any]:
        trigger_id = int(request["id"])
        if trigger_id not in self._triggers:
            raise AIFlowError(f"there is no workflow trigger {trigger_id}")
        self.state.delete_trigger(event.version, trigger_id)
        row, rule = self._triggers.pop(trigger_id)
        return self._trigger_dict(row, rule)

    def _op_list_triggers(self, event: Event, request: dict[str, Any]) -> list[dict[str, Any]]:
        self.cursor.advance(event.version)
        wanted = request.get("workflow")
        return [self._trigger_dict(row, rule) for row, rule in self._triggers.values() if wanted in (None, row.workflow)]

    # --- helpers -------------------------------------------------------------------------------------

    def _resolve(self, request: dict[str, Any]) -> tuple[Any, str, int, str | None]:
        """The workflow a command names: its blob ``uri`` (uploaded by the client), else the workflow
        ``name`` as last submitted to this scheduler. (workflow, uri, snapshot id, cwd)."""
        uri = request.get("uri")
        if uri is None:
            uri = self.state.latest_uri(request.get("workflow"), request.get("project"))
            if uri is None:
                raise AIFlowError(f"workflow {request.get('workflow')!r} was never submitted to this scheduler; add "
                                  "its schedule from the notebook (af.add_workflow_schedule(workflow, ...)), which "
                                  "uploads it")
        workflow = self._workflow(uri)
        for job in workflow.jobs.values():
            engine_runner(job.engine)
        payload = self.blobs.get(uri)
        snapshot_id = self.store.save_workflow_snapshot(workflow.name, workflow.content_hash, payload,
                                                        project=request.get("project") or workflow.project)
        return workflow, uri, snapshot_id, request.get("cwd")

    def _workflow(self, uri: str) -> Any:
        if uri not in self._workflows:
            from aiflow_notebook.sdk.workflow import Workflow

            self._workflows[uri] = Workflow.from_bytes(self.blobs.get(uri))  # verified: our own store
        return self._workflows[uri]

    def _new_run(self, workflow: Any, snapshot_id: int, since_version: int, properties: dict[str, Any]) -> NewRun:
        edges = control_edges(workflow)
        return NewRun(snapshot_id, edges, initial_jobs(workflow, edges), since_version, properties)

    def _schedule(self, schedule_id: int) -> ScheduleRow:
        if schedule_id not in self._schedules:
            raise AIFlowError(f"there is no workflow schedule {schedule_id}")
        return self._schedules[schedule_id]

    def _trigger_dict(self, row: TriggerRow, rule: Any) -> dict[str, Any]:
        data = row.to_dict()
        data["condition"] = rule.name if isinstance(rule, CustomRule) else \
            f"{rule.mode} of " + ", ".join(f"{c['key']} ({c['event_type']})" for c in rule.conditions)
        return data

    def _reply(self, event: Event, body: dict[str, Any]) -> None:
        request_id = None
        try:
            request_id = json.loads(event.value).get("request_id")
        except (ValueError, AttributeError):
            pass
        self.announcer.reply(SCHEDULE_REPLY, json.dumps(body, default=str), {"request_id": request_id})
