"""Periodic jobs: a job with the ``periodic`` property (``{"cron": ...}`` or ``{"interval": seconds}``)
starts again at every tick while its run lives.

A tick queues the job's START action and moves ``next_tick`` in one transaction (exactly once across a
crash, see ``schedule_state``); a run with a periodic job stays RUNNING until stopped, like one with a
streaming job.
"""

from __future__ import annotations

import time
from typing import Any

from aiflow_notebook.core.timing import Timing
from aiflow_notebook.scheduler.actions import Actions
from aiflow_notebook.scheduler.live import Live

PERIODIC = "periodic"  # the job property of a periodic job: {"cron": ...} or {"interval": seconds}


class TickLateness:
    """Seconds from each tick to its firing, when ``values`` is a list (benchmarks set one; None: off)."""

    def __init__(self) -> None:
        self.values: list[float] | None = None

    def record(self, tick: float) -> None:
        if self.values is not None:
            self.values.append(time.time() - tick)


class PeriodicJobs:
    """``state``: the (durable) schedule state; ``actions`` carries out a tick's START."""

    def __init__(self, state: Any, live: Live, actions: Actions, lateness: TickLateness):
        self.state, self.live, self.actions, self.lateness = state, live, actions, lateness
        self._ticks: dict[tuple[int, str], tuple[Timing, float, float]] = {}  # (run, job) -> timing, anchor, next

    def follow(self, run_id: int) -> None:
        """Follow the periodic jobs of a live run (after submission or recovery): the first tick of one
        with an interval is now, of one with a cron expression its next tick."""
        run = self.live.runs[run_id]
        known = self.state.periodic_jobs(run_id)
        for job in self.live.workflow(run).jobs.values():
            periodic = (job.properties or {}).get(PERIODIC)
            if not periodic:
                continue
            timing = Timing.from_dict(periodic)
            if job.name not in known:
                now = time.time()
                first = now if timing.interval is not None else timing.next_after(now, now)
                self.state.add_periodic_job(run_id, job.name, timing.to_dict(), now, first)
                known[job.name] = (timing.to_dict(), now, first)
            _, anchor, next_tick = known[job.name]
            self._ticks[(run_id, job.name)] = (timing, anchor, next_tick)

    def recover(self) -> None:
        for run_id in list(self.live.runs):
            self.follow(run_id)

    def keeps_running(self, run_id: int) -> bool:
        """A run with periodic jobs stays RUNNING until stopped (like one with a streaming job)."""
        return any(key[0] == run_id for key in self._ticks)

    def next_ticks(self) -> list[float]:
        """The next tick of every periodic job of a live run."""
        return [next_tick for (run_id, _), (_, _, next_tick) in self._ticks.items() if run_id in self.live.runs]

    def fire_due(self, now: float) -> None:
        """Queue the START of every job whose tick is due; forget those whose run ended."""
        for (run_id, job), (timing, anchor, tick) in list(self._ticks.items()):
            if run_id not in self.live.runs:
                self._ticks.pop((run_id, job), None)  # the run ended
            elif tick <= now:
                self._tick(run_id, job, timing, anchor, tick, now)

    def _tick(self, run_id: int, job: str, timing: Timing, anchor: float, tick: float, now: float) -> None:
        next_tick = timing.next_after(now, anchor)
        queued = self.state.tick_periodic_job(run_id, job, tick, next_tick)
        self._ticks[(run_id, job)] = (timing, anchor, next_tick)
        if queued:
            self.lateness.record(tick)
            self.actions.execute_pending(run_id)

