"""The clients of the ``aiflow server`` this process is connected to (and the names to reach one).

:mod:`~aiflow_notebook.events.process_bus` decides which server that is, without making a client:
``af.connect(url, auth=...)`` (:func:`connect`), overridden by :func:`disconnect`, else the environment
(``$AIFLOW_SERVER_URL`` with the key file paths ``$AIFLOW_SERVER_KEY``, ``$AIFLOW_CLIENT_KEY``; never in a
job process). This module makes and keeps the clients: while connected, the metadata store, uploads,
submissions, events and panels all use :func:`connected_client`; command-line tools make theirs with
:func:`command_line_client`. Its names (also those it takes from ``process_bus``) are the public ones.
"""

from __future__ import annotations

import argparse
import threading

from aiflow_notebook.events import process_bus
from aiflow_notebook.events.client import EventClient
from aiflow_notebook.events.errors import CurveKeyError, EventServerUnavailableError
from aiflow_notebook.events.process_bus import (
    CLIENT_KEY_ENV,
    SERVER_KEY_ENV,
    SERVER_URL_ENV,
    EnvironmentServer,
    auth_from_environment,
    check_secret_key_file,
    disconnect,
    server_from_environment,
)

__all__ = ["CLIENT_KEY_ENV", "CONNECT_TIMEOUT", "SERVER_KEY_ENV", "SERVER_URL_ENV", "auth_from_environment",
           "check_secret_key_file", "command_line_client", "connect", "connected_client", "disconnect",
           "require_connected", "reset", "server_from_environment", "server_options"]

CONNECT_TIMEOUT = 10.0

_lock = threading.Lock()
_from_environment: tuple[EnvironmentServer, EventClient] | None = None  # (the server it names, its client)
_earlier: list[EventClient] = []  # every client af.connect made (closed by reset())


def connect(url: str, auth=None, timeout: float = CONNECT_TIMEOUT) -> EventClient:
    """Connect this process to the server at ``url``; returns its ``EventClient``.

    ``auth``: as for :class:`~aiflow_notebook.events.EventClient` (``(server.key, NAME.key_secret)``, ...).
    Raises :class:`EventServerUnavailableError` within ``timeout`` seconds if the server does not answer
    (down, or a key it does not list) — nothing is changed then."""
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
        _earlier.append(client)
    process_bus.choose(client)
    return client


def reset() -> None:
    """Forget every connection and the override of :func:`disconnect`, closing their clients (a fresh
    process; for tests)."""
    global _from_environment
    with _lock:
        clients = list(_earlier) + ([_from_environment[1]] if _from_environment else [])
        _earlier.clear()
        _from_environment = None
        process_bus.forget()
    for client in clients:
        client.close()


def connected_client() -> EventClient | None:
    """The ``EventClient`` of the server this process is connected to, or None (embedded)."""
    global _from_environment
    server = process_bus.current()
    if not isinstance(server, EnvironmentServer):
        return server
    with _lock:
        if _from_environment is not None and _from_environment[0] == server:
            return _from_environment[1]
    client = EventClient(server.url, auth=server.auth)
    with _lock:
        if _from_environment is not None:
            _from_environment[1].close()
        _from_environment = (server, client)
    return client


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
                        deadline: float = CONNECT_TIMEOUT) -> EventClient | None:
    """The client of a command-line tool: ``url`` with the keys given; else the server the environment
    connects to (``$AIFLOW_SERVER_URL`` with ``$AIFLOW_SERVER_KEY``/``$AIFLOW_CLIENT_KEY``, keys given on
    the command line taking precedence); else ``default_url``. ``default_server_key`` serves when no server
    key is given for a URL that is not the environment's. None when there is no URL at all. The keys are
    paths; a secret key file that others may read is refused."""
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


def require_connected() -> EventClient:
    """The connected server's client; raises a clear error when the process is not connected."""
    client = connected_client()
    if client is None:
        raise EventServerUnavailableError("this process is not connected to an aiflow server; call "
                                          f"af.connect(url, auth=...) or set {SERVER_URL_ENV}")
    return client
