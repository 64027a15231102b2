"""PyTorch clusters in real PyFlink jobs on the local mini-cluster, with real child processes."""

from __future__ import annotations

import json
import sys

import cloudpickle
import pytest

from dl_on_flink.pytorch import PyTorchClusterConfig, train
from dl_on_flink.testing import local_env

cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300), pytest.mark.usefixtures("no_dl_child_left_behind")]


def all_gather_ranks(ctx):
    import torch
    import torch.distributed as dist

    from dl_on_flink.pytorch import PyTorchContext

    pt = PyTorchContext(ctx)
    gathered = [torch.zeros(1, dtype=torch.int64) for _ in range(pt.get_world_size())]
    dist.all_gather(gathered, torch.tensor([pt.get_rank()]))
    with open(f"{ctx.get_property('out')}/rank-{pt.get_rank()}.json", "w") as fh:
        json.dump([int(t.item()) for t in gathered], fh)


def test_world_size_3_all_gather_without_input(tmp_path):
    env = local_env()
    config = (PyTorchClusterConfig.new_builder().set_world_size(3).set_node_entry(all_gather_ranks)
              .set_property("out", tmp_path).build())
    train(env, config)
    result = env.execute("all-gather")
    assert result.get_job_id() is not None  # execute() returned: the job FINISHED
    for rank in range(3):
        assert json.loads((tmp_path / f"rank-{rank}.json").read_text()) == [0, 1, 2]


def fails_twice(ctx):
    import torch
    import torch.distributed as dist

    attempt = ctx.get_current_attempt_index()
    with open(f"{ctx.get_property('out')}/seen-{ctx.get_index()}-{attempt}", "w"):
        pass
    dist.barrier()  # the process group works on every attempt
    if ctx.get_index() == 1 and attempt < 2:
        raise RuntimeError(f"worker 1 gives up on attempt {attempt}")
    dist.all_reduce(torch.ones(1))


def test_failover_restarts_every_node_until_attempt_2(tmp_path):
    env = local_env()
    config = (PyTorchClusterConfig.new_builder().set_world_size(2).set_node_entry(fails_twice)
              .set_property("out", tmp_path).build())
    train(env, config)
    env.execute("failover")
    seen = sorted(p.name for p in tmp_path.glob("seen-*"))
    assert seen == [f"seen-{i}-{a}" for i in (0, 1) for a in (0, 1, 2)]


def always_fails(ctx):
    if ctx.get_index() == 1:
        raise ValueError(f"worker 1 cannot start (attempt {ctx.get_current_attempt_index()})")
    import time

    time.sleep(120)  # a healthy node that must be killed, not waited for


def test_always_failing_node_fails_the_job_with_its_error():
    env = local_env()
    config = (PyTorchClusterConfig.new_builder().set_world_size(2).set_node_entry(always_fails)
              .set_max_failover(1).build())
    train(env, config)
    with pytest.raises(Exception) as err:
        env.execute("always-fails")
    message = str(err.value)
    assert "failed after 1 failover(s)" in message
    assert "worker 1 (attempt 1) exited with code 1" in message
    assert "ValueError: worker 1 cannot start (attempt 1)" in message


def record_epochs(ctx):
    from torch.utils.data import DataLoader

    from dl_on_flink.pytorch import PyTorchContext

    pt = PyTorchContext(ctx)
    dataset = pt.get_dataset_from_flink()
    epochs = []
    while True:
        ids = [int(i) for ids, values in DataLoader(dataset, batch_size=16) for i in ids]
        if dataset.end_of_input:
            break
        epochs.append(ids)
    result = {"epochs": epochs, "markers": dataset.epochs_completed}
    with open(f"{ctx.get_property('out')}/worker-{pt.get_rank()}.json", "w") as fh:
        json.dump(result, fh)


def test_stream_training_sees_every_row_once_per_epoch(tmp_path):
    from pyflink.common import Row, Types

    env = local_env(parallelism=2)
    rows = 300
    source = env.from_collection(list(range(rows)), type_info=Types.LONG())
    features = source.map(lambda x: Row(x, x * 0.5), output_type=Types.ROW_NAMED(["id", "x"], [Types.LONG(), Types.DOUBLE()]))
    config = (PyTorchClusterConfig.new_builder().set_world_size(2).set_node_entry(record_epochs)
              .set_property("out", tmp_path).build())
    train(env, config, input=features, max_epoch=3)
    env.execute("stream-training")
    workers = [json.loads((tmp_path / f"worker-{i}.json").read_text()) for i in range(2)]
    for worker in workers:
        assert worker["markers"] == 3 and len(worker["epochs"]) == 3
        assert worker["epochs"][0], "both workers get rows"
    for epoch in range(3):
        seen = workers[0]["epochs"][epoch] + workers[1]["epochs"][epoch]
        assert sorted(seen) == list(range(rows)), f"epoch {epoch}: every row exactly once"


