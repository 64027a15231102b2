"""Which ``aiflow server`` this process is connected to: the one place that decides local vs connected.

``af.connect(url, auth=...)`` (:func:`connect`) or the environment (like ``MLFLOW_TRACKING_URI``):

- ``AIFLOW_SERVER_URL`` the server's request address (``tcp://host:port``);
- ``AIFLOW_SERVER_KEY`` the path of the server's public key file (``server.key``), when it runs with ``--curve``;
- ``AIFLOW_CLIENT_KEY`` the path of this client's secret key file (``NAME.key_secret``).

The environment holds paths only, never a key; a secret key file that other users may read is refused.
While connected, the metadata store, uploads, submissions, events and panels all use this server
(:func:`connected_client`); :func:`disconnect` returns the process to the embedded default, also when the
environment names a server. A job process (``$AIFLOW_RUN_ID`` set by its scheduler) is never connected
through the environment: it uses the store and bus its scheduler gave it.
"""

from __future__ import annotations

import argparse
import os
import stat
import threading
from pathlib import Path

from aiflow_notebook.events.errors import CurveKeyError, EventServerUnavailableError

SERVER_URL_ENV = "AIFLOW_SERVER_URL"
SERVER_KEY_ENV = "AIFLOW_SERVER_KEY"
CLIENT_KEY_ENV = "AIFLOW_CLIENT_KEY"
CONNECT_TIMEOUT = 10.0

_lock = threading.Lock()
_connected = None  # the EventClient af.connect made
_from_environment: tuple[tuple, object] | None = None  # (the variables it was made from, EventClient)
_disconnected = False  # af.disconnect() overrides the environment
_earlier: list = []  # every client af.connect made (closed by reset())


def connect(url: str, auth=None, timeout: float = CONNECT_TIMEOUT):
    """Connect this process to the server at ``url``; returns its ``EventClient``.

    ``auth``: as for :class:`~aiflow_notebook.events.EventClient` (``(server.key, NAME.key_secret)``, ...).
    Raises :class:`EventServerUnavailableError` within ``timeout`` seconds if the server does not answer
    (down, or a key it does not list) — nothing is changed then."""
    from aiflow_notebook.events.client import EventClient

    global _connected, _disconnected
    if isinstance(auth, tuple | list) and len(auth) == 2 and auth[1]:
        check_secret_key_file(auth[1])
    client = EventClient(url, auth=auth, deadline=timeout)
    try:
        client.latest_version()  # fail now, with the client's clear error, if the server is unreachable
    except BaseException:
        client.close()
        raise
    client.deadline = max(timeout, 30.0)
    with _lock:  # (an earlier connection is not closed: runs started through it still follow it)
        _connected, _disconnected = client, False
        _earlier.append(client)
    return client


def disconnect() -> None:
    """Forget the connection (also one the environment names): the process is embedded again. Runs
    started while connected keep following their server."""
    global _connected, _disconnected
    with _lock:
        _connected, _disconnected = None, True


def reset() -> None:
    """Forget every connection and the override of :func:`disconnect`, closing their clients (a fresh
    process; for tests)."""
    global _connected, _from_environment, _disconnected
    with _lock:
        clients = list(_earlier) + ([_from_environment[1]] if _from_environment else [])
        _earlier.clear()
        _connected, _from_environment, _disconnected = None, None, False
    for client in clients:
        client.close()


def connected_client():
    """The ``EventClient`` of the server this process is connected to, or None (embedded)."""
    global _from_environment
    with _lock:
        if _connected is not None:
            return _connected
        if _disconnected:
            return None
    url = os.environ.get(SERVER_URL_ENV)
    if not url or os.environ.get("AIFLOW_RUN_ID"):
        return None
    variables = (url, os.environ.get(SERVER_KEY_ENV), os.environ.get(CLIENT_KEY_ENV))
    with _lock:
        if _from_environment is not None and _from_environment[0] == variables:
            return _from_environment[1]
    from aiflow_notebook.events.client import EventClient

    client = EventClient(url, auth=auth_from_environment())
    with _lock:
        if _from_environment is not None:
            _from_environment[1].close()
        _from_environment = (variables, client)
    return client


def server_from_environment() -> str | None:
    """``$AIFLOW_SERVER_URL`` when it connects this process (as :func:`connected_client` would), else None:
    unset, or inside a job. Command-line tools use it so that a terminal set up like the notebook talks to
    the same server."""
    url = os.environ.get(SERVER_URL_ENV)
    return url if url and not os.environ.get("AIFLOW_RUN_ID") else None


def server_options() -> argparse.ArgumentParser:
    """``--server``, ``--server-key``, ``--client-key`` as a parent parser: how a command names an ``aiflow
    server`` (defaults: the environment's, see :func:`command_line_client`)."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--server", metavar="URL", default=None,
                         help="an aiflow server, tcp://HOST:PORT (default: $AIFLOW_SERVER_URL)")
    options.add_argument("--server-key", metavar="PATH", default=None,
                         help="the server's CURVE public key file, server.key (default: $AIFLOW_SERVER_KEY)")
    options.add_argument("--client-key", metavar="PATH", default=None,
                         help="this client's listed CURVE key, NAME.key_secret (default: $AIFLOW_CLIENT_KEY)")
    return options


def command_line_client(url: str | None, server_key: str | None, client_key: str | None,
                        default_url: str | None = None, default_server_key: str | None = None,
                        deadline: float = CONNECT_TIMEOUT):
    """The client of a command-line tool: ``url`` with the keys given; else the server the environment
    connects to (``$AIFLOW_SERVER_URL`` with ``$AIFLOW_SERVER_KEY``/``$AIFLOW_CLIENT_KEY``, keys given on
    the command line taking precedence); else ``default_url``. ``default_server_key`` serves when no server
    key is given for a URL that is not the environment's. None when there is no URL at all. The keys are
    paths; a secret key file that others may read is refused."""
    from aiflow_notebook.events.client import EventClient

    if url is None and (environment_url := server_from_environment()) is not None:
        url = environment_url
        environment_auth = auth_from_environment() or (None, None)
        server_key = server_key or environment_auth[0]
        client_key = client_key or environment_auth[1]
    else:
        url, server_key = url or default_url, server_key or default_server_key
    if url is None:
        return None
    if client_key:
        if not server_key:
            raise CurveKeyError("a client key was given but not the server's public key: add --server-key "
                                "PATH (the server's server.key)")
        check_secret_key_file(client_key)
    return EventClient(url, auth=(server_key, client_key) if server_key and client_key else server_key or None,
                       deadline=deadline)


def auth_from_environment():
    """``(server.key, client.key_secret)`` from ``$AIFLOW_SERVER_KEY``/``$AIFLOW_CLIENT_KEY``, or None."""
    server_key, client_key = os.environ.get(SERVER_KEY_ENV), os.environ.get(CLIENT_KEY_ENV)
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


def require_connected():
    """The connected server's client; raises a clear error when the process is not connected."""
    client = connected_client()
    if client is None:
        raise EventServerUnavailableError("this process is not connected to an aiflow server; call "
                                          f"af.connect(url, auth=...) or set {SERVER_URL_ENV}")
    return client
