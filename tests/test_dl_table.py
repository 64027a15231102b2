"""Table input, as dl-on-flink users write it (issue 13, bug 1).

Ported from dl-on-flink's own tests, ``dl-on-flink-pytorch/python/tests/dl_on_flink_pytorch/test_pytorch_utils.py``
(``testTrainWithInput``, ``test_inference``) and their entries ``src/test/resources/with_input.py`` and
``inference.py`` (flink-extended/dl-on-flink, 0.5): ``train(statement_set, config, table)`` and
``inference(statement_set, table, config, pyflink.table.Schema)``; and the conversion that
docs/dl_on_flink.md tells DataStream users to make, ``train(env, config, t_env.to_data_stream(table))``,
which failed in ``Schema.from_flink`` ("ExternalTypeInfo<RowTypeInfo(...)> is not supported").
Real PyFlink jobs on the local mini-cluster.
"""

from __future__ import annotations

import json
import sys

import cloudpickle
import pytest
from pyflink.common import Types
from pyflink.table import DataTypes, Schema, StreamTableEnvironment, TableDescriptor

from dl_on_flink.framework.codec import FieldType
from dl_on_flink.framework.codec import Schema as RowSchema
from dl_on_flink.pytorch import PyTorchClusterConfig, PyTorchContext, inference, train
from dl_on_flink.testing import local_env

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def test_converted_tables_keep_their_column_names_and_types():
    env = local_env()
    t_env = StreamTableEnvironment.create(env)
    table = t_env.from_elements(
        [(1.0, 2, "a")],
        DataTypes.ROW([DataTypes.FIELD("x", DataTypes.DOUBLE()), DataTypes.FIELD("n", DataTypes.BIGINT()),
                       DataTypes.FIELD("s", DataTypes.STRING())]),
    )
    schema = RowSchema.from_flink(t_env.to_data_stream(table).get_type())
    assert schema.names == ["x", "n", "s"]
    assert schema.types == [FieldType.DOUBLE, FieldType.BIGINT, FieldType.STRING]


def test_a_table_schema_is_an_output_schema():
    schema = (Schema.new_builder().column("f0", "INT").column("f1", DataTypes.BIGINT())
              .column("v", DataTypes.ARRAY(DataTypes.FLOAT())).column("s", DataTypes.STRING().not_null()).build())
    assert RowSchema.of(schema) == RowSchema([("f0", "INT"), ("f1", "BIGINT"), ("v", "ARRAY<FLOAT>"), ("s", "STRING")])


def sums_its_rows(ctx):
    pt = PyTorchContext(ctx)
    total = sum(x + y for x, y in pt.get_dataset_from_flink())
    with open(f"{ctx.get_property('out')}/sum-{pt.get_rank()}.json", "w") as fh:
        json.dump(total, fh)


def total_of(out) -> float:
    return sum(json.loads(p.read_text()) for p in out.glob("sum-*.json"))


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.usefixtures("no_dl_child_left_behind")
def test_train_from_a_table_converted_to_a_data_stream(tmp_path):
    env = local_env()
    t_env = StreamTableEnvironment.create(env)
    table = t_env.from_elements(
        [(float(i), 2.0 * i) for i in range(20)],
        DataTypes.ROW([DataTypes.FIELD("x", DataTypes.DOUBLE()), DataTypes.FIELD("y", DataTypes.DOUBLE())]),
    )
    config = (PyTorchClusterConfig.new_builder().set_world_size(2).set_node_entry(sums_its_rows)
              .set_property("out", tmp_path).build())
    train(env, config, t_env.to_data_stream(table))
    env.execute("train from a converted table")
    assert total_of(tmp_path) == sum(3.0 * i for i in range(20))


def plus_one(ctx):
    """dl-on-flink's ``inference.py``: every row x becomes (x, x + 1)."""
    pt = PyTorchContext(ctx)
    writer = pt.get_data_writer_to_flink()
    for (x,) in pt.get_dataset_from_flink():
        writer.write((x, x + 1))


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.usefixtures("no_dl_child_left_behind")
def test_statement_set_train_then_inference_as_in_dl_on_flink(tmp_path):
    # train(statement_set, config, table): testTrainWithInput
    env = local_env()
    t_env = StreamTableEnvironment.create(env)
    statement_set = t_env.create_statement_set()
    source = t_env.from_data_stream(
        env.from_collection([(float(i), 1.0) for i in range(8)], Types.ROW_NAMED(["x", "y"], [Types.DOUBLE()] * 2))
    )
    config = (PyTorchClusterConfig.new_builder().set_world_size(2).set_node_entry(sums_its_rows)
              .set_property("out", tmp_path).build())
    train(statement_set, config, source)
    statement_set.execute().wait()
    assert total_of(tmp_path) == sum(i + 1.0 for i in range(8))

    # inference(statement_set, table, config, schema) -> Table: test_inference
    env = local_env()
    t_env = StreamTableEnvironment.create(env)
    statement_set = t_env.create_statement_set()
    source = t_env.from_data_stream(env.from_collection([1, 2, 3, 4], Types.INT()))
    config = PyTorchClusterConfig.new_builder().set_world_size(2).set_node_entry(plus_one).build()
    schema = Schema.new_builder().column("f0", "INT").column("f1", "INT").build()
    output = inference(statement_set, source, config, schema)
    assert output.get_schema().get_field_names() == ["f0", "f1"]
    sink = tmp_path / "out"
    statement_set.add_insert(
        TableDescriptor.for_connector("filesystem").schema(schema).option("path", str(sink)).format("csv").build(),
        output,
    )
    statement_set.execute().wait()
    rows = sorted(line for p in sink.rglob("*") if p.is_file() and not p.name.startswith(".")
                  for line in p.read_text().splitlines())
    assert rows == ["1,2", "2,3", "3,4", "4,5"]


def tf_plus_one(ctx):
    from dl_on_flink.tensorflow import TFContext

    tfc = TFContext(ctx)
    writer = tfc.get_row_writer_to_flink()
    # dl-on-flink's arguments (a TFRecordDataset's there), accepted so its entries run unchanged
    dataset = tfc.get_tfdataset_from_flink(compression_type="", buffer_size=8 << 20, num_parallel_reads=4)
    for (x,) in dataset:
        writer.write((x, x + 1))


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.usefixtures("no_dl_child_left_behind")
def test_tensorflow_inference_on_a_statement_set_with_dl_on_flink_dataset_arguments(tmp_path):
    from dl_on_flink.tensorflow import TFClusterConfig
    from dl_on_flink.tensorflow import inference as tf_inference

    env = local_env()
    t_env = StreamTableEnvironment.create(env)
    statement_set = t_env.create_statement_set()
    source = t_env.from_data_stream(env.from_collection([1, 2, 3, 4], Types.INT()))
    config = TFClusterConfig.new_builder().set_worker_count(1).set_node_entry(tf_plus_one).build()
    schema = Schema.new_builder().column("f0", "INT").column("f1", "INT").build()
    output = tf_inference(statement_set, source, config, schema)
    sink = tmp_path / "out"
    statement_set.add_insert(
        TableDescriptor.for_connector("filesystem").schema(schema).option("path", str(sink)).format("csv").build(),
        output,
    )
    statement_set.execute().wait()
    rows = sorted(line for p in sink.rglob("*") if p.is_file() and not p.name.startswith(".")
                  for line in p.read_text().splitlines())
    assert rows == ["1,2", "2,3", "3,4", "4,5"]
