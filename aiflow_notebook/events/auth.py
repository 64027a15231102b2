"""CURVE security for the event bus, with ``zmq.auth``: keys are plain files, use is an explicit opt-in.

- ``aiflow server keys DIR`` (:func:`create_server_keys`) writes ``DIR/server.key`` (public, give it to
  clients) and ``DIR/server.key_secret`` (keep it on the server, mode 0600).
- ``aiflow server start --curve DIR`` (:class:`ServerCurve`) makes both server sockets CURVE servers.
  Any client that knows the server's public key may connect, unless ``DIR/clients/`` exists: then only
  clients whose public keys (``*.key`` files) are in it are let in, checked by a ZAP handler
  (``zmq.auth.thread.ThreadAuthenticator``).
- A client passes ``auth=`` the server's public key (the ``server.key`` file, its directory, the 40-char
  Z85 key, or a :class:`CurveAuth` that also names the client's own certificate).

Without the server's public key the CURVE handshake fails: the client can neither send nor read (it gets
no answer, and says so when its deadline passes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from aiflow_notebook.events.errors import CurveKeyError

SERVER_CERT = "server"
CLIENTS_DIR = "clients"


def create_server_keys(directory: str | os.PathLike, overwrite: bool = False) -> tuple[Path, Path]:
    """Write a new server key pair into ``directory``; returns (public file, secret file)."""
    _require_curve()
    directory = Path(directory).expanduser()
    public, secret = directory / f"{SERVER_CERT}.key", directory / f"{SERVER_CERT}.key_secret"
    if not overwrite and (public.exists() or secret.exists()):
        raise CurveKeyError(f"{directory} already holds server keys; clients trust the existing public key. "
                            "Delete them first if you really want a new pair.")
    directory.mkdir(parents=True, exist_ok=True)
    public_file, secret_file = zmq.auth.create_certificates(directory, SERVER_CERT)
    os.chmod(secret_file, 0o600)
    return Path(public_file), Path(secret_file)


def create_client_keys(directory: str | os.PathLike, name: str) -> tuple[Path, Path]:
    """Write a client key pair ``name.key``/``name.key_secret`` (for servers that list allowed clients)."""
    _require_curve()
    directory = Path(directory).expanduser()
    directory.mkdir(parents=True, exist_ok=True)
    public_file, secret_file = zmq.auth.create_certificates(directory, name)
    os.chmod(secret_file, 0o600)
    return Path(public_file), Path(secret_file)


@dataclass(frozen=True)
class CurveAuth:
    """What a client needs: the server's public key, and optionally its own certificate (secret file)."""

    server_public_key: bytes
    client_certificate: Path | None = None

    @classmethod
    def coerce(cls, auth: CurveAuth | str | os.PathLike | bytes | None) -> CurveAuth | None:
        """Accept a CurveAuth, a ``server.key`` path or its directory, or a Z85 public key."""
        if auth is None or isinstance(auth, CurveAuth):
            return auth
        if isinstance(auth, bytes) and len(auth) == 40:
            return cls(auth)
        if isinstance(auth, str) and len(auth) == 40 and not Path(auth).exists():
            return cls(auth.encode())
        if isinstance(auth, str | os.PathLike):
            path = Path(auth).expanduser()
            if path.is_dir():
                path = path / f"{SERVER_CERT}.key"
            return cls(_load(path)[0])
        raise CurveKeyError(f"auth must be the server's public key file (server.key), its directory, the 40-char "
                            f"Z85 key or a CurveAuth, got {type(auth).__name__}")

    def apply(self, socket: zmq.Socket) -> None:
        """Make ``socket`` a CURVE client of the server."""
        _require_curve()
        if self.client_certificate is not None:
            public, secret = _load(Path(self.client_certificate))
            if secret is None:
                raise CurveKeyError(f"{self.client_certificate} holds no secret key; pass the .key_secret file")
        else:
            public, secret = zmq.curve_keypair()  # an anonymous client: the server only needs to know itself
        socket.curve_publickey = public
        socket.curve_secretkey = secret
        socket.curve_serverkey = self.server_public_key


class ServerCurve:
    """The server's side: its key pair, and the ZAP handler that decides which clients may connect."""

    def __init__(self, directory: str | os.PathLike):
        _require_curve()
        self.directory = Path(directory).expanduser()
        secret_file = self.directory / f"{SERVER_CERT}.key_secret"
        if not secret_file.exists():
            raise CurveKeyError(f"no server key in {self.directory} (expected {secret_file.name}); "
                                f"create one with: aiflow server keys {self.directory}")
        self.public_key, self.secret_key = _load(secret_file)
        if self.secret_key is None:
            raise CurveKeyError(f"{secret_file} holds no secret key")
        clients = self.directory / CLIENTS_DIR
        self.allowed_clients = clients if clients.is_dir() else None
        self._authenticator: ThreadAuthenticator | None = None

    def start(self, context: zmq.Context) -> None:
        """Run the ZAP handler on ``context`` (before the server's sockets bind)."""
        self._authenticator = ThreadAuthenticator(context)
        self._authenticator.start()
        location = str(self.allowed_clients) if self.allowed_clients else zmq.auth.CURVE_ALLOW_ANY
        self._authenticator.configure_curve(domain="*", location=location)

    def apply(self, socket: zmq.Socket) -> None:
        socket.curve_secretkey = self.secret_key
        socket.curve_publickey = self.public_key
        socket.curve_server = True

    def stop(self) -> None:
        if self._authenticator is not None:
            self._authenticator.stop()
            self._authenticator = None


def _load(path: Path) -> tuple[bytes, bytes | None]:
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise CurveKeyError(f"cannot read the CURVE key file {path}: {exc}. Create keys with "
                            "`aiflow server keys DIR` and pass DIR/server.key to clients.") from None
    return public, secret


def _require_curve() -> None:
    if not zmq.has("curve"):
        raise CurveKeyError("this libzmq was built without CURVE support; install pyzmq's wheel (it bundles "
                            "libzmq with libsodium)")
