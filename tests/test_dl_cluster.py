"""Engine pytorch on a real standalone Flink cluster (1 JobManager + 2 TaskManagers from the PyFlink wheel):
the AM and the nodes run in the TaskManagers, find each other through the event bus (no shared files),
survive a killed node, and leave nothing behind when stopped."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import cloudpickle
import psutil
import pytest

import aiflow_notebook as af
from aiflow_notebook.engines.flink_rest import FlinkJobState
from aiflow_notebook.engines.model_io import TorchModel, load_model
from aiflow_notebook.testing.processes import wait_no_process_left
from aiflow_notebook.testing.waiting import wait_for
from dl_on_flink.testing import CHILD_MODULE

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # trainers defined here run in the TaskManagers

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

SCHEMA = {"x": "float", "y": "float"}


@pytest.fixture
def cluster(flink_cluster):
    return flink_cluster


@pytest.fixture(autouse=True)
def nothing_left_on_the_cluster(cluster):
    """Set up before the shared ``scheduler`` fixture, so checked after it stopped: no node child left (in the
    TaskManagers too, whatever their AIFLOW_HOME) and no job left running on the cluster."""
    yield
    assert wait_no_process_left(cmdline=CHILD_MODULE) == [], "a node child outlived its run"
    wait_for(lambda: all(job["state"] != FlinkJobState.RUNNING for job in cluster.jobs()), timeout=30,
             what="no job left running on the cluster")


def torch_linear_regression(ctx):

    import torch
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DataLoader

    marks = ctx.get_property("marks")
    if marks:  # where each rank ran, for the test: this child's pid and its ancestors'
        _mark(Path(marks), ctx)
    torch.manual_seed(0)
    model = DistributedDataParallel(torch.nn.Linear(1, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    data = ctx.get_dataset_from_flink()
    while not data.end_of_input:
        with model.join():
            for x, y in DataLoader(data, batch_size=16):
                optimizer.zero_grad()
                torch.nn.functional.mse_loss(model(x.float()[:, None]), y.float()[:, None]).backward()
                optimizer.step()
    return model if ctx.get_rank() == 0 else None


def allreduce_until_told(ctx):
    """Both ranks allreduce in lock-step; attempt 0 keeps going until the test kills rank 1 or stops the
    run; a later attempt finishes at once. Rank 0 returns a model."""
    import time

    import torch
    import torch.distributed as dist

    attempt = ctx.get_current_attempt_index()
    _mark(Path(ctx.get_property("marks")), ctx)
    steps = 0
    while attempt == 0 or steps < 5:
        value = torch.ones(1)
        dist.all_reduce(value)
        steps += 1
        time.sleep(0.05)
    return torch.nn.Linear(1, 1) if ctx.get_rank() == 0 else None


def _mark(marks: Path, ctx) -> None:
    """Write ``<pid> <ancestor pids...>`` of this node child to ``marks/rank<r>-attempt<a>``."""
    import os

    import psutil

    ancestors = [p.pid for p in psutil.Process().parents()]
    (marks / f"rank{ctx.get_rank()}-attempt{ctx.get_current_attempt_index()}").write_text(
        " ".join(map(str, [os.getpid(), *ancestors])))


def _child(marks: Path, rank: int, attempt: int = 0) -> tuple[int, list[int]]:
    pid, *ancestors = map(int, (marks / f"rank{rank}-attempt{attempt}").read_text().split())
    return pid, ancestors


def _points(tmp_path: Path) -> Path:
    path = tmp_path / "points.csv"
    path.write_text("".join(f"{i / 128 - 1},{2 * (i / 128 - 1) + 1}\n" for i in range(256)))
    return path


def _cluster_job(cluster, name: str) -> dict:
    return wait_for(lambda: next((job for job in cluster.jobs() if job["name"] == name), None),
                    timeout=120, what=f"Flink job {name} on the cluster")


def test_world_size_two_trains_on_the_cluster_with_nodes_in_different_taskmanagers(scheduler, cluster, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    platform = f"flink://{cluster.address}"
    with af.workflow("dl_cluster"):
        with af.job_config("train", engine="pytorch", platform=platform,
                           properties={"workers": 2, "epochs": 20, "marks": str(marks)}):
            af.train(af.read_dataset("points", uri=str(_points(tmp_path)), schema=SCHEMA),
                     trainer=torch_linear_regression, model="linreg", name="fit")
    run = scheduler.submit(af.compile("dl_cluster"))
    assert run.wait(300) == "FINISHED", run.errors()

    job = _cluster_job(cluster, "dl_cluster.train")
    assert job["state"] == FlinkJobState.FINISHED  # it really ran on the cluster
    placed = cluster.subtask_taskmanagers(job["jid"], "worker", parallelism=2)
    assert len(set(placed.values())) == 2, f"both workers in one TaskManager: {placed}"
    # the node children descend from the TaskManager JVMs (their Python workers), one in each
    taskmanagers = set(cluster.pids())
    homes = [set(_child(marks, rank)[1]) & taskmanagers for rank in (0, 1)]
    assert all(len(home) == 1 for home in homes) and homes[0] != homes[1], (homes, taskmanagers)

    version = scheduler.store.get_latest_model_version("linreg")
    assert version.version == 1 and version.job_run_id is not None
    model = load_model(version.uri)
    assert isinstance(model, TorchModel)
    w, b = model.module.weight.item(), model.module.bias.item()
    assert abs(w - 2) < 0.05 and abs(b - 1) < 0.05, (w, b)


def test_a_node_killed_mid_training_fails_over_and_the_job_finishes(scheduler, cluster, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    with af.workflow("dl_cluster_failover"):
        with af.job_config("train", engine="pytorch", platform=f"flink://{cluster.address}",
                           properties={"workers": 2, "max_failover": 2, "marks": str(marks)}):
            af.train(None, trainer=allreduce_until_told, model="failover")
    run = scheduler.submit(af.compile("dl_cluster_failover"))
    wait_for(lambda: (marks / "rank1-attempt0").exists() and (marks / "rank0-attempt0").exists(), timeout=180,
             what="both ranks of attempt 0 training on the cluster")
    time.sleep(1)  # mid-training: some all-reduces done
    os.kill(_child(marks, 1)[0], signal.SIGKILL)
    assert run.wait(240) == "FINISHED", run.errors()
    assert (marks / "rank0-attempt1").exists() and (marks / "rank1-attempt1").exists()
    assert _cluster_job(cluster, "dl_cluster_failover.train")["state"] == FlinkJobState.FINISHED
    assert scheduler.store.get_latest_model_version("failover").version == 1


def test_stopping_the_run_cancels_the_cluster_job_and_every_node(scheduler, cluster, tmp_path, aiflow_home):
    marks = tmp_path / "marks"
    marks.mkdir()
    with af.workflow("dl_cluster_stop"):
        with af.job_config("train", engine="pytorch", platform=f"flink://{cluster.address}",
                           properties={"workers": 2, "marks": str(marks)}):
            af.train(None, trainer=allreduce_until_told, model="never")
    run = scheduler.submit(af.compile("dl_cluster_stop"))
    wait_for(lambda: (marks / "rank0-attempt0").exists() and (marks / "rank1-attempt0").exists(), timeout=180,
             what="both ranks training on the cluster")
    children = [_child(marks, rank)[0] for rank in (0, 1)]
    assert run.stop() == "KILLED"
    wait_for(lambda: _cluster_job(cluster, "dl_cluster_stop.train")["state"] == FlinkJobState.CANCELED, timeout=30,
             what="the cluster job to be cancelled")
    wait_for(lambda: not any(psutil.pid_exists(pid) for pid in children), timeout=30,
             what=f"the node children {children} to end")
    assert not (aiflow_home / "models" / "never").exists()
