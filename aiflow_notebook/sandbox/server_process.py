"""An ``aiflow server start`` process on this machine: started as a user would start it, awaited until it
listens, stopped by pid (its whole process group), never by name.

The one way we run a local server in a process of its own: ``%aiflow server start`` in a notebook,
``aiflow demo --cluster`` and the tests and benchmarks that need a real server.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from aiflow_notebook.core.errors import AIFlowError
from aiflow_notebook.core.processes import end_process, signal_group
from aiflow_notebook.core.waiting import polling

LISTENING = re.compile(r"listening on (\S+) \(updates on (\S+)\)")


class ServerStartError(AIFlowError):
    """The server process ended, or did not listen in time; the message quotes the end of its log."""


class ServerProcess:
    """``ServerProcess(["--db", url, "--bind", addr], log_path=...)``: ``start()``, then ``url`` and
    ``publish_url`` are where clients connect; ``stop()`` (SIGTERM, then SIGKILL after the grace period)
    or ``kill()`` (SIGKILL at once, as a crash)."""

    def __init__(self, args: list[str], *, log_path: str | os.PathLike, env: dict[str, str] | None = None,
                 cwd: str | os.PathLike | None = None):
        self.args = list(args)
        self.log_path = Path(log_path)
        self.env = env
        self.cwd = cwd
        self.process: subprocess.Popen | None = None
        self.url: str | None = None
        self.publish_url: str | None = None

    def command(self) -> list[str]:
        return [sys.executable, "-m", "aiflow_notebook.cli", "server", "start", *self.args]

    def start(self, timeout: float = 60.0) -> ServerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "w") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                            env=self.env, cwd=self.cwd, start_new_session=True)
        for _ in polling(timeout, 0.1):
            match = LISTENING.search(self.log())
            if match:
                self.url, self.publish_url = match.group(1), match.group(2)
                return self
            if self.process.poll() is not None:
                break
        code = self.process.poll()
        self.stop()
        why = f"exited with code {code}" if code is not None else f"did not listen within {timeout:g} s"
        raise ServerStartError(f"the aiflow server ({' '.join(self.command()[1:])}) {why}; the end of its log "
                               f"({self.log_path}):\n{self.log()[-3000:]}")

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def stop(self, grace: float = 15.0) -> int | None:
        """SIGTERM its process group, SIGKILL what is left after ``grace`` seconds; the exit code."""
        if self.process is None:
            return None
        end_process(self.process, grace)
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL (``kill -9``): no clean-up of any kind runs in the server."""
        if self.alive:
            signal_group(self.process.pid, signal.SIGKILL)
            self.process.wait(30)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
