"""Where an event server listens and who may reach it: the exposure policy of the bus.

- The default is private: unix sockets in a directory only this user can enter (:func:`private_endpoint`),
  so no other local user can reach the bus.
- A TCP address other than loopback is refused unless CURVE is on or the caller says the network is
  trusted (``insecure``): anyone who can reach it could read and send events (:meth:`Endpoints.check`).
- Updates are published on a second address beside the request address (same host, any free port; or
  ``PATH.pub``), unless one is given.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import zmq

from aiflow_notebook.core.config import aiflow_home
from aiflow_notebook.core.files import UnsafePathError, private_dir
from aiflow_notebook.events.errors import EventServerError

DEFAULT_PORT = 50052
DEFAULT_BIND = f"tcp://127.0.0.1:{DEFAULT_PORT}"
SOCKETS_DIR = "sockets"
_TMP_PREFIX = "aiflow-sockets-"
_MAX_IPC_PATH = 107  # bytes of a unix socket path (sun_path is 108 with its NUL)


class Endpoints:
    """The two addresses of one server: ``bind`` for requests, ``publish`` for updates.

    ``bind`` None: a private one (:func:`private_endpoint`), whose socket files are made 0600 when bound and
    removed by :meth:`remove`.
    """

    def __init__(self, bind: str | None, publish: str | None = None):
        self.private_dir: str | None = None
        if bind is None:
            bind, self.private_dir = private_endpoint()
        self.bind = zmq_endpoint(bind)
        self.publish = zmq_endpoint(publish) if publish else publish_endpoint(self.bind)

    def check(self, *, secure: bool, insecure: bool) -> None:
        """Refuse to expose either address beyond this machine without CURVE (``secure``), unless
        ``insecure`` says the network is trusted."""
        check_exposure(self.bind, secure=secure, insecure=insecure)
        check_exposure(self.publish, secure=secure, insecure=insecure)

    def bind_sockets(self, router: zmq.Socket, pub: zmq.Socket) -> tuple[str, str]:
        """Bind the request and publish sockets; returns the addresses bound (port 0 resolved)."""
        urls = bind(router, self.bind), bind(pub, self.publish)
        if self.private_dir is not None:
            for url in urls:
                os.chmod(url[len("ipc://"):], 0o600)
        return urls

    def remove(self, *urls: str | None) -> None:
        """Remove the private socket files ``urls`` (and the directory, if it was a fallback under /tmp)."""
        if self.private_dir is None:
            return
        for url in urls:
            if url and url.startswith("ipc://"):
                Path(url[len("ipc://"):]).unlink(missing_ok=True)
        if Path(self.private_dir).name.startswith(_TMP_PREFIX):
            shutil.rmtree(self.private_dir, ignore_errors=True)  # nothing else uses it


def private_endpoint(home: str | os.PathLike | None = None) -> tuple[str, str]:
    """``(ipc://PATH, directory)``: a fresh socket path in a directory only this user may enter.

    The directory is ``$AIFLOW_HOME/sockets`` (made mode 0700; refused with :class:`EventServerError` if
    another user owns it); when a path there would be longer than a unix socket path may be, a private
    directory made by ``mkdtemp`` under the system's temporary directory instead. The publish socket goes
    next to it (``PATH.pub``).
    """
    name = f"events-{os.getpid()}-{secrets.token_hex(4)}.sock"
    directory = Path(home) if home is not None else aiflow_home()
    directory = directory / SOCKETS_DIR
    if len(os.fsencode(str(directory / name)) + b".pub") > _MAX_IPC_PATH:
        directory = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX))  # mode 0700, ours
    else:
        try:
            private_dir(directory)
        except UnsafePathError as exc:
            raise EventServerError(f"the event bus's sockets cannot be kept there: {exc}") from None
    return f"ipc://{directory / name}", str(directory)


def zmq_endpoint(address: str) -> str:
    """Accept ``tcp://host:0`` for "any free port" (ZeroMQ spells it ``*``); check the transport."""
    if not isinstance(address, str) or "://" not in address:
        raise EventServerError(f"bad bind address {address!r}; expected e.g. tcp://127.0.0.1:{DEFAULT_PORT}, "
                               "ipc:///tmp/aiflow-events or inproc://events")
    transport = address.split("://", 1)[0]
    if transport not in ("tcp", "ipc", "inproc"):
        raise EventServerError(f"unsupported transport {transport!r} in {address!r}; use tcp, ipc or inproc")
    if transport == "tcp":
        host, _, port = address[len("tcp://"):].rpartition(":")
        if not host or not (port == "*" or port.isdigit()):
            raise EventServerError(f"bad TCP address {address!r}; expected tcp://HOST:PORT (PORT 0 = any free port)")
        if port == "0":
            return f"tcp://{host}:*"
    return address


def publish_endpoint(bind: str) -> str:
    """Where updates are published by default: same host, any free port (or ``<path>.pub``)."""
    if bind.startswith("tcp://"):
        host = bind[len("tcp://"):].rpartition(":")[0]
        return f"tcp://{host}:*"
    return bind + ".pub"


def bind(sock: zmq.Socket, endpoint: str) -> str:
    """Bind ``sock``; returns the address bound, or raises :class:`EventServerError` saying why not."""
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        hint = " (is another server running there? pick another port)" if exc.errno == zmq.EADDRINUSE else ""
        raise EventServerError(f"cannot bind {endpoint}: {exc.strerror}{hint}") from None
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)


def check_exposure(endpoint: str, secure: bool, insecure: bool) -> None:
    """Refuse a TCP address beyond loopback unless ``secure`` (CURVE) or ``insecure`` (a trusted network)."""
    if secure or insecure or not endpoint.startswith("tcp://"):
        return
    host = urlsplit(endpoint.replace(":*", ":0")).hostname or ""
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise EventServerError(
        f"refusing to serve events on {endpoint} without authentication: anyone who can reach it could read "
        "and send events. Create keys with `aiflow server keys DIR` and start with --curve DIR, or bind to "
        "127.0.0.1 (or pass --insecure on a trusted network)")
