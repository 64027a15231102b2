"""Properties of compile over random graphs: topological order, round trip, stable hash, re-run idempotence."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

import aiflow_notebook as af
from aiflow_notebook.testing.sdk import reset_sdk


def step(*values):
    return values


# a graph: per job, per node, the indexes of earlier nodes of the same job that it reads
graphs = st.lists(st.lists(st.lists(st.integers(min_value=0, max_value=30), max_size=3), min_size=1, max_size=8),
                  min_size=1, max_size=5)
rules = st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), max_size=6)


def define(shape: list[list[list[int]]], rule_pairs: list[tuple[int, int]]) -> None:
    with af.workflow("prop"):
        for j, nodes in enumerate(shape):
            with af.job_config(f"job{j}", engine=("python", "flink")[j % 2]):
                channels = [af.read_dataset(f"in{j}")]
                for reads in nodes[1:]:
                    inputs = [channels[i % len(channels)] for i in reads]
                    channels.append(af.transform(inputs, step))
                if j:
                    af.write_dataset(channels[-1], f"in{j - 1}")  # job j feeds job j-1 through a dataset
        for target, upstream in rule_pairs:
            if target < len(shape) and upstream < len(shape):
                af.action_on_job_status(f"job{target}", upstream=f"job{upstream}")


@settings(max_examples=40, deadline=None)
@given(graphs, rules)
def test_compile_orders_nodes_and_round_trips(shape, rule_pairs):
    reset_sdk()
    define(shape, rule_pairs)
    workflow = af.compile("prop")
    assert sorted(workflow.jobs) == sorted(f"job{j}" for j in range(len(shape)))
    for job in workflow.jobs.values():
        seen: set[str] = set()
        for node in job.nodes:
            assert all(source in seen for source, _ in node.inputs)
            seen.add(node.name)
    order = list(workflow.jobs)
    for j in range(1, len(shape)):  # dataset hand-off: the writer comes first unless rules make a cycle
        if not rule_pairs:
            assert order.index(f"job{j}") < order.index(f"job{j - 1}")
    again = af.Workflow.from_bytes(workflow.to_bytes())
    assert again == workflow and again.control_edges == workflow.control_edges
    assert af.compile("prop").content_hash == workflow.content_hash
    reset_sdk()
    define(shape, rule_pairs)
    assert af.compile("prop").content_hash == workflow.content_hash
    reset_sdk()
