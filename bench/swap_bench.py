"""Model swap latency and the scoring rate during a swap, side by side with RESTART (BENCHMARKS.md "Swap").

A streaming Flink job of parallelism 2 scores ids written as 20-row files every 0.2 s with a pickled
model whose ``predict_batch`` stamps each row with its version and the time it scored it. ``--swaps``
model versions are validated ``--gap`` seconds apart under a SWAP rule; then, in a second workflow of the
same shape, ``--restarts`` versions under a RESTART rule. Figures, for each action:

- ``scored``: ``MODEL_VALIDATED`` (the event's commit time) → the first record scored by that version
  (the scoring instance's clock);
- ``committed``: the same → that record visible in the output (part file committed on a checkpoint);
- ``rate``: records scored in the 3 s after the event ÷ records scored in a steady 3 s before it.

Every id must be scored exactly once in each workflow (checked). Prints one JSON line per figure.

    .venv/bin/python bench/swap_bench.py --swaps 20 --restarts 5
"""

from __future__ import annotations

import argparse
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
from aiflow_notebook.engines.model_io import save_model  # noqa: E402
from aiflow_notebook.scheduler import EmbeddedScheduler  # noqa: E402
from aiflow_notebook.storage.part_files import read_lines  # noqa: E402
from aiflow_notebook.testing.sdk import reset_sdk  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])
WINDOW_S = 3.0


class Stamper:
    """Version ``tag``: each row → [id, tag, time scored]."""

    def __init__(self, tag: int) -> None:
        self.tag = tag

    def predict(self, row):
        return [row[0], self.tag, round(time.time(), 3)]

    def predict_batch(self, rows):
        now = round(time.time(), 3)
        return [[i, self.tag, now] for i in rows["id"].tolist()]


class Feeder(threading.Thread):
    def __init__(self, directory: Path) -> None:
        super().__init__(daemon=True)
        self.directory, self.count, self.halt = directory, 0, threading.Event()

    def run(self) -> None:
        batch = 0
        while not self.halt.is_set():
            staged = self.directory.parent / f"staged-{batch}"
            staged.write_text("".join(f"{i}\n" for i in range(batch * 20, batch * 20 + 20)))
            staged.rename(self.directory / f"b-{batch}.csv")
            batch += 1
            self.count = batch * 20
            self.halt.wait(0.2)


def measure(action: str, versions: int, gap: float, home: Path) -> dict[str, list[float]]:
    os.environ["AIFLOW_HOME"] = str(home)
    reset_sdk()
    data = home / "data"
    (data / "in").mkdir(parents=True)
    name = f"swap_bench_{action.lower()}"
    with af.workflow(name):
        with af.job_config("serve", engine="flink", streaming=True, parallelism=2):
            rows = af.read_dataset("in", uri=str(data / "in"), schema={"id": "int"})
            af.write_dataset(af.predict(rows, model="m"), "out", uri=str(data / "out"))
        af.action_on_model_version_event("serve", model="m", event_type="MODEL_VALIDATED", action=action)
    feeder = Feeder(data / "in")
    seen: dict[int, float] = {}  # version -> when its first record was visible in the output
    stop_watch = threading.Event()

    def watch() -> None:
        while not stop_watch.is_set():
            now = time.time()
            for line in read_lines(data / "out"):
                version = int(line.split(",")[1])
                seen.setdefault(version, now)
            stop_watch.wait(0.05)

    figures: dict[str, list[float]] = {"scored": [], "committed": [], "rate": []}
    with EmbeddedScheduler() as scheduler:
        store = scheduler.store
        store.register_model("m")

        def validate(tag: int):
            version = store.register_model_version("m", uri=save_model(Stamper(tag), "m")).version
            return store.update_model_version("m", version, "VALIDATED"), version

        validate(1)
        run = scheduler.submit(af.compile(name))
        try:
            run.wait_for("serve", "RUNNING", timeout=300)
            feeder.start()
            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            while 1 not in seen:
                time.sleep(0.1)
            time.sleep(gap)
            events = []
            for _ in range(versions):
                _, version = validate(len(events) + 2)
                event = run.client.list_events(key="m", event_type="MODEL_VALIDATED")[-1]
                events.append((version, event.create_time / 1000))
                time.sleep(gap)
            deadline = time.time() + 120
            while events[-1][0] not in seen and time.time() < deadline:
                time.sleep(0.1)
            time.sleep(3)
            feeder.halt.set()
            feeder.join()
            while len(read_lines(data / "out")) < feeder.count and time.time() < deadline + 60:
                time.sleep(0.2)
        finally:
            stop_watch.set()
            run.stop()
    rows = [line.split(",") for line in read_lines(data / "out")]
    ids = [int(r[0]) for r in rows]
    assert sorted(ids) == list(range(feeder.count)), f"{action}: {len(ids)} scores for {feeder.count} ids"
    first_scored: dict[int, float] = {}
    times = sorted(float(r[2]) for r in rows)
    for _, version, at in ((r[0], int(r[1]), float(r[2])) for r in rows):
        first_scored[version] = min(at, first_scored.get(version, at))
    for version, at in events:
        figures["scored"].append(first_scored[version] - at)
        figures["committed"].append(seen[version] - at)
        before = sum(1 for t in times if at - WINDOW_S <= t < at)
        after = sum(1 for t in times if at <= t < at + WINDOW_S)
        figures["rate"].append(after / before if before else float("nan"))
    return figures


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--swaps", type=int, default=20)
    parser.add_argument("--restarts", type=int, default=5)
    parser.add_argument("--gap", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for action, count in (("SWAP", args.swaps), ("RESTART", args.restarts)):
            if count <= 0:
                continue
            figures = measure(action, count, args.gap if action == "SWAP" else max(args.gap, 25.0),
                              Path(tmp) / action.lower())
            for name in ("scored", "committed"):
                emit("swap", f"{action.lower()}_{name}_p50", statistics.median(figures[name]), "s", n=count)
                emit("swap", f"{action.lower()}_{name}_p99", percentile(figures[name], 0.99), "s", n=count)
            rates = [r for r in figures["rate"] if r == r]
            emit("swap", f"{action.lower()}_rate_during_ratio", statistics.median(rates) if rates else float("nan"),
                 "ratio", n=len(rates), target=">= 0.8" if action == "SWAP" else "")
            emit("swap", f"{action.lower()}_rate_during_min", min(rates) if rates else float("nan"), "ratio")


if __name__ == "__main__":
    main()