def echo_plus_one(ctx):
    from dl_on_flink.pytorch import PyTorchContext

    pt = PyTorchContext(ctx)
    writer = pt.get_data_writer_to_flink()
    for row in pt.get_dataset_from_flink():
        writer.write((*row, row[1] + 1))


ALL_TYPES = ["INT", "BIGINT", "FLOAT", "DOUBLE", "STRING", "BYTES",
             "ARRAY<INT>", "ARRAY<BIGINT>", "ARRAY<FLOAT>", "ARRAY<DOUBLE>"]


def sample_rows(count):
    """Rows of every supported type, the awkward values included (separators, extremes, -0.0, inf)."""
    strings = ['plain', 'a,b,c', 'line\nbreak', '"quoted", and \\ back', 'tab\there', '', 'ünïcödé ✓ 中']
    rows = []
    for i in range(count):
        rows.append((
            [-(2**31), 2**31 - 1, 0, i][i % 4],
            [-(2**63), 2**63 - 2, -1, i * 1_000_000_007][i % 4],
            [0.5, -0.0, float("inf"), 3.25][i % 4],
            [1e-300, -1e300, 0.1 + i, float("-inf")][i % 4],
            strings[i % len(strings)] + f" #{i}",
            bytes([i % 256, 0, 44, 10, 255]) * (i % 3),
            [i, -i, 2**31 - 1],
            [2**62, -(2**63)] * (i % 2),
            [0.25, -1.5, float(i)],
            [1 / 3, float(i) / 7] * (i % 3),
        ))
    return rows


def test_inference_round_trips_every_type_and_keeps_the_row_count():
    from pyflink.common import Types

    from dl_on_flink.framework import Schema
    from dl_on_flink.pytorch import inference

    in_schema = Schema([(f"c{i}", t) for i, t in enumerate(ALL_TYPES)])
    out_schema = Schema([*[(f"c{i}", t) for i, t in enumerate(ALL_TYPES)], ("next", "BIGINT")])
    rows = sample_rows(60)
    env = local_env(parallelism=2)
    source = env.from_collection(rows, type_info=in_schema.to_flink())
    config = PyTorchClusterConfig.new_builder().set_world_size(2).set_node_entry(echo_plus_one).build()
    output = inference(env, source, config, out_schema)
    assert output.get_type() == out_schema.to_flink() and Types.LONG() == out_schema.to_flink().get_field_types()[-1]
    # compared as repr() in a Python operator: PyFlink's collect path (Java -> Python) parses floats with
    # ast.literal_eval and cannot bring back inf; the stream itself carries them exactly
    as_text = output.map(lambda row: repr(tuple(bytes(v) if isinstance(v, bytearray) else v for v in row)),
                         output_type=Types.STRING())
    with as_text.execute_and_collect("inference") as results:
        got = list(results)
    assert len(got) == len(rows)
    assert sorted(got) == sorted(repr((*row, row[1] + 1)) for row in rows)


def one_worker_blocks_forever(ctx):
    import threading

    from dl_on_flink.pytorch import PyTorchContext

    pt = PyTorchContext(ctx)
    with open(f"{ctx.get_property('out')}/seen-{pt.get_rank()}-{ctx.get_current_attempt_index()}", "w"):
        pass
    rows = sum(1 for _ in pt.get_dataset_from_flink())
    if pt.get_rank() == 1:
        ctx.report_progress(f"read {rows} rows, now waiting for a signal that never comes")
        threading.Event().wait()  # stuck: alive, heartbeating, no progress


def test_a_stuck_node_fails_the_job_naming_it_within_the_progress_timeout(tmp_path):
    import time

    from pyflink.common import Types

    progress_timeout = 8
    env = local_env()
    numbers = env.from_collection([(i,) for i in range(40)], type_info=Types.ROW_NAMED(["x"], [Types.LONG()]))
    config = (PyTorchClusterConfig.new_builder().set_world_size(2).set_node_entry(one_worker_blocks_forever)
              .set_max_failover(1).set_property("progress_timeout", progress_timeout)
              .set_property("out", tmp_path).build())
    train(env, config, input=numbers)
    started = time.monotonic()
    with pytest.raises(Exception) as err:
        env.execute("stuck")
    elapsed = time.monotonic() - started
    message = str(err.value)
    assert "failed after 1 failover(s)" in message
    assert f"worker 1 (attempt 1) is stuck: no progress for {progress_timeout}" in message
    assert "in its entry function" in message
    # attempt 1 reads no rows: attempt 0 consumed them (max_epoch=1 without replay_input_on_failover)
    assert "last report_progress: 'read 0 rows, now waiting for a signal that never comes'" in message
    assert "worker 0" not in message.split("failover(s):", 1)[1].split("\n", 1)[0]  # worker 0 finished: not blamed
    # two attempts, each stuck for progress_timeout, plus start-up (Flink ≈ 7 s, each attempt's children)
    assert elapsed < 2 * progress_timeout + 60, elapsed
    assert sorted(p.name for p in tmp_path.glob("seen-*")) == [f"seen-{i}-{a}" for i in (0, 1) for a in (0, 1)]
