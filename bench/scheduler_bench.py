"""Scheduler benchmark (../shared/BENCHMARKS.md, "Scheduler").

    .venv/bin/python bench/scheduler_bench.py [--runs 3] [--events 10000] [--chain 200]

One JSON line per figure, the median over --runs runs, each on a fresh database and event server:
- decision: events matching a rule of a submitted workflow, sent at a steady --rate by another process;
  p50/p99 of the time from the event's arrival at the scheduler to the action being committed.
- hand-off: a 2-job chain of python jobs; time from job A's FINISHED event to job B's RUNNING event, which
  the scheduler publishes once B's process is started (both stamped by the event server; p50 of 20).
- chain: a --chain-job chain; total time (run RUNNING -> FINISHED, server clock) minus the jobs' own run
  times (each job run's recorded start -> end, i.e. its process's life), and the median job run time.
- concurrent: --concurrent live runs of one --width-job chain, submitted together; the decision p50/p99
  over every rule that fired, each run's overhead (as for chain; the median run), the hand-off p50/p99
  over every run, and the wall time until the last run ended.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path

import benchlib
from benchlib import percentile

import aiflow_notebook as af
from aiflow_notebook.events import EventClient, EventServer
from aiflow_notebook.events.publisher import EventBusPublisher
from aiflow_notebook.meta import orm
from aiflow_notebook.meta.store import MetadataStore
from aiflow_notebook.scheduler import Scheduler, SchedulerClient
from aiflow_notebook.storage.blobs import LocalBlobStore


def emit(metric: str, value: float, unit: str, **extra) -> None:
    benchlib.emit("scheduler", metric, value, unit, **extra)


def noop():
    return None


def idle():
    """Keeps the decision run active while events arrive (the run is stopped at the end)."""
    import time as _time

    while True:
        _time.sleep(1)


class Bench:
    """A fresh database, event server and scheduler in a temporary directory."""

    def __enter__(self) -> Bench:
        self.tmp = tempfile.TemporaryDirectory()
        db = f"sqlite:///{Path(self.tmp.name) / 'bench.db'}"
        self.server = EventServer(db, bind="tcp://127.0.0.1:0").start()
        self.client = EventClient(self.server.url)
        self.store = MetadataStore(db, publisher=EventBusPublisher(self.client))
        self.scheduler = Scheduler(self.store, self.client, home=self.tmp.name, record_decisions=True).start()
        self.api = SchedulerClient(self.client, blob_store=LocalBlobStore(Path(self.tmp.name) / "blobs"))
        return self

    def __exit__(self, *exc) -> None:
        self.scheduler.stop(kill_jobs=True)
        self.client.close()
        self.store.close()
        self.server.stop()
        self.tmp.cleanup()


def decision_latencies(events: int, rate: float) -> list[float]:
    with Bench() as bench:
        with af.workflow("decide"):
            with af.job_config("sink"):
                af.user_define_operation(idle, name="idle")
            af.action_on_event("sink", key="bench.tick", action="NONE")
        run = bench.api.submit(af.compile("decide"))
        while run.jobs()["sink"] != "RUNNING":
            time.sleep(0.05)
        # The events come from another process, as they do from jobs and notebooks.
        sender = multiprocessing.get_context("spawn").Process(target=send_steadily,
                                                              args=(bench.server.url, events, rate))
        sender.start()
        sender.join(events / rate + 120)
        deadline = time.monotonic() + 120
        while len(bench.scheduler.decision_seconds) < events and time.monotonic() < deadline:
            time.sleep(0.05)
        run.stop()
        assert len(bench.scheduler.decision_seconds) == events, "not every event was decided on"
        return [s * 1000 for s in bench.scheduler.decision_seconds]


def send_steadily(url: str, events: int, rate: float) -> None:
    from aiflow_notebook.events import Event

    client = EventClient(url)
    interval, start = 1.0 / rate, time.perf_counter()
    for i in range(events):
        delay = start + i * interval - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        client.send_event(Event(key="bench.tick", value=str(i), event_type="BENCH"))
    client.close()


def chain_workflow(name: str, length: int):
    with af.workflow(name):
        for i in range(length):
            with af.job_config(f"j{i}"):
                af.user_define_operation(noop, name="noop")
            if i:
                af.action_on_job_status(f"j{i}", upstream=f"j{i - 1}")
    return af.compile(name)


def handoffs_ms(chains: int) -> list[float]:
    results = []
    with Bench() as bench:
        workflow = chain_workflow("handoff", 2)
        for _ in range(chains):
            run = bench.api.submit(workflow)
            assert run.wait(120) == "FINISHED", run.errors()
            events = run.job_events()
            finished = next(e for e in events if e.key == "handoff.j0" and e.value == "FINISHED")
            running = next(e for e in events if e.key == "handoff.j1" and e.value == "RUNNING")
            results.append(running.create_time - finished.create_time)  # both on the server's clock (ms)
    return results


def chain_figures(length: int) -> tuple[float, float, float]:
    with Bench() as bench:
        run = bench.api.submit(chain_workflow("chain", length))
        assert run.wait(1800) == "FINISHED", run.errors()
        statuses = [e for e in bench.client.list_events(key="chain", event_type="WORKFLOW_RUN_STATUS_CHANGED")]
        total = (statuses[-1].create_time - statuses[0].create_time) / 1000
        with bench.store._db.reading() as session:
            runs = session.query(orm.JobRun).all()
            own = [(r.ended_at - r.started_at).total_seconds() for r in runs]
        return total, total - sum(own), statistics.median(own)



def concurrent_figures(runs: int, length: int) -> dict[str, float]:
    with Bench() as bench:
        workflow = chain_workflow("together", length)
        started = time.monotonic()
        live = [bench.api.submit(workflow) for _ in range(runs)]
        for run in live:
            assert run.wait(1800) == "FINISHED", run.errors()
        wall = time.monotonic() - started
        overheads, handoffs = [], []
        with bench.store._db.reading() as session:
            own: dict[int, float] = {}
            for job_run in session.query(orm.JobRun).all():
                own[job_run.workflow_run_id] = own.get(job_run.workflow_run_id, 0.0) + \
                    (job_run.ended_at - job_run.started_at).total_seconds()
        for run in live:
            statuses = [e for e in bench.client.list_events(key="together", event_type="WORKFLOW_RUN_STATUS_CHANGED")
                        if e.context and json.loads(e.context).get("run") == run.run_id]
            overheads.append((statuses[-1].create_time - statuses[0].create_time) / 1000 - own[run.run_id])
            events = run.job_events()
            for i in range(1, length):
                finished = next(e for e in events if e.key == f"together.j{i - 1}" and e.value == "FINISHED")
                running = next(e for e in events if e.key == f"together.j{i}" and e.value == "RUNNING")
                handoffs.append(running.create_time - finished.create_time)
        decisions = [s * 1000 for s in bench.scheduler.decision_seconds]
        return {"decision_p50": percentile(decisions, 50), "decision_p99": percentile(decisions, 99),
                "overhead": statistics.median(overheads), "handoff_p50": percentile(handoffs, 50),
                "handoff_p99": percentile(handoffs, 99), "wall": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=1000.0, help="events/s for the decision figure")
    parser.add_argument("--handoffs", type=int, default=20)
    parser.add_argument("--chain", type=int, default=200)
    parser.add_argument("--concurrent", type=int, default=10, help="live runs for the concurrent figure")
    parser.add_argument("--width", type=int, default=20, help="jobs per run for the concurrent figure")
    parser.add_argument("--only", choices=["decision", "handoff", "chain", "concurrent"], default=None)
    args = parser.parse_args()
    if args.only in (None, "decision"):
        decision_figures(args)
    if args.only in (None, "handoff"):
        handoff = [statistics.median(handoffs_ms(args.handoffs)) for _ in range(args.runs)]
        emit("handoff_p50", statistics.median(handoff), "ms", runs=[round(h, 1) for h in handoff])
    if args.only in (None, "chain"):
        figures = [chain_figures(args.chain) for _ in range(args.runs)]
        emit(f"chain{args.chain}_total", statistics.median(f[0] for f in figures), "s")
        emit(f"chain{args.chain}_overhead", statistics.median(f[1] for f in figures), "s",
             runs=[round(f[1], 2) for f in figures])
        emit(f"chain{args.chain}_job_run_p50", statistics.median(f[2] for f in figures), "s")
    if args.only in (None, "concurrent"):
        figures = [concurrent_figures(args.concurrent, args.width) for _ in range(args.runs)]
        name = f"concurrent{args.concurrent}x{args.width}"
        for metric, unit in (("decision_p50", "ms"), ("decision_p99", "ms"), ("overhead", "s"),
                             ("handoff_p50", "ms"), ("handoff_p99", "ms"), ("wall", "s")):
            values = [f[metric] for f in figures]
            emit(f"{name}_{metric}", statistics.median(values), unit, runs=[round(v, 2) for v in values])


def decision_figures(args) -> None:

    p50s, p99s = [], []
    for _ in range(args.runs):
        times = decision_latencies(args.events, args.rate)
        p50s.append(percentile(times, 50))
        p99s.append(percentile(times, 99))
    emit("decision_p50", statistics.median(p50s), "ms", events=args.events, rate=args.rate)
    emit("decision_p99", statistics.median(p99s), "ms", events=args.events, rate=args.rate,
         runs=[round(p, 2) for p in p99s])


if __name__ == "__main__":
    main()
