"""``aiflow demo --cluster`` end to end: real JVMs, a CURVE server, a kernel as the notebook; every Flink and dl
job on the cluster (Flink's REST record), then no process left. Then a second run (with --postgres) stopped
by Ctrl-C in the middle: it leaves nothing either. (A full run takes 3-4 minutes here, so the suite runs one.)"""

from __future__ import annotations

import json
import subprocess
import sys

import psutil
import pytest

from aiflow_notebook.testing.processes import wait_no_process_left

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

DEMO_DIR = "aiflow-demo-cluster-"  # every process the demo starts names its private directory


def _demo(tmp_path, *extra: str) -> dict:
    summary_file = tmp_path / f"summary{len(extra)}.json"
    result = subprocess.run([sys.executable, "-m", "aiflow_notebook.cli", "demo", "--cluster", "--summary",
                             str(summary_file), *extra], capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-6000:]
    summary = json.loads(summary_file.read_text())
    assert f"Flink web UI: {summary['flink_web_ui']}" in result.stdout
    assert summary["flink_web_ui"].startswith("http://127.0.0.1:")

    assert len(summary["jvm_pids"]) == 3  # a JobManager and two TaskManagers were really started...
    assert [pid for pid in summary["jvm_pids"] if psutil.pid_exists(pid)] == []  # ...and are gone
    assert wait_no_process_left(cmdline=DEMO_DIR, timeout=10) == []

    states = {}
    for job in summary["flink_jobs"]:
        states.setdefault(job["name"], []).append(job["state"])
        assert job["taskmanagers"], job  # Flink placed its tasks on the cluster's TaskManagers
    assert states.get("ctr.prep") and set(states["ctr.prep"]) == {"FINISHED"}, states
    on_cluster = {job["name"]: (job["engine"], len(job["flink_jobs"])) for run in summary["runs"] for job in run["jobs"]}
    assert all(count > 0 for engine, count in on_cluster.values() if engine in ("flink", "pytorch", "tensorflow")), \
        on_cluster  # every Flink and dl job of the notebook's run ran on the cluster
    if on_cluster["train"][0] == "pytorch":
        assert states.get("ctr.train") and set(states["ctr.train"]) == {"FINISHED"}, states
    # the streaming job ran on the cluster as one Flink job — v2 was swapped in place (SWAP: the notebook waited
    # for its MODEL_SWAPPED, which its TaskManager instances said over CURVE) — and stopped at the end with a
    # savepoint (FINISHED) or, if that failed, was cancelled
    assert len(states.get("ctr.serve", [])) == 1 and set(states["ctr.serve"]) <= {"FINISHED", "CANCELED"}, states
    assert "VALIDATED" in {v["stage"] for v in summary["model_versions"] if v["model"] == "ctr"}, summary
    return summary


def test_the_cluster_demo_runs_the_quickstart_on_the_cluster_and_leaves_nothing(tmp_path):
    # A quarter of the quickstart's click log: the story at full size is tests/test_quickstart_story.py's;
    # here what matters is where every job runs and that nothing is left.
    summary = _demo(tmp_path, "--impressions", "50000")
    assert summary["database"].startswith("sqlite:///")


def test_ctrl_c_in_the_middle_stops_everything_it_started(tmp_path):
    """Ctrl-C in a terminal: SIGINT to the demo's whole process group while the notebook runs."""
    import os
    import re
    import signal

    from aiflow_notebook.testing.waiting import wait_for

    log = tmp_path / "demo.log"
    with open(log, "w") as out:
        demo = subprocess.Popen([sys.executable, "-u", "-m", "aiflow_notebook.cli", "demo", "--cluster", "--postgres"],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: "-- [2/" in log.read_text(), timeout=300, what="the notebook to be running")
        pg_port = re.search(r"== PostgreSQL on 127\.0\.0\.1:(\d+)", log.read_text()).group(1)
        jvms = [int(pid) for pid in re.search(r"JVM pids \[([\d, ]+)\]", log.read_text()).group(1).split(",")]
        assert len(jvms) == 3 and all(psutil.pid_exists(pid) for pid in jvms)
        os.killpg(demo.pid, signal.SIGINT)
        assert demo.wait(180) != 0
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(30)
    assert [pid for pid in jvms if psutil.pid_exists(pid)] == [], log.read_text()[-3000:]
    assert wait_no_process_left(cmdline=DEMO_DIR, timeout=20) == []
    postmasters = [p.pid for p in psutil.process_iter(["cmdline"])
                   if "postgres" in " ".join(p.info["cmdline"] or []) and f"-p {pg_port} " in " ".join(p.info["cmdline"] or [])]
    assert postmasters == [], "the demo's PostgreSQL outlived it"
