"""Compile: split per job, translate into jobs and rules; Workflow is immutable, serializable, stably hashed,
and draws as the split graph (SVG, or DOT text when `dot` is missing)."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import graphviz
import pytest
from sdk_support import notebook_namespace

import aiflow_notebook as af
from aiflow_notebook.core import rendering
from aiflow_notebook.testing.sdk import reset_sdk

REPO = Path(__file__).resolve().parents[1]

# The DESIGN §2 workflow, as notebook code (functions in __main__, a helper in "another cell").
CTR = """
    import aiflow_notebook as af

    SCHEMA = ["f0", "f1", "clicked"]

    def scale(value):
        return float(value) * 2

    def featurize(rows):
        return [[scale(v) for v in row] for row in rows]

    def train_fn(rows):
        return len(rows)

    af.workflow("ctr", project="demo")
    with af.job_config("prep", engine="flink", parallelism=2):
        raw = af.read_dataset("clicks", uri="data/clicks.csv", schema=SCHEMA)
        feats = af.transform(raw, featurize, name="featurize")
        af.write_dataset(feats, "features", uri="data/features.csv")
    with af.job_config("train", engine="pytorch", properties={"workers": 2}):
        af.train(af.read_dataset("features"), trainer=train_fn, model="ctr", name="train")
    with af.job_config("serve", engine="flink", streaming=True):
        af.write_dataset(af.predict(af.read_dataset("click_stream"), model="ctr"), "scores")
    af.action_on_job_status("train", upstream="prep")
    af.action_on_model_version_event("serve", model="ctr", event_type="MODEL_VALIDATED", action="RESTART")
