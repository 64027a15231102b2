"""Deep learning and Flink jobs on a real standalone Flink cluster (docs/cluster.md; docs/benchmarks.md).

    .venv/bin/python bench/cluster_bench.py [--runs 3] [--ddp-steps 3000]

One standalone cluster from the PyFlink wheel (1 JobManager + 2 TaskManagers, 2 slots each, on loopback)
and one event server (the bus the dl roles find each other on) serve every figure. Prints one JSON line per
figure, the median of --runs runs:

- ddp_train_ratio: 2-worker DDP training time (bench/dl_bench.py's workload: linear regression, batch 64,
  --ddp-steps steps, timed inside rank 0) of a ``pytorch`` job with ``platform="flink://..."`` — its nodes in
  the two TaskManagers — ÷ the same training started with ``torch.multiprocessing``.
- dl_startup_on_cluster: from ``scheduler.submit`` of that job to the moment the last node's entry starts
  (the job process, ``flink run``, scheduling, Python workers, the AM, the address exchange on the bus, the
  node children and ``torch.distributed`` initialisation).
- submit_to_running: a fresh process submits the same one-operator streaming PyFlink job (a Python map)
  to the session cluster (``flink run -d``, as the engine does), to the session cluster from its own
  PyFlink JVM (``gateway``: a Java ``StreamExecutionEnvironment`` with ``execution.target: remote``), and to
  the local mini-cluster (``execute_async`` in that process); figure = seconds from the process's start to
  Flink's job status RUNNING, and to the first record reaching the Python map, side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import cloudpickle
from benchlib import emit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from dl_bench import ddp_multiprocessing, ddp_train  # noqa: E402  (the same workload, side by side)


def ddp_entry(ctx) -> None:
    import json
    import time
    from pathlib import Path

    from dl_on_flink.pytorch import PyTorchContext

    started = time.time()
    pt = PyTorchContext(ctx)
    seconds = ddp_train(pt.get_rank(), pt.get_world_size(), int(ctx.get_property("steps")))
    Path(ctx.get_property("out"), f"rank{pt.get_rank()}.json").write_text(
        json.dumps({"entry_started": started, "train_s": seconds}))
    return None


def ddp_on_cluster(cluster, steps: int) -> tuple[float, float, float]:
    """(train seconds on rank 0, submit → last entry started, of which: submit → the JobManager has the job)
    of one pytorch job on the cluster."""
    import aiflow_notebook as af
    from aiflow_notebook.scheduler import EmbeddedScheduler
    from aiflow_notebook.testing.sdk import reset_sdk

    reset_sdk()
    out = Path(tempfile.mkdtemp(prefix="cluster-bench-"))
    with af.workflow("ddp_bench"):
        with af.job_config("train", engine="pytorch", platform=f"flink://{cluster.address}",
                           properties={"workers": 2, "steps": steps, "out": str(out)}):
            af.train(None, trainer=ddp_entry, model="ddp_bench")
    workflow = af.compile("ddp_bench")
    with EmbeddedScheduler() as scheduler:
        submitted = time.time()
        run = scheduler.submit(workflow)
        state = run.wait(600)
        if state != "FINISHED":
            raise RuntimeError(f"the DDP job ended {state}: {run.errors()}")
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    received = _received_at(cluster, next(j["jid"] for j in cluster.jobs() if j["name"] == "ddp_bench.train"
                                          and j["state"] == "FINISHED" and j["start-time"] / 1000 > submitted))
    return ranks[0]["train_s"], max(r["entry_started"] for r in ranks) - submitted, received - submitted


def _received_at(cluster, job_id: str) -> float:
    """When the JobManager received the job (its INITIALIZING timestamp), in seconds since the epoch."""
    stamps = cluster.rest(f"/jobs/{job_id}")["timestamps"]
    return min(v for k, v in stamps.items() if k in ("INITIALIZING", "CREATED") and v) / 1000


PROBE = textwrap.dedent("""\
    import sys, time
    from pathlib import Path
    from pyflink.common import Configuration, Types
    from pyflink.datastream import StreamExecutionEnvironment

    MARK = Path(sys.argv[1])
    STOP = MARK.with_name("stop")
    MODE = sys.argv[2]  # cli (run by `flink run -d`), local RUNNING_FILE, or gateway HOST:PORT JOB_ID_FILE

    def first(x):
        if not MARK.exists():
            MARK.write_text(repr(time.time()))
        deadline = time.time() + 120
        while not STOP.exists() and time.time() < deadline:  # a running job until told (or cancelled)
            time.sleep(0.05)
        return x

    config = Configuration()
    config.set_string("python.executable", sys.executable)
    if MODE == "gateway":  # this process's own PyFlink JVM submits to the session cluster over REST
        from pyflink.java_gateway import get_gateway

        host, port = sys.argv[3].split(":")
        for key, value in (("execution.target", "remote"), ("rest.address", host), ("rest.port", port),
                           ("python.client.executable", sys.executable)):
            config.set_string(key, value)
        env = StreamExecutionEnvironment(get_gateway().jvm.org.apache.flink.streaming.api.environment
                                         .StreamExecutionEnvironment(config._j_configuration))
    else:
        env = StreamExecutionEnvironment.get_execution_environment(config)
    env.set_parallelism(1)
    env.from_collection([1], type_info=Types.INT()).map(first, output_type=Types.INT()).print()
    if MODE == "local":  # run in this process and report RUNNING
        client = env.execute_async("submit-bench")
        while client.get_job_status().result().name != "RUNNING":
            time.sleep(0.05)
        Path(sys.argv[3]).write_text(repr(time.time()))
        while not MARK.exists():
            time.sleep(0.05)
        STOP.write_text("")
        client.get_job_execution_result().result()
    elif MODE == "gateway":
        Path(sys.argv[4]).write_text(str(env.execute_async("submit-bench").get_job_id()))
    else:
        env.execute("submit-bench")  # flink run -d: submits and returns
