"""The batched feed end to end (issue 20, part 1): real PyFlink jobs on the local mini-cluster.

Rows from a Table read by Flink's own filesystem connector, and from a DataStream, reach the workers as
Arrow batches; the entry reads rows (a DataLoader loop, unchanged) or batches
(``get_dataset_from_flink(batch_size=N)``, ``get_tfdataset_from_flink()``); every row arrives exactly
once, also across a failover that replays the input, and the per-record feed (``feed=row``) delivers
the same rows.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cloudpickle
import pytest
from pyflink.common import Row, Types
from pyflink.table import DataTypes, Schema, StreamTableEnvironment, TableDescriptor

from dl_on_flink.pytorch import PyTorchClusterConfig, PyTorchContext, train
from dl_on_flink.testing import local_env

cloudpickle.register_pickle_by_value(sys.modules[__name__])

ROWS = 5_000


def csv_table(tmp_path: Path, rows: int = ROWS):
    """A Table over a CSV file of ``rows`` rows (id BIGINT, x DOUBLE, label FLOAT) via the filesystem connector."""
    path = tmp_path / "rows.csv"
    path.write_text("".join(f"{k},{k / 4},{k % 2}\n" for k in range(rows)))
    env = local_env(parallelism=2)
    t_env = StreamTableEnvironment.create(env)
    schema = (Schema.new_builder().column("id", DataTypes.BIGINT()).column("x", DataTypes.DOUBLE())
              .column("label", DataTypes.FLOAT()).build())
    t_env.create_temporary_table("rows", TableDescriptor.for_connector("filesystem").schema(schema)
                                 .option("path", str(path)).format("csv").build())
    return t_env, t_env.from_path("rows")


def seen_by(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(out.glob("seen-*.json"))]


def batches_of_64(ctx):
    pt = PyTorchContext(ctx)
    dataset = pt.get_dataset_from_flink(batch_size=64)
    epochs = []
    while True:
        sizes, ids, exact = [], [], True
        for batch in dataset:
            sizes.append(len(batch["id"]))
            ids += batch["id"].tolist()
            exact &= batch["x"].tolist() == [k / 4 for k in batch["id"].tolist()]
            exact &= str(batch["id"].dtype) == "torch.int64" and str(batch["label"].dtype) == "torch.float32"
        if dataset.end_of_input:
            break
        epochs.append({"sizes": sizes, "ids": ids, "exact": exact})
    Path(ctx.get_property("out"), f"seen-{pt.get_rank()}.json").write_text(json.dumps(epochs))


@pytest.mark.slow
def test_a_table_reaches_two_workers_as_batches_every_row_once_per_epoch(tmp_path):
    t_env, table = csv_table(tmp_path)
    statement_set = t_env.create_statement_set()
    config = (PyTorchClusterConfig.new_builder().set_world_size(2).set_node_entry(batches_of_64)
              .set_property("out", tmp_path).set_property("feed_batch_rows", 700).build())
    train(statement_set, config, table, max_epoch=2)
    statement_set.execute().wait()
    workers = seen_by(tmp_path)
    assert len(workers) == 2 and all(len(w) == 2 for w in workers), "two workers, two epochs each"
    for epoch in range(2):
        ids = sorted(i for w in workers for i in w[epoch]["ids"])
        assert ids == list(range(ROWS)), f"epoch {epoch}: every row exactly once"
        for worker in workers:
            assert worker[epoch]["exact"], "values and dtypes as the table's columns"
            assert worker[epoch]["ids"], "both workers get rows"
            sizes = worker[epoch]["sizes"]
            assert all(size == 64 for size in sizes[:-1]) and 0 < sizes[-1] <= 64


def rows_through_a_data_loader(ctx):
    from torch.utils.data import DataLoader

    pt = PyTorchContext(ctx)
    rows = []
    for ids, features, labels in DataLoader(pt.get_dataset_from_flink(), batch_size=32):
        rows += [[int(i), f.tolist(), float(v)] for i, f, v in zip(ids, features, labels, strict=True)]
    Path(ctx.get_property("out"), f"seen-{pt.get_rank()}.json").write_text(json.dumps(rows))


def data_stream(env):
    array = Types.PRIMITIVE_ARRAY(Types.FLOAT())
    return env.from_collection(list(range(1_000)), type_info=Types.LONG()).map(
        lambda k: Row(k, [float(k), -0.5], float(k % 3)),
        output_type=Types.ROW_NAMED(["id", "features", "label"], [Types.LONG(), array, Types.DOUBLE()]))


@pytest.mark.slow
def test_a_data_stream_gives_the_same_rows_through_both_feeds(tmp_path):
    results = {}
    for feed in ("arrow", "row"):
        out = tmp_path / feed
        out.mkdir()
        env = local_env(parallelism=2)
        config = (PyTorchClusterConfig.new_builder().set_world_size(1).set_node_entry(rows_through_a_data_loader)
                  .set_property("out", out).set_property("feed", feed).build())
        train(env, config, input=data_stream(env))
        env.execute(f"feed-{feed}")
        (rows,) = seen_by(out)
        results[feed] = sorted(rows)
    assert len(results["arrow"]) == 1_000
    assert results["arrow"][7] == [7, [7.0, -0.5], 1.0]
    assert results["arrow"] == results["row"]


def fails_once_half_way(ctx):
    pt = PyTorchContext(ctx)
    ids = []
    for batch in pt.get_dataset_from_flink(batch_size=100):
        ids += batch["id"].tolist()
        if ctx.get_current_attempt_index() == 0 and len(ids) >= ROWS // 2:
            raise RuntimeError("worker lost half way")
    Path(ctx.get_property("out"), f"seen-{pt.get_rank()}.json").write_text(json.dumps(ids))


@pytest.mark.slow
def test_a_failover_replays_the_arrow_batches_every_row_once(tmp_path):
    t_env, table = csv_table(tmp_path)
    statement_set = t_env.create_statement_set()
    config = (PyTorchClusterConfig.new_builder().set_world_size(1).set_node_entry(fails_once_half_way)
              .set_property("out", tmp_path).set_property("replay_input_on_failover", "true")
              .set_property("feed_batch_rows", 300).build())
    train(statement_set, config, table)
    statement_set.execute().wait()
    (ids,) = seen_by(tmp_path)
    assert sorted(ids) == list(range(ROWS)) and len(ids) == ROWS


def tf_ids(ctx):
    from dl_on_flink.tensorflow import TFContext

    tf_ctx = TFContext(ctx)
    ids, exact = [], True
    for batch_ids, xs, labels in tf_ctx.get_tfdataset_from_flink().batch(128):
        ids += batch_ids.numpy().tolist()
        exact &= xs.numpy().tolist() == [k / 4 for k in batch_ids.numpy().tolist()]
        exact &= labels.dtype.name == "float32"
    Path(ctx.get_property("out"), f"seen-{tf_ctx.get_task_index()}.json").write_text(json.dumps([ids, exact]))


@pytest.mark.slow
def test_tensorflow_reads_a_table_as_column_batches(tmp_path):
    from dl_on_flink.tensorflow import TFClusterConfig
    from dl_on_flink.tensorflow import train as tf_train

    t_env, table = csv_table(tmp_path)
    statement_set = t_env.create_statement_set()
    config = (TFClusterConfig.new_builder().set_worker_count(2).set_node_entry(tf_ids)
              .set_property("out", tmp_path).build())
    tf_train(statement_set, config, table)
    statement_set.execute().wait()
    workers = seen_by(tmp_path)
    assert all(exact for _, exact in workers)
    assert sorted(i for ids, _ in workers for i in ids) == list(range(ROWS))


def test_an_unknown_feed_is_refused_naming_the_valid_ones(tmp_path):
    from dl_on_flink.errors import ConfigError

    env = local_env()
    config = (PyTorchClusterConfig.new_builder().set_world_size(1).set_node_entry(batches_of_64)
              .set_property("feed", "pigeon").build())
    with pytest.raises(ConfigError, match="feed='pigeon' is not a feed \\(valid: arrow, row\\)"):
        train(env, config, input=data_stream(env))
