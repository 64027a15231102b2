"""Schedule accuracy (issue 13): how late a periodic job starts after its tick.

    .venv/bin/python bench/schedule_bench.py [--ticks 200] [--interval 1]

An embedded scheduler (SQLite file, event server on private unix sockets) runs one workflow whose only
job is periodic (``af.job_config("tick", engine="bash", periodic=INTERVAL)``, command ``true``) for
``--ticks`` ticks. One JSON line per figure:
- fire: from the tick to its START action being committed (the scheduler's own record), p50/p99/max;
- start: from the tick to the job's process running — the scheduler's ``RUNNING`` event, published once
  the process is started and its record committed, stamped by the event server — p50/p99/max. An upper
  bound of the process's start (the kernel's creation time, which psutil offers, is off by up to a second:
  Linux's boot time is whole seconds);
- skipped: ticks whose START found the previous instance still running (nothing to start).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import benchlib
from benchlib import percentile

import aiflow_notebook as af
from aiflow_notebook.core.vocabulary import JOB_STATUS_CHANGED
from aiflow_notebook.meta import orm
from aiflow_notebook.scheduler import EmbeddedScheduler


def emit(metric: str, value: float, unit: str, **extra) -> None:
    benchlib.emit("schedule", metric, value, unit, **extra)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=200)
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        scheduler = EmbeddedScheduler(f"sqlite:///{Path(tmp) / 'bench.db'}", home=Path(tmp) / "home")
        try:
            scheduler.scheduler.schedules.tick_lateness = []
            with af.workflow("schedule_bench"):
                with af.job_config("tick", engine="bash", periodic=args.interval, properties={"command": "true"}):
                    pass
            run = scheduler.submit(af.compile("schedule_bench"))
            time.sleep(args.ticks * args.interval + 0.5)
            fired = list(scheduler.scheduler.schedules.tick_lateness)
            run.stop(timeout=60)
            with scheduler.store._db.reading() as session:
                anchor = session.get(orm.PeriodicJob, (run.run_id, "tick")).anchor
            running = [e.create_time / 1000 for e in scheduler.client.list_events(
                key="schedule_bench.tick", event_type=JOB_STATUS_CHANGED) if e.value == "RUNNING"]
        finally:
            scheduler.stop()
    starts = [t - (anchor + math.floor((t - anchor) / args.interval) * args.interval) for t in running]
    for name, values in (("fire", fired), ("start", starts)):
        ms = [v * 1000 for v in values]
        emit(f"{name}_p50", percentile(ms, 50), "ms", ticks=len(ms), interval_s=args.interval)
        emit(f"{name}_p99", percentile(ms, 99), "ms", ticks=len(ms), interval_s=args.interval)
        emit(f"{name}_max", max(ms), "ms", ticks=len(ms), interval_s=args.interval)
    emit("skipped", len(fired) - len(starts), "ticks", ticks=len(fired))


if __name__ == "__main__":
    main()
