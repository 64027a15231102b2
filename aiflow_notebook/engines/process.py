"""Job processes: each job runs in its own process group, supervised by a tiny launcher.

Why a launcher: the scheduler must survive its own crash. A restarted scheduler cannot ``waitpid`` a
job it did not start, so the launcher (the group leader) waits for the job and writes its exit status
to a file atomically. A restarted scheduler *adopts* a job by pid + process start time (so a recycled
pid is never mistaken for the job) and reads the status file once the job is gone.

Stopping sends SIGTERM to the whole group, then SIGKILL after a grace period: nothing is orphaned.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from aiflow_notebook.core.processes import end_group
from aiflow_notebook.core.waiting import Deadline

# Set by PyFlink's Python worker in the process that ran a local job (loopback mode) and inherited by
# every child: a job process that inherits them believes it is a UDF worker and refuses to start Flink, and
# a Flink cluster's JVMs that inherit them run their Python operators back in that process.
PYFLINK_WORKER_VARIABLES = frozenset({
    "PYFLINK_GATEWAY_DISABLED", "PYFLINK_GATEWAY_PORT", "_PYFLINK_CONN_INFO_PATH", "PYTHON_LOOPBACK_SERVER_ADDRESS",
    "SEMI_PERSISTENT_DIRECTORY", "BOOT_LOG_DIR", "_PYTHON_WORKER_MEMORY_LIMIT", "TABLE_LOCAL_TIME_ZONE", "WORKER_ID",
    "PIPELINE_OPTIONS", "LOGGING_API_SERVICE_DESCRIPTOR", "CONTROL_API_SERVICE_DESCRIPTOR", "FLINK_BOOT_TESTING",
    "python",
})

STOP_GRACE_S = 10.0
# A streaming Flink job stops with a savepoint; on a busy machine that can take longer than 10 s, and a job
# killed before it finishes restarts fresh (re-reading its input). Give it a minute unless told otherwise.
STREAMING_FLINK_STOP_GRACE_S = 60.0
LEFTOVERS_S = 5.0  # for what is left of a job's group to go after its SIGKILL
# Run by path, not with -m: -m would import this package (~90 ms of CPU) before every job; the launcher
# imports the standard library only (see its docstring).
LAUNCHER = str(Path(__file__).with_name("launcher.py"))


def stop_grace(engine: str | None, streaming: bool, properties: dict | None) -> float:
    """Seconds a job's process gets between SIGTERM and SIGKILL: the job property ``stop_grace``, else
    the default for its kind (longer for a streaming Flink job, which stops with a savepoint)."""
    grace = (properties or {}).get("stop_grace")
    if grace is not None:
        return float(grace)
    return STREAMING_FLINK_STOP_GRACE_S if (engine or "python") == "flink" and streaming else STOP_GRACE_S


@dataclass(frozen=True)
class ProcessRecord:
    """What the scheduler stores to find a job process again after a restart. ``pid`` 0: a process that
    had ended before anyone recorded its pid, known only by its status file."""

    pid: int
    create_time: float
    log_path: str
    status_path: str

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ProcessRecord:
        return cls(**json.loads(text))


@dataclass(frozen=True)
class ExitStatus:
    returncode: int | None  # None: the job vanished without a status (killed with its launcher)
    signal: int | None = None

    @property
    def succeeded(self) -> bool:
        return self.returncode == 0


class JobProcess:
    """A running (or finished) job process group."""

    def __init__(self, record: ProcessRecord, popen: subprocess.Popen | None = None):
        self.record = record
        self._popen = popen

    @classmethod
    def launch(cls, argv: list[str], log_path: Path, env: dict[str, str] | None = None,
               cwd: str | Path | None = None, stdin: int | None = None) -> JobProcess:
        """Start ``argv`` under the launcher in a new session; output goes to ``log_path``.

        ``stdin``: a file descriptor the job reads its standard input from (default ``/dev/null``), e.g.
        the read end of a pipe that carries secrets the job must not find in its environment or on disk.
        """
        log_path = Path(log_path)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        status_path = log_path.with_suffix(".status.json")
        status_path.unlink(missing_ok=True)
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(
                [sys.executable, LAUNCHER, str(status_path), "--", *argv],
                stdin=subprocess.DEVNULL if stdin is None else stdin, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env=env, cwd=cwd,
            )
        create_time = psutil.Process(popen.pid).create_time()
        return cls(ProcessRecord(popen.pid, create_time, str(log_path), str(status_path)), popen)

    @classmethod
    def adopt(cls, record: ProcessRecord) -> JobProcess:
        """Take over a job process started by an earlier scheduler (it may have finished meanwhile)."""
        return cls(record)

    @classmethod
    def ended(cls, log_path: str | Path, status_path: str | Path) -> JobProcess:
        """A job process that ended before its pid was recorded (a crash of the scheduler that started it):
        only its status file is left, and that is all :meth:`poll` needs."""
        return cls(ProcessRecord(0, 0.0, str(log_path), str(status_path)))

    @property
    def pid(self) -> int:
        return self.record.pid

    def is_alive(self) -> bool:
        if self._popen is not None:
            return self._popen.poll() is None
        if self.record.pid <= 0:
            return False
        try:
            proc = psutil.Process(self.record.pid)
            return abs(proc.create_time() - self.record.create_time) < 0.01 and proc.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    def poll(self) -> ExitStatus | None:
        """None while running; the exit status once it ended."""
        if self.is_alive():
            return None
        status_file = Path(self.record.status_path)
        if status_file.exists():
            data = json.loads(status_file.read_text())
            return ExitStatus(data["returncode"], data.get("signal"))
        if self._popen is not None:  # the launcher itself died (e.g. SIGKILL to the group)
            code = self._popen.returncode
            return ExitStatus(None, -code if code is not None and code < 0 else None)
        return ExitStatus(None)

    def wait(self, timeout: float | None = None, interval: float = 0.02) -> ExitStatus | None:
        deadline = Deadline(timeout)
        while (status := self.poll()) is None:
            if deadline.passed:
                return None
            if self._popen is not None:
                try:
                    self._popen.wait(timeout=min(interval, deadline.left()))
                except subprocess.TimeoutExpired:
                    pass
            else:
                deadline.sleep(interval)
        return status

    def stop(self, grace: float = STOP_GRACE_S) -> ExitStatus:
        """SIGTERM the whole process group; SIGKILL it when the job has not ended after ``grace`` seconds (its
        stacks go to its log first). What is left of the group once the job ended is killed at once."""
        pgid = self.record.pid
        if pgid > 0:  # (0 would be "our own process group")
            end_group(pgid, grace, ended=lambda: not self.is_alive(), before_kill=lambda: _dump_job_stacks(pgid),
                      settle=LEFTOVERS_S)
        return self.wait(LEFTOVERS_S) or ExitStatus(None, signal.SIGKILL)

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.record.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - 16_384))
                return "\n".join(fh.read().decode("utf-8", "replace").splitlines()[-lines:])
        except OSError:
            return ""


def _dump_job_stacks(launcher: int) -> None:
    """Ask the job under ``launcher`` to write its threads' stacks to its log (``job_main`` registers
    SIGUSR1 for that) before it is killed: the log then says where a job that ignored its stop was stuck."""
    try:
        jobs = [p for p in psutil.Process(launcher).children() if "aiflow_notebook.engines.job_main" in p.cmdline()]
        for job in jobs:
            job.send_signal(signal.SIGUSR1)
    except (psutil.Error, OSError):
        return
    if jobs:
        time.sleep(0.5)
