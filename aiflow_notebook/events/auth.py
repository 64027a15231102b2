"""CURVE security for the event bus, with ``zmq.auth``: keys are plain files, use is an explicit opt-in.

- ``aiflow server keys DIR`` (:func:`create_server_keys`) writes ``DIR/server.key`` (public, give it to
  clients) and ``DIR/server.key_secret`` (keep it on the server, mode 0600).
- ``aiflow server keys DIR --client NAME`` (:func:`create_client_keys` + :func:`allow_client`) writes a
  client key pair ``DIR/NAME.key``/``DIR/NAME.key_secret`` and lists the public key in ``DIR/clients/``.
- ``aiflow server start --curve DIR`` (:class:`ServerCurve`) makes both server sockets CURVE servers and
  admits only clients whose public keys are listed in ``DIR/clients/`` (checked at every handshake by a
  ZAP handler, so a key added or removed there counts for the next connection without a restart). Knowing
  the server's public key is not enough: a client also needs a listed key pair of its own. A server with
  no listed client refuses to start.
- Every admitted connection carries its client's name (the key file's name, ``alice`` for
  ``clients/alice.key``) as its ZAP User-Id; the event server stores it as the ``sender`` of the client's
  events, whatever the client claims.
- A client passes ``auth=`` the server's public key and its own certificate: a :class:`CurveAuth`, a
  pair ``(server.key, NAME.key_secret)``, or the server key alone with ``$AIFLOW_EVENT_CLIENT_KEY``
  naming the client's ``.key_secret`` file.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from aiflow_notebook.events.errors import CurveKeyError

log = logging.getLogger(__name__)

SERVER_CERT = "server"
CLIENTS_DIR = "clients"
CLIENT_KEY_ENV = "AIFLOW_EVENT_CLIENT_KEY"
RESERVED_PREFIX = "aiflow-"  # client names the server makes for itself (its jobs)


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
    """Write a client key pair ``name.key``/``name.key_secret`` (secret mode 0600) into ``directory``."""
    _require_curve()
    _check_name(name)
    directory = Path(directory).expanduser()
    directory.mkdir(parents=True, exist_ok=True)
    public_file, secret_file = zmq.auth.create_certificates(directory, name)
    os.chmod(secret_file, 0o600)
    return Path(public_file), Path(secret_file)


def allow_client(server_dir: str | os.PathLike, public_file: str | os.PathLike) -> Path:
    """List a client's public key in ``server_dir/clients/`` (the server admits it from its next handshake)."""
    public_file = Path(public_file)
    public, _ = _load(public_file)
    allowed = Path(server_dir).expanduser() / CLIENTS_DIR
    allowed.mkdir(exist_ok=True)
    target = allowed / public_file.name
    target.write_bytes(public_file.read_bytes())
    return target


@dataclass(frozen=True)
class CurveAuth:
    """What a client needs: the server's public key, and its own certificate (a listed ``.key_secret`` file).

    Without ``client_certificate``, ``$AIFLOW_EVENT_CLIENT_KEY`` names it; without either, the client uses a
    throw-away key pair, which a server that lists its clients refuses.
    """

    server_public_key: bytes
    client_certificate: Path | None = None
    client_keypair: tuple[bytes, bytes] | None = None  # (public, secret) Z85, held in memory only

    @classmethod
    def coerce(cls, auth: CurveAuth | str | os.PathLike | bytes | tuple | list | None) -> CurveAuth | None:
        """Accept a CurveAuth, a ``server.key`` path or its directory, a Z85 public key, or a pair
        ``(server key, client .key_secret file)``."""
        if auth is None or isinstance(auth, CurveAuth):
            return auth
        if isinstance(auth, tuple | list) and len(auth) == 2:
            server = cls.coerce(auth[0])
            if server is None:
                raise CurveKeyError("auth=(server key, client key): the server key is missing")
            return cls(server.server_public_key, Path(auth[1]).expanduser() if auth[1] else None)
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
                            f"Z85 key, a pair (server key, client .key_secret file) or a CurveAuth, got "
                            f"{type(auth).__name__}")

    @classmethod
    def of_job(cls) -> CurveAuth | None:
        """This job's bus keys (``$AIFLOW_EVENT_SERVER_KEY``, ``$AIFLOW_EVENT_CLIENT_KEY``) with the key files
        read now, to travel pickled to processes on other machines (Flink TaskManagers), where the files are
        not; None when the bus has no CURVE. CurveKeyError when the client file holds no secret key."""
        auth = cls.coerce(os.environ.get("AIFLOW_EVENT_SERVER_KEY") or None)
        if auth is None:
            return None
        certificate = auth.certificate()
        if certificate is None:
            return auth
        public, secret = zmq.auth.load_certificate(certificate)
        if secret is None:
            raise CurveKeyError(f"{certificate} holds no secret key; the job needs its .key_secret file")
        return cls(auth.server_public_key, client_keypair=(public, secret))

    def certificate(self) -> Path | None:
        """The client's own certificate: ``client_certificate``, else ``$AIFLOW_EVENT_CLIENT_KEY``."""
        if self.client_certificate is not None:
            return Path(self.client_certificate)
        from_env = os.environ.get(CLIENT_KEY_ENV)
        return Path(from_env).expanduser() if from_env else None

    def apply(self, socket: zmq.Socket) -> None:
        """Make ``socket`` a CURVE client of the server."""
        _require_curve()
        certificate = self.certificate()
        if self.client_keypair is not None:
            public, secret = self.client_keypair
        elif certificate is not None:
            public, secret = _load(certificate)
            if secret is None:
                raise CurveKeyError(f"{certificate} holds no secret key; pass the .key_secret file")
        else:
            public, secret = zmq.curve_keypair()  # unlisted: a server that lists its clients refuses it
        socket.curve_publickey = public
        socket.curve_secretkey = secret
        socket.curve_serverkey = self.server_public_key


