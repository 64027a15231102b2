"""TensorFlow clusters in real PyFlink jobs on the local mini-cluster, with real child processes."""

from __future__ import annotations

import json
import sys

import cloudpickle
import pytest

from dl_on_flink.tensorflow import TFClusterConfig, train
from dl_on_flink.testing import local_env

cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300), pytest.mark.usefixtures("no_dl_child_left_behind")]


def parameter_server_training(ctx):
    import os

    import tensorflow as tf

    from dl_on_flink.tensorflow import TFContext

    tfc = TFContext(ctx)
    if tfc.get_task_type() != "chief":
        tfc.get_tf_server().join()  # ps and workers serve until the chief is done
        return
    assert json.loads(os.environ["TF_CONFIG"])["task"] == {"type": "chief", "index": 0}
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    strategy = tf.distribute.experimental.ParameterServerStrategy(resolver)
    coordinator = tf.distribute.coordinator.ClusterCoordinator(strategy)
    with strategy.scope():
        w, b = tf.Variable(0.0), tf.Variable(0.0)

    @tf.function
    def step():
        x = tf.random.uniform([32], -1, 1)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((w * x + b - (2 * x + 1)) ** 2)
        gw, gb = tape.gradient(loss, [w, b])
        w.assign_sub(0.2 * gw)
        b.assign_sub(0.2 * gb)

    for _ in range(200):
        coordinator.schedule(step)
    coordinator.join()
    with open(ctx.get_property("out"), "w") as fh:
        json.dump({"w": float(w.numpy()), "b": float(b.numpy()), "cluster": tfc.get_tf_cluster_config()}, fh)


def test_parameter_server_training_2_workers_1_ps(tmp_path):
    out = tmp_path / "result.json"
    env = local_env()
    config = (TFClusterConfig.new_builder().set_worker_count(2).set_ps_count(1).set_is_worker_zero_chief(True)
              .set_node_entry(parameter_server_training).set_property("out", out).build())
    train(env, config)
    env.execute("tf-ps")
    result = json.loads(out.read_text())
    assert abs(result["w"] - 2) < 0.05 and abs(result["b"] - 1) < 0.05, result
    assert sorted(result["cluster"]) == ["chief", "ps", "worker"]
    assert all(not addr.endswith(":0") for addr in result["cluster"]["ps"] + result["cluster"]["worker"])


def only_worker_zero_exits(ctx):
    import time
    from pathlib import Path

    from aiflow_notebook.core.waiting import wait_until

    out = Path(ctx.get_property("out"))
    (out / f"{ctx.get_node_type()}-{ctx.get_index()}.started").touch()
    if (ctx.get_node_type(), ctx.get_index()) == ("worker", 0):
        wait_until(lambda: len(list(out.glob("*.started"))) == 5, timeout=120, what="every node in its entry")
        (out / "worker-0.returned").touch()
        return
    time.sleep(3600)


def test_job_finishes_when_worker_zero_exits_3_workers_2_ps(tmp_path):
    """Batch mode: worker 0 returning ends the job, while the ps and the other workers are still in their
    entries (an hour of sleep each): they are stopped, not waited for."""
    from aiflow_notebook.testing.waiting import wait_for

    marks = tmp_path / "marks"
    marks.mkdir()
    env = local_env()
    config = (TFClusterConfig.new_builder().set_worker_count(3).set_ps_count(2)
              .set_node_entry(only_worker_zero_exits).set_property("out", marks).build())
    train(env, config)
    result = env.execute_async("tf-worker-zero").get_job_execution_result()
    wait_for(result.done, timeout=240, what="the job to finish once worker 0 returned")
    result.result()  # raises if the job failed
    assert sorted(p.name for p in marks.iterdir()) == [
        "ps-0.started", "ps-1.started", "worker-0.returned", "worker-0.started", "worker-1.started",
        "worker-2.started"]


def tf_echo(ctx):
    import tensorflow as tf

    from dl_on_flink.tensorflow import TFContext

    tfc = TFContext(ctx)
    writer = tfc.get_row_writer_to_flink()
    for x, s, v in tfc.get_tfdataset_from_flink():
        writer.write((x, s, v, x + 1, tf.reduce_sum(v)))


def test_inference_through_tf_dataset_and_row_writer():
    from pyflink.common import Row, Types

    from dl_on_flink.tensorflow import inference

    in_type = Types.ROW_NAMED(["x", "s", "v"], [Types.LONG(), Types.STRING(), Types.PRIMITIVE_ARRAY(Types.FLOAT())])
    out_type = Types.ROW_NAMED(["x", "s", "v", "next", "total"],
                               [Types.LONG(), Types.STRING(), Types.PRIMITIVE_ARRAY(Types.FLOAT()), Types.LONG(),
                                Types.DOUBLE()])
    rows = [Row(i, f"row {i}, with\nnewline ✓", [0.5 * i, -1.0]) for i in range(40)]
    env = local_env(parallelism=2)
    config = TFClusterConfig.new_builder().set_worker_count(2).set_node_entry(tf_echo).build()
    output = inference(env, env.from_collection(rows, type_info=in_type), config, out_type)
    with output.execute_and_collect("tf-inference") as results:
        got = sorted((r[0], r[1], list(r[2]), r[3], r[4]) for r in results)
    assert got == [(i, f"row {i}, with\nnewline ✓", [0.5 * i, -1.0], i + 1, 0.5 * i - 1.0) for i in range(40)]


def late_worker_zero(ctx):
    import time

    import tensorflow as tf

    from dl_on_flink.tensorflow import TFContext

    tfc = TFContext(ctx)
    if tfc.get_task_index() == 0:
        time.sleep(5)  # worker 1 creates its strategy first: the order that hung both in their first collective
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        w = tf.Variable(float(10 + tfc.get_task_index()))  # initial value broadcast from worker 0
    total = strategy.reduce("SUM", strategy.run(lambda: tf.constant(float(tfc.get_task_index() + 1))), axis=None)
    if tfc.get_task_index() == 0:
        with open(ctx.get_property("out"), "w") as fh:
            json.dump({"w": float(w.numpy()), "total": float(total.numpy())}, fh)


@pytest.mark.timeout(180)
def test_mirrored_strategy_created_at_different_times_does_not_hang(tmp_path):
    out = tmp_path / "result.json"
    env = local_env()
    config = (TFClusterConfig.new_builder().set_worker_count(2).set_node_entry(late_worker_zero)
              .set_property("out", out).build())
    train(env, config)
    env.execute("tf-late-worker-zero")
    assert json.loads(out.read_text()) == {"w": 10.0, "total": 3.0}
