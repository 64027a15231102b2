"""dl-on-flink programs ported to dl_on_flink with only their imports changed (issue 13, items 8-10 and bug 2).

The entries live in ``tests/dl_on_flink_examples/`` as the originals did in their resources and are given
as file path + function name (``set_node_entry(path, "main")``), as dl-on-flink's Java API took them.
Each test names its original in flink-extended/dl-on-flink. Data is generated (Flink's ``datagen`` and
collections), nothing is downloaded. Real PyFlink jobs on the local mini-cluster, real child processes.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path

import cloudpickle
import pytest
from pyflink.common import Types
from pyflink.table import DataTypes, Schema, StreamTableEnvironment, TableDescriptor
from pyflink.table.expressions import col

from aiflow_notebook.testing.processes import our_processes, wait_no_process_left
from aiflow_notebook.testing.waiting import wait_for
from dl_on_flink.pytorch import PyTorchClusterConfig, inference, train
from dl_on_flink.testing import CHILD_MODULE, live_supervisors, local_env

EXAMPLES = Path(__file__).parent / "dl_on_flink_examples"

cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600), pytest.mark.usefixtures("no_dl_child_left_behind")]


def table_env():
    env = local_env()
    return env, StreamTableEnvironment.create(env)


def test_entries_that_init_the_process_group_themselves_and_read_int32_rows(tmp_path):
    """test_pytorch_utils.py ``test_train_without_input`` (all_gather.py) and ``testTrainWithInput``
    (with_input.py): ``dist.init_process_group`` in the entry, ``input_types`` INT_32 rows gathered into
    ``[1, 1]`` int32 buffers; world size 2 here (3 in the original) for a 2-core machine."""
    env, t_env = table_env()
    statement_set = t_env.create_statement_set()
    config = (PyTorchClusterConfig.new_builder().set_world_size(2)
              .set_node_entry(str(EXAMPLES / "all_gather.py"), "main").set_property("out", tmp_path).build())
    assert config.get_entry_python_file_path() == str(EXAMPLES / "all_gather.py")
    assert (config.get_entry_func_name(), config.get_node_type_cnt_map()) == ("main", {"worker": 2})
    train(statement_set, config)
    statement_set.execute().wait()
    for rank in (0, 1):
        seen = json.loads((tmp_path / f"all_gather-{rank}.json").read_text())
        assert seen["gathered"] == [[0], [1]]
        assert seen["names"] == {"identity": f"worker:{rank}", "index": rank, "roleName": "worker", "failNum": 0,
                                 "properties": {"out": str(tmp_path)}, "roleParallelism": {"worker": 2}}

    env, t_env = table_env()
    statement_set = t_env.create_statement_set()
    source_table = t_env.from_data_stream(env.from_collection([1, 2, 3, 4], Types.INT()))
    config = (PyTorchClusterConfig.new_builder().set_node_entry(str(EXAMPLES / "all_gather.py"), "with_input")
              .set_world_size(2).set_property("input_types", "INT_32").set_property("out", tmp_path).build())
    train(statement_set, config, source_table)
    statement_set.execute().wait()
    rounds = [json.loads((tmp_path / f"with_input-{rank}.json").read_text())["gathered"] for rank in (0, 1)]
    assert rounds[0] == rounds[1] and len(rounds[0]) == 2  # two rows each, gathered by both ranks
    assert sorted(value for gathered in rounds[0] for (value,), in gathered) == [1, 2, 3, 4]


def test_linear_regression_example_trained_then_used_for_inference(tmp_path):
    """dl-on-flink-examples-pytorch: ``Linear.java`` (datagen x in [0, 1], y = 2x + 1; train, then
    inference into CSV) with ``linear.py`` unchanged but for its imports. 2,048 samples and 30 epochs
    here (256,000 and 1 in the original) so the model converges in the test's time."""
    model_path = tmp_path / "model" / "linear.pt"

    def sample(t_env, rows: int):
        return t_env.from_descriptor(
            TableDescriptor.for_connector("datagen")
            .schema(Schema.new_builder().column("x", DataTypes.DOUBLE()).column_by_expression("y", "2 * x + 1").build())
            .option("fields.x.min", "0").option("fields.x.max", "1").option("number-of-rows", str(rows)).build()
        )

    env, t_env = table_env()
    statement_set = t_env.create_statement_set()
    config = (PyTorchClusterConfig.new_builder().set_world_size(2)
              .set_node_entry(str(EXAMPLES / "linear.py"), "train")
              .set_property("model_save_path", str(model_path)).set_property("input_types", "FLOAT_64,FLOAT_64")
              .build())
    train(statement_set, config, sample(t_env, 2048), 30)
    statement_set.execute().wait()
    assert model_path.exists()

    env, t_env = table_env()
    statement_set = t_env.create_statement_set()
    config = (PyTorchClusterConfig.new_builder().set_world_size(2)
              .set_node_entry(str(EXAMPLES / "linear.py"), "inference")
              .set_property("model_save_path", str(model_path)).set_property("input_types", "FLOAT_64")
              .set_property("output_types", "FLOAT_64,FLOAT_64").build())
    output = inference(statement_set, sample(t_env, 100).drop_columns(col("y")), config,
                       Schema.new_builder().column("x", DataTypes.DOUBLE()).column("y", DataTypes.DOUBLE()).build())
    out_dir = tmp_path / "inference"
    statement_set.add_insert(
        TableDescriptor.for_connector("filesystem").format("csv").option("path", str(out_dir)).build(), output
    )
    statement_set.execute().wait()
    rows = [(float(x), float(y)) for p in out_dir.rglob("*") if p.is_file() and not p.name.startswith(".")
            for x, y in csv.reader(p.read_text().splitlines())]
    assert len(rows) == 100
    assert max(abs(y - (2 * x + 1)) for x, y in rows) < 0.2, rows[:5]


