"""Metadata store benchmark (../shared/BENCHMARKS.md, "Metadata store").

    .venv/bin/python bench/meta_bench.py [--runs 3] [--per-writer 500] [--no-postgres]

Prints one JSON line per figure: the median of --runs runs, each on a fresh database.
- register: model-version registrations/s by 1 and 4 processes (all on one model), SQLite and PostgreSQL.
- lookup: get_latest_model_version p50/p99 with 10,000 versions of one model.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path

from benchlib import emit, percentile

from aiflow_notebook.meta import MetadataStore, orm
from aiflow_notebook.sandbox.postgres import PostgresServer


def _writer(url: str, count: int, barrier, queue) -> None:
    with MetadataStore(url) as store:
        store.get_model("bench")  # connect and warm up before the clock starts
        barrier.wait()
        for i in range(count):
            store.register_model_version("bench", uri=f"file:///models/bench/{i}", metrics={"loss": 0.1})
    queue.put(time.perf_counter())


def registrations_per_second(url: str, writers: int, per_writer: int) -> float:
    with MetadataStore(url) as store:
        store.register_model("bench")
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(writers + 1), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(url, per_writer, barrier, queue)) for _ in range(writers)]
    for proc in procs:
        proc.start()
    barrier.wait()
    started = time.perf_counter()
    finished = max(queue.get(timeout=600) for _ in procs)
    for proc in procs:
        proc.join()
    with MetadataStore(url) as store:
        versions = [v.version for v in store.list_model_versions("bench")]
    assert versions == list(range(1, writers * per_writer + 1)), "versions not unique and gap-free"
    return writers * per_writer / (finished - started)


def lookup_latencies_ms(url: str, versions: int, lookups: int) -> list[float]:
    with MetadataStore(url) as store:
        model = store.register_model("bench")

        def fill(session) -> None:
            session.add_all(orm.ModelVersion(model_id=model.id, version=v, uri=f"file:///m/{v}",
                                             stage="VALIDATED" if v % 10 == 0 else "GENERATED")
                            for v in range(1, versions + 1))

        store._db.transaction(fill)  # bulk set-up; the timed part is the public lookup
        for _ in range(50):
            store.get_latest_model_version("bench")
        times = []
        for i in range(lookups):
            stage = "VALIDATED" if i % 2 else None
            t0 = time.perf_counter()
            latest = store.get_latest_model_version("bench", stage)
            times.append((time.perf_counter() - t0) * 1000)
            assert latest.version == versions
        return times



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--per-writer", type=int, default=500)
    parser.add_argument("--versions", type=int, default=10_000)
    parser.add_argument("--lookups", type=int, default=2_000)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()

    pg = None if args.no_postgres else PostgresServer(durable=True).start()
    counter = iter(range(10**6))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            def fresh(kind: str) -> str:
                n = next(counter)
                return f"sqlite:///{Path(tmp) / f'b{n}.db'}" if kind == "sqlite" else pg.create_database(f"b{n}")

            kinds = ["sqlite"] + ([] if pg is None else ["postgresql"])
            for kind in kinds:
                for writers in (1, 4):
                    rates = [registrations_per_second(fresh(kind), writers, args.per_writer) for _ in range(args.runs)]
                    emit("meta", f"register_{kind}_{writers}proc", statistics.median(rates), "registrations/s",
                         runs=[round(r, 1) for r in rates])
            for kind in kinds:
                p50s, p99s = [], []
                for _ in range(args.runs):
                    times = lookup_latencies_ms(fresh(kind), args.versions, args.lookups)
                    p50s.append(percentile(times, 50))
                    p99s.append(percentile(times, 99))
                emit("meta", f"latest_version_{kind}_p50", statistics.median(p50s), "ms", versions=args.versions)
                emit("meta", f"latest_version_{kind}_p99", statistics.median(p99s), "ms", versions=args.versions)
    finally:
        if pg is not None:
            pg.stop()


if __name__ == "__main__":
    main()
