"""Which ``aiflow server`` this process is on, decided without making a client.

``af.connect`` chooses a server (:func:`choose`), ``af.disconnect`` overrides every choice and the
environment (:func:`disconnect`); otherwise the environment decides (like ``MLFLOW_TRACKING_URI``):

- ``AIFLOW_SERVER_URL`` the server's request address (``tcp://host:port``);
- ``AIFLOW_SERVER_KEY`` the path of the server's public key file (``server.key``), when it runs with ``--curve``;
- ``AIFLOW_CLIENT_KEY`` the path of this client's secret key file (``NAME.key_secret``).

The environment holds paths only, never a key; a secret key file that other users may read is refused. A
job process (``$AIFLOW_RUN_ID`` set by its scheduler) is never connected through the environment: it uses
the store and bus its scheduler gave it.

Why apart from :mod:`aiflow_notebook.events.session`, which keeps the clients of that server: the
decision is also what ``EventClient.from_environment`` asks, and the client cannot import the module that
makes clients.
"""

from __future__ import annotations

import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aiflow_notebook.events.errors import CurveKeyError

if TYPE_CHECKING:
    from aiflow_notebook.events.client import EventClient

SERVER_URL_ENV = "AIFLOW_SERVER_URL"
SERVER_KEY_ENV = "AIFLOW_SERVER_KEY"
CLIENT_KEY_ENV = "AIFLOW_CLIENT_KEY"

_lock = threading.Lock()
_chosen: EventClient | None = None  # the client af.connect made
_disconnected = False  # af.disconnect() overrides the environment


@dataclass(frozen=True)
class EnvironmentServer:
    """The server the environment connects this process to: its URL and key file paths."""

    url: str
    server_key: str | None
    client_key: str | None

    @property
    def auth(self) -> tuple[str, str | None] | None:
        """``(server.key, client.key_secret)`` for the client, or None; checked as :func:`auth_from_environment`."""
        return _checked_auth(self.server_key, self.client_key)


def choose(client: EventClient) -> None:
    """``af.connect``: this process is on ``client``'s server from now on (also over the environment)."""
    global _chosen, _disconnected
    with _lock:
        _chosen, _disconnected = client, False


def disconnect() -> None:
    """Forget the connection (also one the environment names): the process is embedded again. Runs
    started while connected keep following their server."""
    global _chosen, _disconnected
    with _lock:
        _chosen, _disconnected = None, True


def forget() -> None:
    """Forget the choice and the override of :func:`disconnect` (a fresh process; for tests)."""
    global _chosen, _disconnected
    with _lock:
        _chosen, _disconnected = None, False


def current() -> EventClient | EnvironmentServer | None:
    """The server this process is on: the client ``af.connect`` made, else the one the environment names,
    else None (embedded)."""
    with _lock:
        if _chosen is not None:
            return _chosen
        if _disconnected:
            return None
    url = server_from_environment()
    if url is None:
        return None
    return EnvironmentServer(url, os.environ.get(SERVER_KEY_ENV), os.environ.get(CLIENT_KEY_ENV))


def server_from_environment() -> str | None:
    """``$AIFLOW_SERVER_URL`` when it connects this process, else None: unset, or inside a job. Command-line
    tools use it so that a terminal set up like the notebook talks to the same server."""
    url = os.environ.get(SERVER_URL_ENV)
    return url if url and not os.environ.get("AIFLOW_RUN_ID") else None


def auth_from_environment() -> tuple[str, str | None] | None:
    """``(server.key, client.key_secret)`` from ``$AIFLOW_SERVER_KEY``/``$AIFLOW_CLIENT_KEY``, or None."""
    return _checked_auth(os.environ.get(SERVER_KEY_ENV), os.environ.get(CLIENT_KEY_ENV))


def _checked_auth(server_key: str | None, client_key: str | None) -> tuple[str, str | None] | None:
    if not server_key:
        if client_key:
            raise CurveKeyError(f"{CLIENT_KEY_ENV} is set but {SERVER_KEY_ENV} is not: set it to the path of the "
                                "server's public key file (server.key)")
        return None
    for name, value in ((SERVER_KEY_ENV, server_key), (CLIENT_KEY_ENV, client_key)):
        if value and (len(value) == 40 and not Path(value).expanduser().exists()):
            raise CurveKeyError(f"{name} must be the path of a key file, not a key: keep keys out of the "
                                "environment")
    if client_key:
        check_secret_key_file(client_key)
    return (server_key, client_key)


def check_secret_key_file(path: str | os.PathLike) -> Path:
    """Refuse a secret key file that is missing or that other users may read (it must be mode 0600)."""
    path = Path(path).expanduser()
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as exc:
        raise CurveKeyError(f"cannot read the client's secret key file {path}: {exc.strerror}") from None
    if mode & 0o077:
        raise CurveKeyError(f"the secret key file {path} may be read by other users (mode {mode:04o}); "
                            f"make it private first: chmod 600 {path}")
    return path
