"""Engines pytorch and tensorflow end to end: af.train in a workflow job runs as a dl_on_flink cluster on the
local Flink mini-cluster, under the embedded scheduler; the trained model becomes a model version."""

from __future__ import annotations

import sys
from pathlib import Path

import cloudpickle
import pytest

import aiflow_notebook as af
from aiflow_notebook.engines.model_io import TorchModel, load_model
from aiflow_notebook.storage.part_files import read_lines

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # trainers defined here run in the node processes

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SCHEMA = {"x": "float", "y": "float"}


@pytest.fixture
def points(tmp_path) -> Path:
    """256 points of y = 2x + 1 on [-1, 1)."""
    path = tmp_path / "points.csv"
    path.write_text("".join(f"{i / 128 - 1},{2 * (i / 128 - 1) + 1}\n" for i in range(256)))
    return path


def torch_linear_regression(ctx):
    import torch
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DataLoader

    torch.manual_seed(0)
    model = DistributedDataParallel(torch.nn.Linear(1, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    data = ctx.get_dataset_from_flink()
    while not data.end_of_input:
        with model.join():  # the workers may receive different numbers of rows
            for x, y in DataLoader(data, batch_size=16):
                optimizer.zero_grad()
                torch.nn.functional.mse_loss(model(x.float()[:, None]), y.float()[:, None]).backward()
                optimizer.step()
    return model if ctx.get_rank() == 0 else None  # the DDP wrapper is unwrapped before saving


def test_pytorch_job_trains_registers_a_version_with_lineage_and_serves_predictions(scheduler, points, tmp_path):
    queries = tmp_path / "queries.csv"
    queries.write_text("0.5\n-1\n")
    with af.workflow("dl_torch"):
        with af.job_config("train", engine="pytorch", properties={"workers": 2, "epochs": 20}):
            af.train(af.read_dataset("points", uri=str(points), schema=SCHEMA), trainer=torch_linear_regression,
                     model="linreg", name="fit")
        with af.job_config("score", engine="flink"):  # applies the latest version in Flink's Python workers
            queries_in = af.read_dataset("queries", uri=str(queries), schema={"x": "float"})
            af.write_dataset(af.predict(queries_in, model="linreg"), "scores", uri=str(tmp_path / "scores"))
        af.action_on_model_version_event("score", model="linreg", event_type="MODEL_GENERATED", action="START")
    run = scheduler.submit(af.compile("dl_torch"))
    assert run.wait(240) == "FINISHED", run.errors()

    store = scheduler.store
    version = store.get_latest_model_version("linreg")
    assert (version.version, version.stage) == (1, "GENERATED") and version.job_run_id is not None
    assert store.get_job_run(version.job_run_id).state == "FINISHED"
    labels = {n.label.split("\n")[0] for n in store.lineage("linreg", 1).nodes.values()}
    assert {"points", "dl_torch.train", "linreg v1"} <= labels, labels

    model = load_model(version.uri)
    assert isinstance(model, TorchModel)
    w, b = model.module.weight.item(), model.module.bias.item()
    assert abs(w - 2) < 0.05 and abs(b - 1) < 0.05, (w, b)
    lines = sorted(read_lines(tmp_path / "scores"))
    scores = dict(tuple(float(v) for v in line.split(",")) for line in lines)  # x -> prediction by version 1
    assert sorted(scores) == [-1.0, 0.5] and abs(scores[0.5] - 2.0) < 0.1 and abs(scores[-1.0] + 1.0) < 0.1, lines


class LinearModel:
    def __init__(self, w: float, b: float):
        self.w, self.b = w, b

    def predict(self, row):
        return [*row, self.w * float(row[0]) + self.b]


def tf_linear_regression(ctx):
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        w = tf.Variable(0.0, aggregation=tf.VariableAggregation.MEAN)
        b = tf.Variable(0.0, aggregation=tf.VariableAggregation.MEAN)

    @tf.function
    def step(x, y):
        def replica_step(x, y):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean((w * x + b - y) ** 2)
            grad_w, grad_b = tape.gradient(loss, [w, b])
            w.assign_sub(0.1 * grad_w)
            b.assign_sub(0.1 * grad_b)

        strategy.run(replica_step, args=(x, y))

    batches = ctx.get_tfdataset_from_flink().map(lambda x, y: (tf.cast(x, tf.float32), tf.cast(y, tf.float32)))
    batches = iter(batches.batch(16).cache().repeat())
    for _ in range(160):
        step(*next(batches))
    return LinearModel(float(w.numpy()), float(b.numpy())) if ctx.get_task_index() == 0 else None


def test_tensorflow_job_trains_and_registers_a_version(scheduler, points):
    with af.workflow("dl_tf"):
        with af.job_config("train", engine="tensorflow", properties={"workers": 2}):
            af.train(af.read_dataset("points", uri=str(points), schema=SCHEMA), trainer=tf_linear_regression,
                     model="tf_linreg")
    run = scheduler.submit(af.compile("dl_tf"))
    assert run.wait(240) == "FINISHED", run.errors()
    version = scheduler.store.get_latest_model_version("tf_linreg")
    assert version.version == 1 and version.job_run_id is not None
    model = load_model(version.uri)
    assert abs(model.w - 2) < 0.05 and abs(model.b - 1) < 0.05, (model.w, model.b)
    labels = {n.label.split("\n")[0] for n in scheduler.store.lineage("tf_linreg", 1).nodes.values()}
    assert {"points", "dl_tf.train"} <= labels, labels


def rank_one_explodes(ctx):
    import time

    if ctx.get_rank() == 1:
        raise ValueError(f"bad input on rank 1 (attempt {ctx.get_current_attempt_index()})")
    time.sleep(60)  # a healthy node: the failed cluster must kill it, not wait for it


def test_a_failing_trainer_fails_the_run_naming_node_and_attempt(scheduler, points, aiflow_home):
    with af.workflow("dl_bad"):
        with af.job_config("train", engine="pytorch", properties={"workers": 2, "max_failover": 0}):
            af.train(af.read_dataset("points", uri=str(points), schema=SCHEMA), trainer=rank_one_explodes,
                     model="never", name="fit")
    run = scheduler.submit(af.compile("dl_bad"))
    assert run.wait(180) == "FAILED"
    error = run.errors()["train"]
    assert "job dl_bad.train (engine pytorch), node 'fit': training failed" in error, error
    assert "worker 1 (attempt 0)" in error, error
    assert "ValueError: bad input on rank 1 (attempt 0)" in error, error
    assert not (aiflow_home / "models" / "never").exists()


def test_a_pytorch_job_without_train_is_refused_with_the_job_named(scheduler, points, tmp_path):
    with af.workflow("dl_none"):
        with af.job_config("train", engine="pytorch"):
            af.write_dataset(af.read_dataset("points", uri=str(points), schema=SCHEMA), "copy",
                             uri=str(tmp_path / "copy.csv"))
    run = scheduler.submit(af.compile("dl_none"))
    assert run.wait(60) == "FAILED"
    assert "job dl_none.train (engine pytorch) needs exactly one af.train(" in run.errors()["train"]
