"""Cancel of a dl_on_flink job: how long until every node child process is gone (issue 13, bug 2).

    .venv/bin/python bench/dl_cancel_bench.py [--runs 3] [--workers 2]

Each run puts a PyTorch cluster of --workers nodes whose entries never return into a local PyFlink job
(``execute_async``), waits until every node's child process is in its entry, cancels the job
(``JobClient.cancel()``) and measures the seconds from the cancel until no node child of this process
is alive. Target: ≤ 3 s. Prints one JSON line per figure: the median and the worst of --runs runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cloudpickle
import psutil
from benchlib import emit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CHILD_MODULE = "dl_on_flink.framework.child"


def waits_forever(ctx) -> None:
    Path(ctx.get_property("ready"), f"{ctx.get_index()}").touch()
    time.sleep(3600)


def node_children() -> list[psutil.Process]:
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if CHILD_MODULE in " ".join(proc.cmdline()):
                found.append(proc)
        except psutil.Error:
            pass
    return found


def one_cancel(workers: int) -> float:
    from dl_on_flink.pytorch import PyTorchClusterConfig, train
    from dl_on_flink.testing import local_env

    ready = Path(tempfile.mkdtemp(prefix="dl-cancel-"))
    config = (PyTorchClusterConfig.new_builder().set_world_size(workers).set_node_entry(waits_forever)
              .set_property("ready", ready).build())
    env = local_env()
    train(env, config)
    client = env.execute_async("dl cancel bench")
    deadline = time.monotonic() + 300
    while len(list(ready.iterdir())) < workers:
        if time.monotonic() > deadline:
            raise TimeoutError("the cluster did not start within 300 s")
        time.sleep(0.05)
    client.cancel().result()
    cancelled = time.monotonic()
    while node_children():
        if time.monotonic() - cancelled > 120:
            raise TimeoutError(f"node children still alive 120 s after the cancel: {node_children()}")
        time.sleep(0.02)
    return time.monotonic() - cancelled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    seconds = [one_cancel(args.workers) for _ in range(args.runs)]
    emit("dl_cancel", "children_gone_after_cancel_median", statistics.median(seconds), "s",
         runs=args.runs, workers=args.workers)
    emit("dl_cancel", "children_gone_after_cancel_max", max(seconds), "s", runs=args.runs, workers=args.workers)


if __name__ == "__main__":
    main()
