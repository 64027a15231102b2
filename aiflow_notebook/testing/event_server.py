"""A real ``aiflow server start`` process on a free loopback port, for tests and benchmarks.

It runs the command line exactly as a user would (``python -m aiflow_notebook.cli server start``), waits
for its "listening" line, and can stop it politely (SIGTERM) or kill it (SIGKILL, to test crash safety).
Always stop it in a ``finally`` or use it as a context manager: it is killed by pid, never by name.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from aiflow_notebook.core.ports import free_port
from aiflow_notebook.core.waiting import Deadline

_REPO = Path(__file__).resolve().parents[2]
_LISTENING = re.compile(r"listening on (\S+) \(updates on (\S+)\)")


class EventServerProcess:
    """``EventServerProcess(db_url).start()``; ``.url`` is the address clients connect to."""

    def __init__(self, db_url: str | None, *, port: int | None = None, extra_args: list[str] | None = None,
                 env: dict[str, str] | None = None, cwd: str | os.PathLike | None = None):
        self.db_url = db_url
        self.cwd = cwd  # the server's working directory (default: the repository)
        self.port = port or free_port()
        self.url = f"tcp://127.0.0.1:{self.port}"
        self.publish_url: str | None = None
        self.extra_args = list(extra_args or [])
        self.env = env
        self.process: subprocess.Popen | None = None
        self._stderr = tempfile.NamedTemporaryFile(prefix="aiflow-event-server-", suffix=".log", delete=False)
        self._log_text: str | None = None
        self._lines: list[str] = []
        self._seen = threading.Condition()

    def command(self) -> list[str]:
        db = ["--db", self.db_url] if self.db_url else []  # None: the server reads $AIFLOW_META_URL (env=...)
        return [sys.executable, "-m", "aiflow_notebook.cli", "server", "start", *db, "--bind", self.url,
                *self.extra_args]

    def start(self, timeout: float = 60.0) -> EventServerProcess:
        env = {**os.environ, **(self.env or {})}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_REPO), env.get("PYTHONPATH")) if p)
        self.process = subprocess.Popen(self.command(), stdout=subprocess.PIPE, stderr=self._stderr, text=True,
                                        env=env, cwd=self.cwd or _REPO)
        threading.Thread(target=self._read_stdout, args=(self.process,), daemon=True).start()
        deadline = Deadline(timeout)
        with self._seen:
            while True:
                match = next((m for m in map(_LISTENING.search, self._lines) if m), None)
                if match:
                    self.publish_url = match.group(2)
                    return self
                if self.process.poll() is not None or deadline.passed:
                    self.stop()
                    raise RuntimeError(f"the event server did not start (exit code {self.process.returncode}):\n"
                                       f"{self.log()[-3000:]}")
                self._seen.wait(0.1)

    def _read_stdout(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            with self._seen:
                self._lines.append(line)
                self._seen.notify_all()

    def kill(self) -> None:
        """SIGKILL (``kill -9``): no clean-up of any kind runs in the server."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)
        self._keep_log()

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not end in ``timeout``. Returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._keep_log()
        return self.process.returncode

    def log(self) -> str:
        """What the server wrote to stderr (its log)."""
        if self._log_text is not None:
            return self._log_text
        return Path(self._stderr.name).read_text(errors="replace")

    def _keep_log(self) -> None:
        """Once the process has ended, keep its log in memory and delete the file."""
        if self._log_text is None and self.process is not None and self.process.poll() is not None:
            self._log_text = Path(self._stderr.name).read_text(errors="replace")
            self._stderr.close()
            Path(self._stderr.name).unlink(missing_ok=True)

    def __enter__(self) -> EventServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