def test_cancel_while_failover(tmp_path):
    """FailOverTest.java ``testCancelWhileFailover``: train with always_fail.py, cancel the job while the
    cluster fails over; the job ends cancelled — and here also: no node child is left, and no attempt
    starts after the cancel. World size 2 (3 in the original)."""
    log = tmp_path / "attempts.log"
    env, t_env = table_env()
    statement_set = t_env.create_statement_set()
    config = (PyTorchClusterConfig.new_builder().set_world_size(2)
              .set_node_entry(str(EXAMPLES / "always_fail.py"), "map_func").set_max_failover(100)
              .set_property("log", str(log)).build())
    train(statement_set, config)
    job_client = statement_set.execute().get_job_client()
    result = job_client.get_job_execution_result()
    attempts = lambda: log.read_text().splitlines() if log.exists() else []  # noqa: E731
    try:
        wait_for(lambda: "worker:1 1" in attempts(), timeout=180, what="the first failover")
        wait_for(lambda: our_processes(cmdline=CHILD_MODULE), timeout=60, what="a node child of the next attempt")
    finally:
        job_client.cancel().result()
    cancelled = time.monotonic()
    assert wait_no_process_left(cmdline=CHILD_MODULE, timeout=10) == []
    assert time.monotonic() - cancelled <= 5
    seen = attempts()
    # Only a node's supervisor starts its children, and it kills them before it ends: a failover that went
    # on would have started a new attempt before they all ended, or kept them alive.
    wait_for(lambda: not live_supervisors(), timeout=60, what="every node supervisor to end after the cancel")
    assert attempts() == seen, "attempts started after the cancel"
    with pytest.raises(Exception, match="JobCancellationException"):
        result.result()


def worker_1_waits_for_worker_0(ctx):
    from aiflow_notebook.testing.waiting import wait_for

    if ctx.get_index() == 1:
        finished = wait_for(ctx.get_finished_worker_nodes, timeout=60, what="worker 0 to finish")
        Path(ctx.get_property("out")).write_text(json.dumps(finished))


def test_get_finished_worker_nodes_lists_the_workers_whose_entry_returned(tmp_path):
    """dl-on-flink's ``Context.get_finished_worker_nodes()``. The AM and node runners in this process
    (no Flink), real child processes."""
    from dl_on_flink.framework.address_book import FileAddressBook
    from dl_on_flink.framework.am import ApplicationMaster
    from dl_on_flink.framework.cluster import ClusterConfig
    from dl_on_flink.framework.node import NodePlan, NodeRunner

    out = tmp_path / "finished.json"
    config = (ClusterConfig.new_builder().add_node_type("worker", 2).set_node_entry(worker_1_waits_for_worker_0)
              .set_property("out", out).set_property("heartbeat_interval", 0.1).build())
    book = FileAddressBook(tmp_path / "book")
    am = ApplicationMaster("job", config, book, has_input=False)
    runners = [NodeRunner(NodePlan("job", config, "worker", book), i).start() for i in range(2)]
    try:
        am.run(stop_after=120)
    finally:
        for runner in runners:
            runner.close()
    assert json.loads(out.read_text()) == [0]


def test_an_entry_file_that_does_not_exist_is_refused_when_the_config_is_built(tmp_path):
    from dl_on_flink.errors import ConfigError

    with pytest.raises(ConfigError, match="does not exist"):
        PyTorchClusterConfig.new_builder().set_world_size(1).set_node_entry(str(tmp_path / "nope.py"), "main").build()
    with pytest.raises(ConfigError, match="name the function"):
        PyTorchClusterConfig.new_builder().set_world_size(1).set_node_entry(str(EXAMPLES / "linear.py"))


def shapes_and_dtypes(ctx):
    import torch
    from torch.utils.data import DataLoader

    from dl_on_flink.pytorch import PyTorchContext

    seen = []
    for n, x in DataLoader(PyTorchContext(ctx).get_dataset_from_flink(as_tensors=True), batch_size=4):
        seen.append([list(n.shape), str(n.dtype), list(x.shape), str(x.dtype), int(n.sum()),
                     bool(torch.equal(x, n.double() / 2))])
    Path(ctx.get_property("out")).write_text(json.dumps(seen))


def test_the_dl_on_flink_shaped_dataset_is_one_argument_away(tmp_path):
    """Without dl-on-flink's ``input_types``: ``get_dataset_from_flink(as_tensors=True)`` gives one ``[1]``
    tensor per column typed by the row type, so a batch of 4 rows is ``[4, 1]`` (INT → int32)."""
    out = tmp_path / "seen.json"
    env = local_env()
    rows = env.from_collection([(i, i / 2) for i in range(8)],
                               type_info=Types.ROW_NAMED(["n", "x"], [Types.INT(), Types.DOUBLE()]))
    config = (PyTorchClusterConfig.new_builder().set_world_size(1).set_node_entry(shapes_and_dtypes)
              .set_property("out", out).build())
    train(env, config, rows)
    env.execute("as tensors")
    assert json.loads(out.read_text()) == [[[4, 1], "torch.int32", [4, 1], "torch.float64", 6, True],
                                           [[4, 1], "torch.int32", [4, 1], "torch.float64", 22, True]]
