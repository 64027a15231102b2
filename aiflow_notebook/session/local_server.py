"""The local ``aiflow server`` of this process (``%aiflow server start|stop|status``).

A real ``aiflow server start`` (event bus + scheduler + metadata store) in a process of its own, on a
private unix socket that only this user can reach, with this process connected to it: several notebooks
(``%aiflow connect URL``) and terminals (``AIFLOW_SERVER_URL=URL aiflow models list``) then share one
scheduler and one store, and its runs outlive a kernel restart of the notebook that did not start it. Its
state lives in ``$AIFLOW_HOME/server`` (database ``meta.db``, job logs, blobs, ``server.log``); it stops
when this process exits, at the latest.
"""

from __future__ import annotations

import atexit
import threading
from pathlib import Path

from aiflow_notebook.core.config import aiflow_home
from aiflow_notebook.core.errors import AIFlowError
from aiflow_notebook.core.files import private_dir
from aiflow_notebook.events.server import private_endpoint
from aiflow_notebook.events.session import connected_client, disconnect
from aiflow_notebook.sandbox.server_process import ServerProcess
from aiflow_notebook.session.submit import connect

_lock = threading.Lock()
_server: LocalServer | None = None


class LocalServer:
    """A started local server: ``url``, ``pid``, ``db_url``, ``home``, ``log_path``; ``alive``."""

    def __init__(self, process: ServerProcess, db_url: str, home: Path, socket_dir: str):
        self.process, self.db_url, self.home, self._socket_dir = process, db_url, home, socket_dir

    @property
    def url(self) -> str:
        return self.process.url or ""

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def log_path(self) -> Path:
        return self.process.log_path

    @property
    def alive(self) -> bool:
        return self.process.alive

    def describe(self) -> str:
        state = "running" if self.alive else f"stopped (exit code {self.process.process.returncode})"
        client = connected_client()
        here = "this process is connected to it" if client is not None and client.url == self.url else \
            f"this process is not connected to it (%aiflow connect {self.url})"
        return (f"local aiflow server {state}: {self.url} (pid {self.pid}), database {self.db_url}, state in "
                f"{self.home}, log {self.log_path}; {here}")


def start_local_server(db_url: str | None = None, timeout: float = 60.0) -> LocalServer:
    """Start the local server and connect this process to it; refused while one runs."""
    global _server
    with _lock:
        if _server is not None and _server.alive:
            raise AIFlowError(f"a local aiflow server already runs at {_server.url} (pid {_server.pid}); "
                              "stop it first with %aiflow server stop")
        home = private_dir(aiflow_home() / "server")
        url, socket_dir = private_endpoint(home)
        db_url = db_url or f"sqlite:///{home / 'meta.db'}"
        process = ServerProcess(["--db", db_url, "--bind", url, "--home", str(home)], log_path=home / "server.log",
                                cwd=home).start(timeout)
        server = LocalServer(process, db_url, home, socket_dir)
        try:
            connect(process.url)
        except BaseException:
            _end(server)
            raise
        _server = server
    atexit.register(stop_local_server)
    return server


def stop_local_server(grace: float = 15.0) -> LocalServer | None:
    """Disconnect this process from the local server (if it is connected to it) and stop the server; the
    server that was stopped, or None when none was started."""
    global _server
    with _lock:
        server, _server = _server, None
    if server is None:
        return None
    client = connected_client()
    if client is not None and client.url == server.url:
        disconnect()
    _end(server, grace)
    return server


def local_server() -> LocalServer | None:
    """The local server this process started (running or not), or None."""
    return _server


def _end(server: LocalServer, grace: float = 15.0) -> None:
    server.process.stop(grace)
    if not Path(server._socket_dir).is_relative_to(server.home):  # a temporary directory of its own (a
        try:  # long $AIFLOW_HOME): the server removed its sockets, so it is empty now
            Path(server._socket_dir).rmdir()
        except OSError:
            pass
