"""Job processes: launch in a process group, exit status via the launcher, adoption, stop without orphans."""

from __future__ import annotations

import os
import signal
import time

from aiflow_notebook.engines.process import JobProcess, ProcessRecord
from aiflow_notebook.testing.processes import our_processes
from aiflow_notebook.testing.waiting import wait_for


def _group_members(pgid: int) -> list[str]:
    return our_processes(pgids=[pgid])


def test_exit_status_and_log(tmp_path):
    ok = JobProcess.launch(["bash", "-c", "echo hello from the job"], tmp_path / "ok.log")
    assert ok.wait(30).succeeded
    assert "hello from the job" in ok.log_tail()
    bad = JobProcess.launch(["bash", "-c", "echo boom >&2; exit 3"], tmp_path / "bad.log")
    status = bad.wait(30)
    assert status.returncode == 3 and not status.succeeded
    assert bad.log_tail().strip() == "boom"


def test_a_restarted_supervisor_adopts_a_running_job_and_learns_its_exit_code(tmp_path):
    marker = tmp_path / "go"
    job = JobProcess.launch(["bash", "-c", f"while [ ! -e {marker} ]; do sleep 0.05; done; exit 7"], tmp_path / "j.log")
    saved = job.record.to_json()  # what the scheduler commits
    adopted = JobProcess.adopt(ProcessRecord.from_json(saved))  # a new supervisor, not the parent
    assert adopted.is_alive() and adopted.poll() is None
    marker.touch()
    assert adopted.wait(30).returncode == 7
    job.wait(5)


def test_a_recycled_pid_is_not_mistaken_for_the_job(tmp_path):
    record = ProcessRecord(pid=os.getpid(), create_time=1.0, log_path=str(tmp_path / "x.log"),
                           status_path=str(tmp_path / "x.status.json"))
    adopted = JobProcess.adopt(record)
    assert not adopted.is_alive()
    assert adopted.poll().returncode is None  # gone without a status: the caller treats it as lost


def test_stop_kills_the_whole_group_including_grandchildren(tmp_path):
    job = JobProcess.launch(["bash", "-c", "trap '' TERM; sleep 300 & sleep 300 & wait"], tmp_path / "s.log")
    wait_for(lambda: len(_group_members(job.pid)) >= 4, timeout=10,  # launcher, bash, 2x sleep
             what="the launcher, bash and two sleeps in the job's process group")
    started = time.monotonic()
    status = job.stop(grace=1.0)
    assert time.monotonic() - started < 8
    assert not status.succeeded
    assert _group_members(job.pid) == []


def test_sigkill_of_the_launcher_is_reported_as_lost(tmp_path):
    job = JobProcess.launch(["sleep", "300"], tmp_path / "k.log")
    os.killpg(job.pid, signal.SIGKILL)
    status = job.wait(10)
    assert status is not None and status.returncode is None and status.signal == signal.SIGKILL


def test_a_job_known_only_by_its_status_file_reports_its_exit_and_stop_signals_nothing(tmp_path):
    finished = JobProcess.launch(["bash", "-c", "exit 4"], tmp_path / "e.log")
    assert finished.wait(30).returncode == 4
    ended = JobProcess.ended(finished.record.log_path, finished.record.status_path)  # its pid was never recorded
    assert not ended.is_alive() and ended.poll().returncode == 4
    assert ended.stop(grace=1).returncode == 4  # and it signals no process group (pid 0 would be ours)
