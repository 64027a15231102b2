"""Streaming restart downtime: a restart request → the first record processed by the new start.

A streaming Flink job (local mini-cluster) tags each record with its job run id and the time it processed
it; a writer drops a small file into the monitored directory every 0.2 s. The job is restarted ``--runs``
times (``run.restart_job``, the same RESTART action a ``MODEL_VALIDATED`` rule takes); for each restart:

- ``stop``: the request → the old job's KILLED (stop-with-savepoint, sink committed);
- ``running``: the request → the new job's RUNNING (its process started);
- ``downtime``: the request → the first record processed by the new start (its JVM up, the program
  restored from the savepoint, the backlog read);
- ``first_start`` (once, for comparison): the submission → the first record of the first (fresh) start.

Every record must be written exactly once (checked at the end). Prints one JSON line per figure.

    .venv/bin/python bench/restart_bench.py --runs 3
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import cloudpickle

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import emit  # noqa: E402

import aiflow_notebook as af  # noqa: E402
from aiflow_notebook.storage.part_files import read_lines  # noqa: E402
from aiflow_notebook.testing.waiting import wait_for  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])
JOB = "serve"


def stamp(row):
    return [row[0], int(os.environ["AIFLOW_JOB_RUN_ID"]), round(time.time(), 3)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["AIFLOW_HOME"] = str(Path(tmp) / "home")
        data = Path(tmp) / "data"
        (data / "in").mkdir(parents=True)
        with af.workflow("restart_bench"):
            with af.job_config(JOB, engine="flink", streaming=True):
                rows = af.read_dataset("ticks", uri=str(data / "in"), schema={"n": "int"})
                af.write_dataset(af.transform(rows, stamp, name="stamp"), "stamped", uri=str(data / "out"))
        submitted = time.time()
        run = af.submit("restart_bench")
        stop_writing = threading.Event()
        written = [0]

        def writer() -> None:
            while not stop_writing.wait(0.2):
                tmp_file = data / "in" / f".{written[0]}.tmp"
                tmp_file.write_text(f"{written[0]}\n")
                os.replace(tmp_file, data / "in" / f"{written[0]}.csv")
                written[0] += 1

        def lines() -> list[list[float]]:
            return [[float(v) for v in line.split(",")] for line in sorted(read_lines(data / "out"))]

        def events(state: str) -> list[tuple[float, dict]]:
            return [(e.create_time / 1000, json.loads(e.context)) for e in run.job_events()
                    if e.key.endswith(f".{JOB}") and e.value == state]

        thread = threading.Thread(target=writer, daemon=True)
        try:
            wait_for(lambda: run.jobs()[JOB] == "RUNNING", timeout=180, what="the job to run")
            thread.start()
            wait_for(lambda: len(lines()) > 5, timeout=180, what="the first records")
            first_start = min(r[2] for r in lines()) - submitted
            figures: dict[str, list[float]] = {"stop": [], "running": [], "downtime": []}
            for index in range(args.runs):
                time.sleep(2)
                requested = time.time()
                run.restart_job(JOB)
                wait_for(lambda index=index: len(events("RUNNING")) == index + 2, timeout=180, what="the new start")
                new_run = events("RUNNING")[-1][1]["job_run"]
                wait_for(lambda new_run=new_run: any(r[1] == new_run for r in lines()), timeout=180,
                         what="a record of the new start")
                killed = events("KILLED")[-1][1]
                if killed.get("savepoint") is None:
                    raise AssertionError(f"the stop took no savepoint: {killed}")
                figures["stop"].append(events("KILLED")[-1][0] - requested)
                figures["running"].append(events("RUNNING")[-1][0] - requested)
                figures["downtime"].append(min(r[2] for r in lines() if r[1] == new_run) - requested)
            stop_writing.set()
            thread.join()
            wait_for(lambda: len(lines()) >= written[0], timeout=60, what="every record")
            run.stop()
            numbers = sorted(int(r[0]) for r in lines())
            if numbers != list(range(written[0])):
                seen = collections.Counter(numbers)
                raise AssertionError(f"of {written[0]} records, lost: {sorted(set(range(written[0])) - set(seen))}, "
                                     f"twice: {[(n, [r[1:] for r in lines() if r[0] == n]) for n, c in seen.items() if c > 1]}; "
                                     f"stops: {[c for _, c in events('KILLED')]}")
            emit("restart", "first_start", first_start, "s", what="submit -> first record of the first start")
            for metric, values in figures.items():
                emit("restart", metric, statistics.median(values), "s", runs=args.runs,
                     all=[round(v, 2) for v in values], records=written[0])
        finally:
            stop_writing.set()
            run.stop()


if __name__ == "__main__":
    main()
