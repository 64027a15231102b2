"""The quickstart's ``prep`` job in Flink's two Python execution modes, side by side.

The job of notebooks/00_quickstart.ipynb's ``prep`` (a Flink batch job at parallelism 2: parse 200,000
click-log rows, two ``group_by`` passes computing leave-one-out click rates per user and per item, split
into train/test), run through the public API once in the default process mode (Python functions in a
separate Python worker) and once with ``flink.python.execution-mode=thread`` (inside Flink's JVM), in
alternation, ``--runs`` times each. The figure is the job's wall time (submission → FINISHED, JVM start
included). Both outputs must be identical.

    .venv/bin/python bench/thread_mode_bench.py --runs 3
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cloudpickle
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import emit  # noqa: E402

import aiflow_notebook as af  # noqa: E402
from aiflow_notebook.storage.part_files import read_lines  # noqa: E402
from aiflow_notebook.testing.sdk import reset_sdk  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])

COLUMNS = {"id": "int", "user": "int", "item": "int", "x1": "float", "x2": "float", "x3": "float", "click": "int"}


def smoothed_logit(clicks, shown):
    rate = (clicks + 0.2 * 20.0) / (shown + 20.0)
    return float(np.log(rate / (1 - rate)))


def add_rate(rows):
    clicks = sum(r[6] for r in rows)
    return [r + [round(smoothed_logit(clicks - r[6], len(rows) - 1), 4)] for r in rows]


def train_rows(row):
    return [row[3], row[4], row[5], row[7], row[8], row[6]] if row[0] % 5 else None


def test_rows(row):
    return [row[3], row[4], row[5], row[7], row[8], row[6]] if row[0] % 5 == 0 else None


def run_prep(data: Path, name: str, properties: dict) -> tuple[float, str]:
    reset_sdk()
    with af.workflow(name):
        with af.job_config("prep", engine="flink", parallelism=2, properties=properties):
            raw = af.read_dataset("clicks", uri=str(data / "clicks"), schema=COLUMNS)
            by_user = af.transform(raw, add_rate, name="user_rate", group_by=1)
            by_item = af.transform(by_user, add_rate, name="item_rate", group_by=2)
            af.write_dataset(af.transform(by_item, train_rows), "train_set", uri=str(data / name / "train"))
            af.write_dataset(af.transform(by_item, test_rows), "test_set", uri=str(data / name / "test"))
    began = time.monotonic()
    state = af.submit(name).wait(timeout=1200)
    seconds = time.monotonic() - began
    if state != "FINISHED":
        raise SystemExit(f"prep ({name}) ended {state}")
    lines = sorted(sorted(read_lines(data / name / "train"))) + sorted(sorted(read_lines(data / name / "test")))
    return seconds, hashlib.sha256("\n".join(lines).encode()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rows", type=int, default=200_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aiflow-thread-bench-") as tmp:
        data = Path(tmp)
        os.environ["AIFLOW_HOME"] = str(data / "home")
        rng = np.random.default_rng(1)
        n = args.rows
        rows = np.column_stack([np.arange(n), rng.integers(0, 2000, n), rng.integers(0, 400, n),
                                rng.normal(size=(n, 3)).round(3), rng.integers(0, 2, n)])
        (data / "clicks").mkdir()
        np.savetxt(data / "clicks" / "day-1.csv", rows, fmt=["%d", "%d", "%d", "%.3f", "%.3f", "%.3f", "%d"],
                   delimiter=",")
        modes = {"process": {}, "thread": {"flink.python.execution-mode": "thread"}}
        seconds: dict[str, list[float]] = {mode: [] for mode in modes}
        digests = set()
        for run in range(args.runs):
            for mode, properties in modes.items():
                took, digest = run_prep(data, f"{mode}{run}", properties)
                seconds[mode].append(took)
                digests.add(digest)
                print(f"run {run + 1} {mode}: {took:.1f} s", file=sys.stderr, flush=True)
        if len(digests) != 1:
            raise SystemExit("the two modes wrote different outputs")
        for mode, values in seconds.items():
            emit("thread_mode", f"prep_{mode}_s", statistics.median(values), "s", runs=values, rows=n)
        emit("thread_mode", "speedup", statistics.median(seconds["process"]) / statistics.median(seconds["thread"]), "x")
        reset_sdk()


if __name__ == "__main__":
    main()