"""
NAMES = ["prep", "train", "serve", "read_clicks", "featurize", "write_features", "read_features",
         "read_click_stream", "predict_ctr", "write_scores"]


@pytest.fixture
def ctr():
    notebook_namespace(CTR)
    return af.compile()


def test_split_and_translate_the_design_workflow(ctr):
    assert list(ctr.jobs) == ["prep", "train", "serve"]
    prep, train, serve = ctr.jobs.values()
    assert (prep.engine, prep.parallelism, prep.platform, prep.streaming) == ("flink", 2, "local", False)
    assert [(n.kind, n.name, n.inputs) for n in prep.nodes] == [
        ("read_dataset", "read_clicks", ()), ("transform", "featurize", (("read_clicks", 0),)),
        ("write_dataset", "write_features", (("featurize", 0),))]
    assert prep.inputs == (af.DatasetSpec("clicks", "data/clicks.csv", ["f0", "f1", "clicked"]),)
    assert prep.outputs == (af.DatasetSpec("features", "data/features.csv"),)
    # reading "features" by name alone resolves to the dataset prep writes
    assert train.inputs == (af.DatasetSpec("features", "data/features.csv"),)
    assert (train.engine, dict(train.properties), train.nodes[-1].model) == ("pytorch", {"workers": 2}, "ctr")
    assert serve.streaming and serve.inputs == (af.DatasetSpec("click_stream"),)  # external: no uri yet
    assert [n.has_fn for n in serve.nodes] == [False, False, False]
    assert [(e.job, e.label) for e in ctr.control_edges] == [("train", "FINISHED → START"),
                                                             ("serve", "MODEL_VALIDATED → RESTART")]


def test_jobs_come_in_topological_order_of_datasets_and_job_status_rules():
    with af.workflow("w"):
        with af.job_config("consumer"):
            af.read_dataset("made_by_producer")
        with af.job_config("last"):
            af.read_dataset("x")
        with af.job_config("producer"):
            af.write_dataset(af.read_dataset("raw"), "made_by_producer")
        af.action_on_job_status("last", upstream="consumer")
    assert list(af.compile("w").jobs) == ["producer", "consumer", "last"]
    with af.workflow("w"):
        af.action_on_job_status("producer", upstream="last")  # a loop of rules is allowed (continuous training)
    assert list(af.compile("w").jobs) == ["consumer", "last", "producer"]  # cycle: declaration order


def test_workflow_round_trips_through_bytes_without_unpickling(ctr):
    data = ctr.to_bytes()
    document = json.loads(data)
    assert document["format"] == "aiflow-workflow/1" and document["content_hash"] == ctr.content_hash
    again = af.Workflow.from_bytes(data)
    assert again == ctr and again.content_hash == ctr.content_hash
    assert again.jobs["prep"].payload == ctr.jobs["prep"].payload
    assert again.control_edges == ctr.control_edges
    assert pickle.loads(pickle.dumps(ctr)) == ctr


def test_from_bytes_refuses_other_or_altered_documents(ctr):
    with pytest.raises(af.WorkflowFormatError, match="invalid JSON"):
        af.Workflow.from_bytes(b"\x80not json")
    with pytest.raises(af.WorkflowFormatError, match="format"):
        af.Workflow.from_bytes(b'{"format": "something-else"}')
    document = json.loads(ctr.to_bytes())
    document["jobs"][0]["parallelism"] = 7
    with pytest.raises(af.WorkflowFormatError, match="hash mismatch"):
        af.Workflow.from_bytes(json.dumps(document).encode())


def test_workflow_is_immutable(ctr):
    with pytest.raises(AttributeError):
        ctr.name = "other"
    with pytest.raises(TypeError, match="immutable"):
        ctr.jobs["x"] = None
    with pytest.raises(TypeError, match="immutable"):
        ctr.jobs["prep"].properties["workers"] = 3


def test_content_hash_is_stable_on_recompile_and_changes_with_the_definition(ctr):
    assert af.compile().content_hash == ctr.content_hash
    with af.job_config("serve", engine="flink", streaming=True, parallelism=3):
        pass
    assert af.compile().content_hash != ctr.content_hash


def test_content_hash_follows_the_code_of_helpers_in_other_cells():
    hashes = []
    for body in ("float(value) * 2", "float(value) * 3"):
        reset_sdk()
        notebook_namespace(CTR.replace("float(value) * 2", body))
        hashes.append(af.compile().content_hash)
    assert hashes[0] != hashes[1]


@pytest.mark.slow
def test_content_hash_is_the_same_in_two_fresh_processes(tmp_path):
    script = tmp_path / "define.py"
    script.write_text(textwrap.dedent(CTR) + "\nprint(af.compile().content_hash)\n")
    hashes = {subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True,
                             timeout=120, cwd=tmp_path, env={**__import__("os").environ,
                                                             "PYTHONHASHSEED": seed}).stdout.strip()
              for seed in ("1", "2")}
    assert len(hashes) == 1 and len(hashes.pop()) == 64


def test_split_graph_svg_shows_every_job_and_node_with_solid_data_and_dashed_control_edges(ctr):
    dot = ctr.to_graphviz(highlight="train")
    source = dot.source
    assert source.count("subgraph cluster_") == 3
    assert "FINISHED → START" in source and "MODEL_VALIDATED → RESTART" in source
    assert source.count('style="dashed"') == 2
    assert 'shape="cylinder"' in source and 'shape="box3d"' in source and 'shape="parallelogram"' in source
    assert 'penwidth="3"' in source  # the highlighted job
    bundle = ctr._repr_mimebundle_()
    svg = bundle["image/svg+xml"]
    for name in NAMES:
        assert f">{name}<" in svg, name
    assert "flink · parallelism 2" in svg and "pytorch · parallelism 1 · workers 2" in svg
    assert "streaming" in svg and "stroke-dasharray" in svg


def test_event_rules_draw_event_boxes_and_a_join(ctr):
    af.action_on_events("serve", af.MeetAll(af.EventCondition("a", "1"), af.EventCondition("b")), action="STOP")
    af.action_on_event("prep", "tick", value_condition="UPDATED")
    source = af.compile().to_graphviz().source
    assert 'label="ALL"' in source and "event\\na=1" in source and "event\\ntick updated" in source


def test_without_dot_the_graph_is_dot_text_with_a_note(ctr, monkeypatch):
    def missing(*args, **kwargs):
        raise graphviz.ExecutableNotFound(["dot"])

    monkeypatch.setattr(graphviz.Digraph, "pipe", missing)
    bundle = ctr._repr_mimebundle_()
    assert "image/svg+xml" not in bundle
    assert bundle["text/plain"].startswith(rendering.MISSING_DOT_NOTE)
    for name in NAMES:
        assert name in bundle["text/plain"]


def test_job_status_colours_for_live_views(ctr):
    source = ctr.to_graphviz(status={"prep": "FINISHED", "train": "RUNNING"}).source
    assert "[FINISHED]" in source and "[RUNNING]" in source


def test_a_job_runs_its_nodes_in_process_from_its_payload(ctr, tmp_path):
    prep = ctr.jobs["prep"]
    assert set(prep.load_callables()) == {"featurize"}

    class Memory:
        def __init__(self):
            self.written = {}

        def read_dataset(self, dataset):
            return [["1", "2", "0"], ["3", "4", "1"]]

        def write_dataset(self, dataset, data):
            self.written[dataset.name] = data

    memory = Memory()
    results = prep.run(memory)
    assert results["featurize"] == [[2.0, 4.0, 0.0], [6.0, 8.0, 2.0]]
    assert memory.written == {"features": [[2.0, 4.0, 0.0], [6.0, 8.0, 2.0]]}


def test_local_context_reads_and_writes_files_and_passes_context_to_functions_that_ask(tmp_path):
    (tmp_path / "in.csv").write_text("1,2\n3,4\n")
    ns = notebook_namespace("""
        def total(rows, context):
            return {"job": context.job, "node": context.node, "sum": sum(int(v) for row in rows for v in row)}
    """)
    with af.workflow("w"), af.job_config("j"):
        summed = af.transform(af.read_dataset("in", uri=f"file://{tmp_path / 'in.csv'}"), ns["total"])
        af.write_dataset(summed, "out", uri=str(tmp_path / "out.json"))
    results = af.compile("w").jobs["j"].run()
    assert results["total"] == {"job": "j", "node": "total", "sum": 10}
    assert json.loads((tmp_path / "out.json").read_text()) == {"job": "j", "node": "total", "sum": 10}


def test_a_node_without_function_and_no_builtin_fails_clearly(ctr):
    from aiflow_notebook.sdk.job_runtime import JobRunError, LocalContext

    context = LocalContext(datasets={"click_stream": [1, 2]})
    with pytest.raises(JobRunError, match="node 'predict_ctr' \\(predict\\) in job 'serve' has no function"):
        ctr.jobs["serve"].run(context)


def test_engine_names_are_extensible():
    from aiflow_notebook.core.engine_names import known_engines, register_engine_name

    with af.workflow("w"), af.job_config("j", engine="ray"):
        af.read_dataset("d")
    with pytest.raises(af.UnknownEngineError):
        af.compile("w")
    register_engine_name("ray")
    try:
        assert af.compile("w").jobs["j"].engine == "ray" and "ray" in known_engines()
    finally:
        from aiflow_notebook.core import engine_names

        engine_names._known.pop("ray")


@pytest.mark.slow
def test_importing_the_sdk_stays_cheap():
    code = "import sys, aiflow_notebook; print(sorted(m for m in ('IPython', 'pyflink', 'cloudpickle', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120,
                         cwd=REPO).stdout.strip()
    assert out == "[]"


def test_a_schema_keeps_its_column_order_through_serialization():
    import aiflow_notebook as af
    from aiflow_notebook.sdk.workflow import Workflow

    with af.workflow("ordered"):
        with af.job_config("j"):
            af.write_dataset(af.read_dataset("d", uri="d.csv", schema={"user": "str", "clicks": "int"}), "e", uri="e.csv")
    restored = Workflow.from_bytes(af.compile("ordered").to_bytes())
    assert list(restored.jobs["j"].nodes[0].dataset.schema) == ["user", "clicks"]
