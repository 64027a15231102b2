"""Every validation error names its culprit (node, job, control edge, captured global) and where it was made."""

from __future__ import annotations

import pytest
from sdk_support import notebook_namespace

import aiflow_notebook as af


def ident(x):
    return x


def test_a_cycle_names_its_nodes_in_order():
    with af.workflow("w"):
        with af.job_config("j"):
            raw = af.read_dataset("d")
            a = af.transform(raw, ident, name="a")
            b = af.transform(a, ident, name="b")
        with af.job_config("j"):  # a later cell redefines "a" to read "b": channels re-wire by name
            af.transform(b, ident, name="a")
    with pytest.raises(af.CycleError) as caught:
        af.compile("w")
    assert "form a cycle: j.a → j.b → j.a" in str(caught.value) or "j.b → j.a → j.b" in str(caught.value)
    assert sorted(caught.value.nodes) == ["j.a", "j.b"]


def test_a_data_edge_across_jobs_without_a_dataset_names_both_nodes_and_the_line():
    ns = notebook_namespace("""
        import aiflow_notebook as af
        with af.workflow("w"):
            with af.job_config("prep"):
                feats = af.transform(af.read_dataset("clicks"), lambda rows: rows, name="featurize")
            with af.job_config("train"):
                af.train(feats, trainer=lambda rows: 0, model="ctr", name="fit")
    """)
    assert ns
    with pytest.raises(af.CrossJobDataEdgeError) as caught:
        af.compile("w")
    message = str(caught.value)
    assert "node 'fit' (train in job 'train', notebook cell, line 7)" in message
    assert "node 'featurize' (transform in job 'prep', notebook cell, line 5)" in message
    assert "af.write_dataset" in message and "af.read_dataset" in message


def test_two_engines_in_one_job_names_the_job_the_engines_and_their_nodes():
    with af.workflow("w"), af.job_config("mixed", engine="flink"):
        raw = af.read_dataset("d")
        with af.engine("python"):
            af.transform(raw, ident, name="local_step")
    with pytest.raises(af.EngineConflictError) as caught:
        af.compile("w")
    message = str(caught.value)
    assert "job 'mixed' has nodes on two engines" in message
    assert "flink: 'read_d'" in message and "python: 'local_step'" in message


def test_an_unknown_engine_names_the_job_and_suggests_the_closest():
    with af.workflow("w"), af.job_config("prep", engine="flnk"):
        af.read_dataset("d")
    with pytest.raises(af.UnknownEngineError, match=r"job 'prep' \(.*line \d+\) uses engine 'flnk', which is "
                                                    r"not known \(did you mean 'flink'\?\); known engines: python"):
        af.compile("w")


@pytest.mark.parametrize("rule, message", [
    (lambda: af.action_on_job_status("trian", upstream="prep"),
     r"action_on_job_status\('trian', upstream='prep'\) at .*line \d+ acts on job 'trian', which workflow 'w' "
     r"does not have \(did you mean 'train'\?\) \(jobs: prep, train\)"),
    (lambda: af.action_on_job_status("train", upstream="perp"),
     r"listens to job 'perp'.*did you mean 'prep'"),
    (lambda: af.action_on_model_version_event("serve", model="ctr"), r"acts on job 'serve'"),
    (lambda: af.action_on_events("gone", af.MeetAny(af.EventCondition("k"))), r"control edge to job 'gone'"),
])
def test_a_control_edge_to_a_missing_job_names_the_edge_and_the_job(rule, message):
    with af.workflow("w"):
        for name in ("prep", "train"):
            with af.job_config(name):
                af.read_dataset("d")
        rule()
    with pytest.raises(af.UnknownJobError, match=message):
        af.compile("w")


def test_an_unpicklable_global_used_through_a_helper_is_named():
    notebook_namespace("""
        import threading
        import aiflow_notebook as af

        lock = threading.Lock()

        def helper(row):
            with lock:
                return row

        def featurize(rows):
            return [helper(r) for r in rows]

        with af.workflow("w"), af.job_config("prep"):
            af.transform(af.read_dataset("clicks"), featurize)
    """)
    with pytest.raises(af.CaptureError) as caught:
        af.compile("w")
    message = str(caught.value)
    assert message.startswith("node 'featurize' (transform in job 'prep', notebook cell, line 15)")
    assert "its function 'featurize' cannot be pickled" in message
    assert "it uses global 'lock' (via featurize → helper), a lock" in message


def test_an_unpicklable_closure_variable_is_named():
    notebook_namespace("""
        import aiflow_notebook as af

        def make_reader():
            handle = (line for line in ["a", "b"])  # a generator cannot be pickled
            def read(dataset):
                return list(handle)
            return read

        with af.workflow("w"), af.job_config("io"):
            af.read_dataset("d", fn=make_reader(), name="reader")
    """)
    with pytest.raises(af.CaptureError, match=r"node 'reader'.*uses closure variable 'handle', a generator"):
        af.compile("w")


def test_a_channel_to_a_node_that_is_gone_names_both():
    with af.workflow("w"):
        with af.job_config("j"):
            raw = af.read_dataset("d")
        with af.job_config("k"):
            pass
        graph = af.workflow("w")
        graph.drop_job("j")
        with af.job_config("j"):
            af.transform(raw, ident, name="late")
        graph.nodes.pop(("j", "read_d"), None)
    with pytest.raises(af.MissingNodeError, match=r"node 'late' .* reads the output of node 'read_d' in job 'j', "
                                                  r"which is not in workflow 'w' any more"):
        af.compile("w")


def test_errors_are_aiflow_errors():
    for error in (af.CycleError, af.CrossJobDataEdgeError, af.EngineConflictError, af.UnknownEngineError,
                  af.UnknownJobError, af.CaptureError, af.MissingNodeError, af.InvalidArgumentError):
        assert issubclass(error, af.AIFlowError) and issubclass(error, af.GraphError)
