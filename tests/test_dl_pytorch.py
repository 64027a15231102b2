"""PyTorch clusters in real PyFlink jobs on the local mini-cluster, with real child processes."""

from __future__ import annotations

import json
import sys

import cloudpickle
import pytest

from dl_on_flink.pytorch import PyTorchClusterConfig, train
from dl_on_flink.testing import local_env, wait_no_children

cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def no_child_left_behind():
    yield
    assert wait_no_children() == [], "a node child process outlived its job"


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
