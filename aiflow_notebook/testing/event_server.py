"""A real ``aiflow server start`` process on a free loopback port, for tests and benchmarks.

A :class:`~aiflow_notebook.sandbox.server_process.ServerProcess` (the command line exactly as a user runs
it, awaited until it listens, stopped or killed by pid) with what tests want besides: a TCP port picked
free, this checkout on the server's path, and its log kept in memory once it ended (the file is deleted).
Always stop it in a ``finally`` or use it as a context manager.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from aiflow_notebook.core.ports import free_port
from aiflow_notebook.sandbox.server_process import ServerProcess

_REPO = Path(__file__).resolve().parents[2]


class EventServerProcess(ServerProcess):
    """``EventServerProcess(db_url).start()``; ``.url`` is the address clients connect to (known at once)."""

    def __init__(self, db_url: str | None, *, port: int | None = None, extra_args: list[str] | None = None,
                 env: dict[str, str] | None = None, cwd: str | os.PathLike | None = None):
        self.db_url = db_url
        self.port = port or free_port()
        bind = f"tcp://127.0.0.1:{self.port}"
        db = ["--db", db_url] if db_url else []  # None: the server reads $AIFLOW_META_URL (env=...)
        environment = {**os.environ, **(env or {})}
        environment["PYTHONPATH"] = os.pathsep.join(p for p in (str(_REPO), environment.get("PYTHONPATH")) if p)
        fd, log_path = tempfile.mkstemp(prefix="aiflow-event-server-", suffix=".log")
        os.close(fd)
        super().__init__([*db, "--bind", bind, *(extra_args or [])], log_path=log_path, env=environment,
                         cwd=cwd or _REPO)
        self.url = bind
        self._log_text: str | None = None

    def stop(self, grace: float = 15.0) -> int | None:
        code = super().stop(grace)
        self._keep_log()
        return code

    def kill(self) -> None:
        super().kill()
        self._keep_log()

    def log(self) -> str:
        return self._log_text if self._log_text is not None else super().log()

    def _keep_log(self) -> None:
        """Once the process has ended, keep its log in memory and delete the file."""
        if self._log_text is None and self.process is not None and self.process.poll() is not None:
            self._log_text = super().log()
            self.log_path.unlink(missing_ok=True)
