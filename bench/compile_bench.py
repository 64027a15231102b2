"""Notebook SDK benchmark (../shared/BENCHMARKS.md, "Notebook SDK").

    .venv/bin/python bench/compile_bench.py [--runs 5]

Graphs of 10 / 100 / 1,000 nodes spread over 1 / 10 / 100 jobs: in each job a chain (a read_dataset, then
transforms each reading the previous one), and a job-status control edge between consecutive jobs.
Prints one JSON line per figure, the median of --runs runs:
- define_compile_ms: define the graph with the SDK and ``af.compile()`` it (checks, split, translate,
  code capture of the user functions);
- render_ms: ``Workflow.to_graphviz()`` and Graphviz's ``dot`` laying it out as SVG (when ``dot`` exists);
- total_ms: both; the targets are <= 50 ms for 100 nodes and <= 500 ms for 1,000 nodes.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time

from benchlib import emit

import aiflow_notebook as af
from aiflow_notebook.core import rendering
from aiflow_notebook.sdk import graph as _graph

CONFIGS = [(10, 1), (10, 10), (100, 1), (100, 10), (100, 100), (1000, 1), (1000, 10), (1000, 100)]


def step(rows):
    """The user function of every transform (defined in __main__, so it is captured by value)."""
    return [row * 2 for row in rows]



def define(nodes: int, jobs: int) -> None:
    per_job = nodes // jobs
    with af.workflow("bench"):
        for j in range(jobs):
            with af.job_config(f"job{j}"):
                channel = af.read_dataset(f"data{j}")
                for _ in range(per_job - 1):
                    channel = af.transform(channel, step)
            if j:
                af.action_on_job_status(f"job{j}", upstream=f"job{j - 1}")


def one_run(nodes: int, jobs: int, render: bool) -> tuple[float, float | None]:
    _graph.clear_session()
    started = time.perf_counter()
    define(nodes, jobs)
    workflow = af.compile("bench")
    compiled = time.perf_counter()
    assert workflow.node_count == nodes and len(workflow.jobs) == jobs
    if not render:
        return (compiled - started) * 1000, None
    svg = rendering.render_svg(workflow.to_graphviz())
    rendered = time.perf_counter()
    assert svg is not None and ">job0" in svg
    return (compiled - started) * 1000, (rendered - compiled) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    has_dot = shutil.which("dot") is not None
    one_run(10, 1, has_dot)  # warm up imports (cloudpickle, graphviz)
    for nodes, jobs in CONFIGS:
        runs = [one_run(nodes, jobs, has_dot) for _ in range(args.runs)]
        compile_ms = statistics.median(r[0] for r in runs)
        config = {"nodes": nodes, "jobs": jobs, "runs": args.runs}
        emit("compile", "define_compile_ms", compile_ms, "ms", **config)
        if has_dot:
            render_ms = statistics.median(r[1] for r in runs)
            emit("compile", "render_ms", render_ms, "ms", **config)
            emit("compile", "total_ms", statistics.median(r[0] + r[1] for r in runs), "ms", **config)
    _graph.clear_session()


if __name__ == "__main__":
    main()