""")


def submit_to_running(cluster, where: str) -> tuple[float, float, float | None]:
    """(process start → RUNNING, process start → first record, JobManager received → RUNNING) of the probe
    job, ``where`` local | cluster (``flink run -d``) | gateway (the process's own PyFlink JVM submits to the
    session cluster; flink-python is in the cluster's lib, so no jar travels); the last figure only on the
    cluster, from Flink's own timestamps."""
    import pyflink

    tmp = Path(tempfile.mkdtemp(prefix="submit-bench-"))
    script, mark, running, job_file = tmp / "probe.py", tmp / "first", tmp / "running", tmp / "job_id"
    script.write_text(PROBE)
    started = time.time()
    if where == "local":
        subprocess.run([sys.executable, str(script), str(mark), "local", str(running)], check=True,
                       capture_output=True, timeout=300)
        return float(running.read_text()) - started, float(mark.read_text()) - started, None
    if where == "gateway":
        subprocess.run([sys.executable, str(script), str(mark), "gateway", cluster.address, str(job_file)],
                       check=True, capture_output=True, timeout=300)
        job_id = job_file.read_text().strip()
    else:
        flink = Path(pyflink.__file__).parent / "bin" / "flink"
        done = subprocess.run([str(flink), "run", "-d", "-m", cluster.address, "-pyclientexec", sys.executable,
                               "-pyexec", sys.executable, "-py", str(script), str(mark), "cli"],
                              capture_output=True, text=True, timeout=300)
        job_id = re.search(r"JobID ([0-9a-f]{32})", done.stdout + done.stderr).group(1)
    deadline = time.monotonic() + 120
    while not mark.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    (tmp / "stop").write_text("")
    cluster.rest(f"/jobs/{job_id}?mode=cancel", "PATCH")
    # Flink's own record of when the job turned RUNNING (`flink run -d` itself returns seconds later)
    running_at = cluster.rest(f"/jobs/{job_id}")["timestamps"]["RUNNING"] / 1000
    in_cluster = running_at - _received_at(cluster, job_id)
    return running_at - started, float(mark.read_text()) - started, in_cluster


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--ddp-steps", type=int, default=3000)
    parser.add_argument("--only", choices=["ddp", "submit"], action="append")
    args = parser.parse_args()
    only = set(args.only or ["ddp", "submit"])
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    import dl_bench

    cloudpickle.register_pickle_by_value(dl_bench)
    from aiflow_notebook.sandbox.flink_cluster import StandaloneFlinkCluster

    home = tempfile.mkdtemp(prefix="cluster-bench-home-")
    os.environ["AIFLOW_HOME"] = home
    os.environ.pop("AIFLOW_META_URL", None)
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    with StandaloneFlinkCluster(taskmanagers=2, slots=2, jobmanager_mb=768, taskmanager_mb=1536) as cluster:
        if "ddp" in only:
            ratios, startups, clients = [], [], []
            for _ in range(args.runs):
                cluster_train, startup, client = ddp_on_cluster(cluster, args.ddp_steps)
                _wall, mp_train = ddp_multiprocessing(args.ddp_steps)
                ratios.append(cluster_train / mp_train)
                startups.append(startup)
                clients.append(client)
            emit("cluster", "ddp_train_ratio", statistics.median(ratios), "ratio", steps=args.ddp_steps,
                 runs=[round(r, 3) for r in ratios], target="<= 1.2")
            emit("cluster", "dl_startup_on_cluster", statistics.median(startups), "s",
                 runs=[round(s, 1) for s in startups], target="<= 20")
            emit("cluster", "dl_startup_submit_to_jobmanager", statistics.median(clients), "s",
                 runs=[round(c, 1) for c in clients], note="job process + flink run client")
        if "submit" in only:
            for where in ("cluster", "gateway", "local"):
                figures = [submit_to_running(cluster, where) for _ in range(args.runs)]
                emit("cluster", f"submit_to_running_{where}", statistics.median(f[0] for f in figures), "s",
                     runs=[round(f[0], 2) for f in figures], target="<= 3" if where != "local" else None)
                emit("cluster", f"submit_to_first_record_{where}", statistics.median(f[1] for f in figures), "s",
                     runs=[round(f[1], 2) for f in figures])
                if where == "cluster":
                    emit("cluster", "jobmanager_received_to_running", statistics.median(f[2] for f in figures), "s",
                         runs=[round(f[2], 2) for f in figures], note="Flink's own timestamps")


if __name__ == "__main__":
    main()
