"""The scheduler's loop: one thread that takes its inbox strictly in order and hands each item to its part.

The inbox holds events from the bus (a listener replays from the last handled version, then follows live)
— commands, and everything rules may match — and reports of job processes: exits (from the watchers) and
stops that failed. What queued up meanwhile is decided together (group commit), but never across a
command or an exit: events before one are decided first. Between batches, and when nothing comes, the
loop fires what is due on the clock (schedules, periodic jobs).

The loop waits only on the database (see ``durable``): it ends when the scheduler stops, also in the
middle of such a wait, leaving the event to its successor.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from aiflow_notebook.core.vocabulary import CONTROL_NAMESPACE, SCHEDULE_COMMAND, command_key
from aiflow_notebook.events import Event
from aiflow_notebook.scheduler.actions import EXIT
from aiflow_notebook.scheduler.commands import Commands
from aiflow_notebook.scheduler.decide import Decisions
from aiflow_notebook.scheduler.durable import SchedulerStopped
from aiflow_notebook.scheduler.live import Live
from aiflow_notebook.scheduler.schedules import Schedules
from aiflow_notebook.scheduler.settle import Settler

log = logging.getLogger(__name__)

EVENT = "event"  # an inbox item (EVENT, (event, time.perf_counter() at its arrival))
MAX_BATCH = 512  # events decided in one transaction at most


class Loop:
    def __init__(self, name: str, inbox: queue.Queue, stopped: threading.Event, live: Live, decisions: Decisions,
                 commands: Commands, schedules: Schedules, settler: Settler):
        self.name, self.inbox, self.stopped, self.live = name, inbox, stopped, live
        self.decisions, self.commands, self.schedules, self.settler = decisions, commands, schedules, settler
        self._key = command_key(name)

    def run(self) -> None:
        try:
            self._decide_until_stopped()
        except SchedulerStopped as stopped:  # waiting for the database; the cursor stays before the event
            log.info("%s", stopped)

    def _decide_until_stopped(self) -> None:
        while not self.stopped.is_set():
            batch = self._next_batch()
            if batch:
                self._dispatch(batch)
            self._guarded(self.schedules.fire_due, None)

    def _next_batch(self) -> list[tuple[str, Any]]:
        """What the inbox holds (up to ``MAX_BATCH``), after waiting for the first until the clock is due."""
        try:
            batch = [self.inbox.get(timeout=self.schedules.seconds_until_due())]
        except queue.Empty:
            return []
        while len(batch) < MAX_BATCH:  # group commit: what queued up meanwhile is decided together
            try:
                batch.append(self.inbox.get_nowait())
            except queue.Empty:
                break
        return batch

    def _dispatch(self, batch: list[tuple[str, Any]]) -> None:
        events: list[tuple[Event, float]] = []
        for kind, item in batch:
            if kind == EVENT:
                self.live.last_seen = max(self.live.last_seen, item[0].version)
                if not self._is_command(item[0]):
                    events.append(item)
                    continue
            self._guarded(self.decisions.handle, events)
            events = []
            if kind == EVENT:
                self._guarded(self._command, item[0])
            elif kind == EXIT:
                self._guarded(self.settler.exited, item)
            else:
                self._guarded(self.settler.stop_failed, item)
        self._guarded(self.decisions.handle, events)

    def _is_command(self, event: Event) -> bool:
        return event.namespace == CONTROL_NAMESPACE and event.key == self._key

    def _command(self, event: Event) -> None:
        if event.event_type == SCHEDULE_COMMAND:
            self.schedules.handle_command(event)
        else:
            self.commands.handle(event)

    def _guarded(self, handler: Callable[[Any], None], item: Any) -> None:
        try:
            handler(item)
        except SchedulerStopped:
            raise
        except Exception:  # a bug must not kill the scheduler (database outages are waited out, see durable)
            log.exception("scheduler %s: failed to handle %r", self.name, item)