class ServerCurve:
    """The server's side: its key pair, and the ZAP handler that admits listed clients only.

    ``DIR/clients/*.key`` are the listed clients (the file name is the client's name); :meth:`admit` adds
    a client known only to this process (the server's own scheduler, whose key never touches the disk).
    """

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
        self.clients_dir = self.directory / CLIENTS_DIR
        self._internal: dict[bytes, str] = {}
        self._spokespersons: set[str] = set()
        self._lock = threading.Lock()
        self._authenticator: ThreadAuthenticator | None = None
        if not any(not name.startswith(RESERVED_PREFIX) for name in self.listed().values()):
            raise CurveKeyError(
                f"no client is listed in {self.clients_dir}, so nobody could connect: a CURVE server admits only "
                f"listed clients. Create one with: aiflow server keys {self.directory} --client NAME "
                f"(then give NAME.key_secret and server.key to that client)")

    def listed(self) -> dict[bytes, str]:
        """``{Z85 public key: client name}`` of the keys in ``DIR/clients/`` now (read afresh each call).

        A file named like a client admitted in-process (``scheduler.key``) is ignored: nobody can list
        themselves under the server's own names."""
        found: dict[bytes, str] = {}
        with self._lock:
            internal = set(self._internal.values())
        try:
            entries = sorted(self.clients_dir.glob("*.key"))
        except OSError:
            return found
        for path in entries:
            try:
                public, _ = zmq.auth.load_certificate(path)
            except (OSError, ValueError) as exc:
                log.warning("ignoring the unreadable client key %s: %s", path, exc)
                continue
            name = path.name[: -len(".key")]
            if name not in internal:
                found[public] = name
        return found

    def admit(self, name: str, public_key: bytes, *, speaks_for_others: bool = False) -> None:
        """Admit the holder of ``public_key`` (Z85) as ``name`` for the life of this server process.

        ``speaks_for_others``: the events it sends keep the sender it names (the server's metadata store,
        which publishes a model-stage change with the authenticated client that asked for it as sender)."""
        with self._lock:
            self._internal[public_key] = name
            if speaks_for_others:
                self._spokespersons.add(name)

    def speaks_for_others(self, name: str | None) -> bool:
        """Whether ``name`` is an in-process client admitted to name the sender of its events."""
        with self._lock:
            return name in self._spokespersons

    def name_of(self, public_key: bytes) -> str | None:
        """The name of an admitted client key (Z85), or None if it is not admitted (any more)."""
        with self._lock:
            name = self._internal.get(public_key)
        return name if name is not None else self.listed().get(public_key)

    def is_admitted(self, name: str | None) -> bool:
        """Whether a client of that name is admitted now (listed in ``clients/``, or admitted in-process)."""
        if not name:
            return False
        with self._lock:
            if name in self._internal.values():
                return True
        return name in self.listed().values()

    def start(self, context: zmq.Context) -> None:
        """Run the ZAP handler on ``context`` (before the server's sockets bind)."""
        self._authenticator = _NamingAuthenticator(self, context)
        self._authenticator.start()
        self._authenticator.configure_curve_callback(domain="*", credentials_provider=self)

    def callback(self, domain: str, key: bytes) -> bool:
        """ZAP: admit a handshake whose client key (Z85) is listed."""
        admitted = self.name_of(key) is not None
        if not admitted:
            log.warning("refused a CURVE client whose key is not listed in %s", self.clients_dir)
        return admitted

    def apply(self, socket: zmq.Socket) -> None:
        socket.curve_secretkey = self.secret_key
        socket.curve_publickey = self.public_key
        socket.curve_server = True

    def stop(self) -> None:
        if self._authenticator is not None:
            self._authenticator.stop()
            self._authenticator = None


class _NamingAuthenticator(ThreadAuthenticator):
    """Sets each admitted connection's ZAP User-Id to its client's name (what the server stores as sender)."""

    def __init__(self, curve: ServerCurve, context: zmq.Context):
        super().__init__(context)
        self._curve = curve

    def curve_user_id(self, client_public_key: bytes) -> str:
        return self._curve.name_of(z85.encode(client_public_key)) or "anonymous"


def _check_name(name: str) -> None:
    if not name or not all(c.isalnum() or c in "-_." for c in name) or name.startswith("."):
        raise CurveKeyError(f"bad client name {name!r}: use letters, digits, '-', '_' and '.'")


def _load(path: Path) -> tuple[bytes, bytes | None]:
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise CurveKeyError(f"cannot read the CURVE key file {path}: {exc}. Create keys with "
                            "`aiflow server keys DIR` (and `--client NAME`) and pass DIR/server.key to "
                            "clients.") from None
    return public, secret


def _require_curve() -> None:
    if not zmq.has("curve"):
        raise CurveKeyError("this libzmq was built without CURVE support; install pyzmq's wheel (it bundles "
                            "libzmq with libsodium)")
