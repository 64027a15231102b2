"""Remote mode benchmark: the model center and uploads over an authenticated connection.

    .venv/bin/python bench/remote_bench.py [--runs 3] [--ops 200] [--mb 20]

A real `aiflow server start --curve` process (SQLite in its own home) and this process connected to it
with `af.connect` (CURVE). Prints one JSON line per figure, the median of --runs runs, each against a
fresh server:
- register: `af.register_model_version` round trip p50/p99 (ms), --ops versions of one model;
- latest: `af.get_latest_model_version` round trip p50/p99 (ms);
- the same two on a local SQLite store in this process, side by side;
- upload: MB/s of `af.save_model` for a --mb MB payload (fresh bytes each run: never a no-op), and the
  time of uploading it again (known by its hash: nothing sent).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from benchlib import emit, percentile

import aiflow_notebook as af
from aiflow_notebook.cli import main as cli
from aiflow_notebook.events.auth import create_server_keys
from aiflow_notebook.meta import MetadataStore
from aiflow_notebook.testing.event_server import EventServerProcess


def _round_trips(store, ops: int) -> tuple[list[float], list[float]]:
    store.register_model("bench")
    register, latest = [], []
    for i in range(ops):
        started = time.perf_counter()
        store.register_model_version("bench", uri=f"file:///models/bench/{i}", metrics={"loss": 0.1})
        register.append((time.perf_counter() - started) * 1000)
    for _ in range(ops):
        started = time.perf_counter()
        store.get_latest_model_version("bench")
        latest.append((time.perf_counter() - started) * 1000)
    return register, latest


def one_run(ops: int, megabytes: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="aiflow-remote-bench-") as tmp:
        tmp = Path(tmp)
        keys, home = tmp / "keys", tmp / "server_home"
        home.mkdir()
        create_server_keys(keys)
        cli(["server", "keys", str(keys), "--client", "bench"])
        server = EventServerProcess(f"sqlite:///{home / 'meta.db'}", extra_args=["--curve", str(keys), "--home",
                                                                                  str(home), "--no-scheduler"],
                                    env={"AIFLOW_HOME": str(home)}).start()
        try:
            af.connect(server.url, auth=(str(keys / "server.key"), str(keys / "bench.key_secret")))
            register, latest = _round_trips(af.default_store(), ops)
            figures.update(remote_register_p50=percentile(register, 50), remote_register_p99=percentile(register, 99),
                           remote_latest_p50=percentile(latest, 50), remote_latest_p99=percentile(latest, 99))
            payload = os.urandom(megabytes << 20)
            started = time.perf_counter()
            af.save_model(payload, "bench")
            figures["upload_mb_per_s"] = megabytes / (time.perf_counter() - started)
            started = time.perf_counter()
            af.save_model(payload, "bench")
            figures["upload_again_ms"] = (time.perf_counter() - started) * 1000
        finally:
            af.disconnect()
            server.stop()
        with MetadataStore(f"sqlite:///{tmp / 'local.db'}") as store:
            register, latest = _round_trips(store, ops)
        figures.update(local_register_p50=percentile(register, 50), local_register_p99=percentile(register, 99),
                       local_latest_p50=percentile(latest, 50), local_latest_p99=percentile(latest, 99))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--ops", type=int, default=200)
    parser.add_argument("--mb", type=int, default=20)
    args = parser.parse_args()
    runs = [one_run(args.ops, args.mb) for _ in range(args.runs)]
    for metric in runs[0]:
        unit = "MB/s" if metric.endswith("per_s") else "ms"
        emit("remote", metric, statistics.median(run[metric] for run in runs), unit, runs=args.runs, ops=args.ops,
             mb=args.mb)


if __name__ == "__main__":
    main()
