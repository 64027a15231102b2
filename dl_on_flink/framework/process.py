"""Child processes that cannot outlive their operator.

Each node's entry runs in its own process (in the local mini-cluster every subtask of a Python operator
shares one Python process, so ``torch.distributed`` cannot live in the operator). A child is started in a
new session, so killing its process group also kills whatever it started (DataLoader workers, TF
threads' helpers); and it holds the read end of a pipe whose write end only the operator holds, so when
the operator process dies for any reason the child sees end-of-file and kills its own group. An
``atexit`` hook kills every child still alive when the operator process exits normally.
:func:`import_root` is where every process we start imports dl_on_flink from.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from aiflow_notebook.core.processes import signal_group

PARENT_FD_ENV = "DL_ON_FLINK_PARENT_FD"

_live: set[ChildProcess] = set()
_live_lock = threading.Lock()


class ChildProcess:
    """One started child: its pid, its log file, and a way to end it and everything it started."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], log_path: Path, cwd: Path | None = None) -> None:
        self.log_path = Path(log_path)
        read_fd, self._parent_fd = os.pipe()
        env = {**env, PARENT_FD_ENV: str(read_fd)}
        with open(self.log_path, "ab") as log:
            try:
                self._popen = subprocess.Popen(
                    list(argv),
                    env=env,
                    cwd=cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    pass_fds=(read_fd,),
                )
            finally:
                os.close(read_fd)
        self.pid = self._popen.pid
        with _live_lock:
            _live.add(self)

    def poll(self) -> int | None:
        """The exit code, or None while running."""
        return self._popen.poll()

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit code once it exited within ``timeout`` seconds, else None."""
        try:
            return self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self, timeout: float = 10.0) -> None:
        """SIGKILL the child's whole process group and reap the child (idempotent)."""
        signal_group(self.pid, signal.SIGKILL)
        self.wait(timeout)
        self._release()

    def tail(self, max_bytes: int = 4000) -> str:
        """The end of the child's output (what an error message quotes)."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - max_bytes))
                data = fh.read()
        except OSError:
            return ""
        text = data.decode("utf-8", "replace")
        if size > max_bytes:
            text = "…" + text.split("\n", 1)[-1]
        return text

    def _release(self) -> None:
        if self._parent_fd is not None:
            try:
                os.close(self._parent_fd)
            except OSError:
                pass
            self._parent_fd = None
        with _live_lock:
            _live.discard(self)


def import_root() -> str:
    """The folder this dl_on_flink is imported from, for the import path of the processes we start.

    With it on their path they import this very code, also from a source checkout that is not installed.
    And a folder named ``dl_on_flink`` in their working directory cannot pass for the package: Python's
    path finder takes a regular package anywhere on the path over such a namespace portion, whereas an
    editable install's own finder, which runs after the path finder, never gets asked.
    """
    return str(Path(__file__).resolve().parents[2])


def watch_parent() -> None:
    """In the child: kill our process group as soon as the operator that started us is gone."""
    fd = os.environ.get(PARENT_FD_ENV)
    if fd is None:
        return

    def watch() -> None:
        try:
            while os.read(int(fd), 1):
                pass
        except OSError:
            pass
        signal_group(os.getpgid(0), signal.SIGKILL)

    threading.Thread(target=watch, name="dl-on-flink-parent-watch", daemon=True).start()


@atexit.register
def _kill_all() -> None:
    with _live_lock:
        children = list(_live)
    for child in children:
        child.kill(timeout=5)
