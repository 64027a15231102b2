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
