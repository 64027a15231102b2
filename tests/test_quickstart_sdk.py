"""What the quickstart story needs from the SDK, tested on its own (issue 11):

- ``run.wait_for(job, state, timeout, count)``: a deadline, and errors naming the job, the state, where it is;
- ``af.save_model`` / ``af.load_model``, a trainer returning ``(model, metrics)``;
- ``update_model_version(..., metrics=)``: evaluation results merged into a version's metrics;
- the evaluation gate (``af.evaluate`` → ``af.model_validate``): VALIDATED only when the metric clears it,
  else GENERATED with the reason recorded, no ``MODEL_VALIDATED``, and the serving job not (re)started;
- ``af.transform(..., group_by=K)`` in-process and on a Flink batch job; ``af.read_rows``, ``af.wait_until``;
- ``af.predict(..., with_version=True)``.

Real SQLite stores, real job processes under the embedded scheduler, the real PyFlink mini-cluster.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import cloudpickle
import pytest

import aiflow_notebook as af
from aiflow_notebook.engines.model_gate import metric_at_least
from aiflow_notebook.engines.model_io import Predictor
from aiflow_notebook.meta import MetadataStore
from aiflow_notebook.meta.errors import MetadataError
from aiflow_notebook.scheduler.client import SchedulerError

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # functions defined here run in job processes


class Threshold:
    """A 'model' that predicts 1 when the value is above its cut."""

    def __init__(self, cut: float):
        self.cut = cut

    def predict(self, row):
        return [row[0], int(row[0] > self.cut)]


# --- model objects and metrics on a real store ------------------------------------------------------------


def test_save_model_and_load_model_round_trip_a_notebook_object_by_uri_or_by_version(aiflow_home):
    uri = af.save_model(Threshold(3), "cut")
    assert uri.startswith("file://") and str(aiflow_home) in uri
    af.register_model("cut")
    version = af.register_model_version("cut", uri=uri, metrics={"train_rows": 10})
    assert af.load_model(uri).predict([5]) == [5, 1]
    assert af.load_model(version).cut == 3
    assert version.stage == "GENERATED" and version.metrics == {"train_rows": 10}


def test_metrics_merge_into_a_version_without_an_event_and_with_a_stage_change_publish_it(tmp_path):
    published = []

    class Publisher:
        def publish(self, **event):
            published.append(event["event_type"])

    with MetadataStore(f"sqlite:///{tmp_path / 'meta.db'}", publisher=Publisher()) as store:
        store.register_model("m")
        store.register_model_version("m", uri="file:///m/1", metrics={"train_loss": 0.5})
        updated = store.update_model_version("m", 1, metrics={"auc": 0.8})
        assert updated.metrics == {"train_loss": 0.5, "auc": 0.8} and updated.stage == "GENERATED"
        assert published == ["MODEL_GENERATED"]  # metrics alone publish nothing
        updated = store.update_model_version("m", 1, "VALIDATED", metrics={"validation": "auc 0.8 >= 0.7"})
        assert updated.stage == "VALIDATED" and updated.metrics["validation"] == "auc 0.8 >= 0.7"
        assert published == ["MODEL_GENERATED", "MODEL_VALIDATED"]
        assert store.get_model_version("m", 1).metrics == {"train_loss": 0.5, "auc": 0.8,
                                                           "validation": "auc 0.8 >= 0.7"}
        with pytest.raises(MetadataError, match="give a stage, metrics or both"):
            store.update_model_version("m", 1)
        with pytest.raises(MetadataError, match="finite"):
            store.update_model_version("m", 1, metrics={"auc": float("nan")})


def test_metric_at_least_says_why_a_version_passes_or_not():
    class Version:
        metrics = {"auc": 0.71}

    assert metric_at_least("auc", 0.7)(Version()) == (True, "auc 0.7100 >= 0.7")
    assert metric_at_least("auc", 0.75)(Version()) == (False, "auc 0.7100 < 0.75")
    assert metric_at_least("loss", 1)(Version()) == (False, "no loss metric recorded (evaluate the version first)")


def test_predict_with_version_appends_the_served_version_to_each_row(aiflow_home):
    uri = af.save_model(Threshold(3), "cut")
    assert Predictor("cut", 4, uri=uri, with_version=True)([7]) == [7, 1, 4]
    assert Predictor("cut", 4, uri=uri)([1]) == [1, 0]
    restored = cloudpickle.loads(cloudpickle.dumps(Predictor("cut", 4, uri=uri, with_version=True)))
    assert restored([1]) == [1, 0, 4]


# --- grouping, reading rows, waiting -------------------------------------------------------------------


def rate(rows):
    clicks = sum(r[1] for r in rows)
    return [[*r, clicks / len(rows)] for r in rows]


def test_group_by_hands_each_keys_rows_to_the_function_in_process():
    from aiflow_notebook.sdk.job_runtime import run_job_payload

    with af.workflow("grouping"):
        with af.job_config("prep"):
            raw = af.read_dataset("clicks", fn=lambda dataset: [["a", 1], ["b", 0], ["a", 0], ["b", 0]])
            af.transform(raw, rate, name="rate", group_by=0)
    job = af.compile("grouping").jobs["prep"]
    results = run_job_payload(job.payload)
    assert sorted(results["rate"]) == [["a", 0, 0.5], ["a", 1, 0.5], ["b", 0, 0.0], ["b", 0, 0.0]]


def test_group_by_must_be_a_column_index_or_key():
    with af.workflow("bad_group"), af.job_config("prep"):
        raw = af.read_dataset("clicks", uri="x.csv")
        with pytest.raises(af.InvalidArgumentError, match="group_by must be a column index or a key name"):
            af.transform(raw, rate, group_by=lambda row: row[0])


def test_read_rows_reads_committed_part_files_typed_and_wait_until_names_what_it_waited_for(tmp_path):
    out = tmp_path / "scores"
    out.mkdir()
    (out / "part-0-0").write_text("1,0.5,2\n")
    (out / ".part-0-1.inprogress").write_text("2,0.7,2\n")
    assert af.read_rows(out, {"id": "int", "p": "float", "v": "int"}) == [[1, 0.5, 2]]
    assert af.read_rows(tmp_path / "missing") == []
    assert af.wait_until(lambda: len(af.read_rows(out)), timeout=1) == 1
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"timed out after 0.3 s waiting for 2 scores"):
        af.wait_until(lambda: len(af.read_rows(out)) >= 2, timeout=0.3, what="2 scores")
    assert time.monotonic() - started < 5


def test_wait_until_stops_at_once_when_its_hopeless_check_gives_a_reason_and_checks_once_more_first():
    from aiflow_notebook.core.waiting import HopelessWaitError

    asked = []
    started = time.monotonic()
    with pytest.raises(HopelessWaitError, match=r"gave up waiting for the scores: job 'train' FAILED: boom"):
        af.wait_until(lambda: False, timeout=60, what="the scores",
                      hopeless=lambda: asked.append(1) or (len(asked) >= 3 and "job 'train' FAILED: boom") or None)
    assert len(asked) == 3 and time.monotonic() - started < 5
    checks = []  # what became true while the work ended counts: the condition is asked once more
    assert af.wait_until(lambda: checks.append(1) or len(checks) >= 2, timeout=60, hopeless=lambda: "ended") is True
    assert len(checks) == 2


@pytest.mark.slow
def test_group_by_on_a_flink_batch_job_joins_per_key_aggregates_back_to_every_row(tmp_path):
    from pyflink.common import Configuration
    from pyflink.datastream import StreamExecutionEnvironment

    from aiflow_notebook.engines.flink_program import build_program

    (tmp_path / "clicks.csv").write_text("".join(f"u{i % 3},{int(i % 3 == 0 or i == 1)}\n" for i in range(9)))
    nodes = [
        {"kind": "read_dataset", "name": "raw", "inputs": [],
         "dataset": {"name": "clicks", "uri": "clicks.csv", "schema": {"user": "str", "click": "int"}}},
        {"kind": "transform", "name": "rate", "inputs": [["raw", 0]], "properties": {"group_by": 0}},
        {"kind": "write_dataset", "name": "out", "inputs": [["rate", 0]],
         "dataset": {"name": "rates", "uri": "rates"}},
    ]
    config = Configuration()
    config.set_string("python.executable", sys.executable)
    env = StreamExecutionEnvironment.get_execution_environment(config)
    env.set_parallelism(2)
    build_program(env, "prep", nodes, {"rate": rate}, streaming=False, base_dir=tmp_path)
    env.execute("prep")
    rows = af.read_rows(tmp_path / "rates", {"user": "str", "click": "int", "rate": "float"})
    assert len(rows) == 9
    assert {(r[0], round(r[2], 3)) for r in rows} == {("u0", 1.0), ("u1", 0.333), ("u2", 0.0)}

    # the batch job runs again (new data arrived): its output replaces the dataset, it does not add to it
    (tmp_path / "rates" / "README").write_text("mine")
    (tmp_path / "clicks.csv").write_text("u0,0\nu0,1\n")
    env = StreamExecutionEnvironment.get_execution_environment(config)
    env.set_parallelism(2)
    build_program(env, "prep", nodes, {"rate": rate}, streaming=False, base_dir=tmp_path)
    env.execute("prep")
    assert sorted(af.read_rows(tmp_path / "rates")) == \
        [["mine"], ["u0", "0", "0.5"], ["u0", "1", "0.5"]]
    assert (tmp_path / "rates" / "README").read_text() == "mine"


# --- the scheduler: wait_for and the evaluation gate -----------------------------------------------------


def fit(rows):
    return Threshold(sum(r[0] for r in rows) / len(rows)), {"train_rows": len(rows)}


def accuracy(model, rows):
    return {"accuracy": sum(model.predict(r)[1] == r[1] for r in rows) / len(rows)}


def noop(context):
    Path(context.properties["marker"]).write_text(str(context.trigger))


def _gated_workflow(name: str, tmp_path: Path, gate: float) -> None:
    (tmp_path / "train.json").write_text(json.dumps([[1, 0], [2, 0], [8, 1], [9, 1]]))
    (tmp_path / "test.json").write_text(json.dumps([[1, 0], [4, 1], [6, 1], [9, 1]]))  # 4 is misclassified
    with af.workflow(name):
        with af.job_config("train"):
            af.train(af.read_dataset("train", uri=str(tmp_path / "train.json")), trainer=fit, model=name)
        with af.job_config("evaluate"):
            af.evaluate(af.read_dataset("test", uri=str(tmp_path / "test.json")), model=name, evaluator=accuracy)
        with af.job_config("validate"):
            af.model_validate(None, model=name, validator=af.metric_at_least("accuracy", gate))
        with af.job_config("serve"):
            af.user_define_operation(noop, name="serve", properties={"marker": str(tmp_path / "served")},
                                     output_num=0)
        af.action_on_job_status("evaluate", upstream="train")
        af.action_on_job_status("validate", upstream="evaluate")
        af.action_on_model_version_event("serve", model=name, event_type="MODEL_VALIDATED", action="START")


@pytest.mark.slow
@pytest.mark.parametrize("gate, stage", [(0.7, "VALIDATED"), (0.9, "GENERATED")], ids=["passes", "fails"])
def test_the_evaluation_gate_validates_only_a_version_that_clears_it(scheduler, tmp_path, gate, stage):
    _gated_workflow("gated", tmp_path, gate)
    run = scheduler.submit(af.compile("gated"))
    try:
        finished = run.wait_for("validate", "FINISHED", timeout=180)
        assert json.loads(finished.context)["run"] == run.run_id
        version = scheduler.store.get_model_version("gated", 1)
        assert version.stage == stage
        assert version.metrics["train_rows"] == 4 and version.metrics["accuracy"] == 0.75
        validated = scheduler.client.list_events(key="gated", event_type="MODEL_VALIDATED")
        if stage == "VALIDATED":
            assert version.metrics["validation"] == "accuracy 0.7500 >= 0.7"
            run.wait_for("serve", "FINISHED", timeout=120)
            assert len(validated) == 1 and "MODEL_VALIDATED" in (tmp_path / "served").read_text()
        else:
            assert version.metrics["validation"] == "accuracy 0.7500 < 0.9"  # the reason, on the version
            assert validated == []
            with pytest.raises(TimeoutError, match="job 'serve' of run .* did not reach STARTING within 2 s: "
                                                   "it is INIT"):
                run.wait_for("serve", "STARTING", timeout=2)
            assert not (tmp_path / "served").exists()
    finally:
        run.stop()


def fail(context):
    raise RuntimeError("the data source is gone")


@pytest.mark.slow
def test_wait_for_counts_states_and_names_the_job_and_its_error_when_the_run_ends_first(scheduler, tmp_path):
    marker = tmp_path / "served"
    with af.workflow("waiting"):
        with af.job_config("once"):
            af.user_define_operation(noop, name="once", properties={"marker": str(marker)}, output_num=0)
        with af.job_config("broken"):
            af.user_define_operation(fail, name="broken", output_num=0)
        af.action_on_job_status("broken", upstream="once")
    run = scheduler.submit(af.compile("waiting"))
    first = run.wait_for("once", "FINISHED", timeout=120)
    assert first.key == "waiting.once" and run.wait_for("once", "FINISHED", count=1) == first
    with pytest.raises(SchedulerError, match=r"(?s)job 'broken' of run \d+ \('waiting'\) did not reach FINISHED "
                                             r"before the run ended: it is FAILED .*the data source is gone"):
        run.wait_for("broken", "FINISHED", timeout=120)
    with pytest.raises(SchedulerError, match="did not reach FINISHED for the 2nd time before the run ended"):
        run.wait_for("once", "FINISHED", count=2, timeout=30)
    with pytest.raises(SchedulerError, match="has no job 'nope'"):
        run.wait_for("nope", "RUNNING")
