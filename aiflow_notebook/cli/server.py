"""``aiflow server start|keys``: the event bus, the scheduler and the metadata store as one service.

This module sits above ``events``, ``meta`` and ``scheduler`` and puts them together (none of them imports
it). ``server start`` runs a list of services (each with ``start()``/``stop()``) until SIGINT/SIGTERM: the
:class:`~aiflow_notebook.events.EventServer` (built by :func:`event_server_from_args`), the
:class:`MetadataService` that answers connected clients' store calls and uploads on its request socket
(docs/remote.md) and, unless ``--no-scheduler``, a :class:`SchedulerService` beside them.

Under ``--curve DIR`` the server's own clients get identities of their own: the scheduler a key pair held
in memory only (admitted as ``scheduler``), and the job processes a certificate the server makes once and
lists (``DIR/aiflow-jobs.key_secret``, mode 0600, public key in ``DIR/clients/``), named to them by
``$AIFLOW_EVENT_CLIENT_KEY``. Only admitted clients may submit or stop runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
from collections.abc import Callable, Sequence
from pathlib import Path

from aiflow_notebook.core.stop_signal import StopSignal
from aiflow_notebook.core.vocabulary import DEFAULT_SCHEDULER, SCHEDULER_SENDER

SCHEDULER_CLIENT = SCHEDULER_SENDER  # the scheduler's name on a CURVE bus (the sender of its events)
STORE_CLIENT = "aiflow-store"  # the metadata store's publisher on a CURVE bus (names the client it acts for)
JOBS_CLIENT = "aiflow-jobs"  # the job processes' name on a CURVE bus


def add_commands(commands: argparse._SubParsersAction) -> None:
    server = commands.add_parser("server", help="run the aiflow server: event bus + scheduler + metadata")
    server_commands = server.add_subparsers(title="server commands", metavar="ACTION", required=True)
    start = server_commands.add_parser("start", help="serve events until interrupted (Ctrl-C or SIGTERM)")
    start.add_argument("--db", metavar="URL", default=None,
                       help="database of the event log (default: $AIFLOW_META_URL, else $AIFLOW_HOME/meta.db)")
    start.add_argument("--bind", metavar="ADDR", default=None,
                       help="request address (default tcp://127.0.0.1:50052; port 0 = any free port; "
                            "ipc://PATH also works)")
    start.add_argument("--publish-bind", metavar="ADDR", default=None,
                       help="address for live updates (default: the --bind host, any free port)")
    start.add_argument("--curve", metavar="DIR", default=None,
                       help="require CURVE: DIR holds server.key_secret (`aiflow server keys DIR`) and the listed "
                            "clients' public keys in DIR/clients/ (`aiflow server keys DIR --client NAME`)")
    start.add_argument("--insecure", action="store_true",
                       help="allow a non-loopback --bind without --curve (trusted networks only)")
    start.add_argument("--max-message-bytes", type=int, default=None, metavar="N",
                       help="largest accepted event/request in bytes (default 1 MiB)")
    start.set_defaults(func=_server_start)
    start.add_argument("--no-scheduler", action="store_true", help="run the event bus only, without the scheduler")
    start.add_argument("--home", metavar="DIR", default=None,
                       help="where job logs and blobs go (default: $AIFLOW_HOME, else ~/.aiflow)")
    keys = server_commands.add_parser("keys", help="create a CURVE key pair for `server start --curve DIR`")
    keys.add_argument("dir", metavar="DIR")
    keys.add_argument("--client", metavar="NAME", default=None,
                      help="make a client key pair NAME instead, and allow it (DIR/clients/NAME.key)")
    keys.add_argument("--force", action="store_true", help="replace an existing server key pair")
    keys.set_defaults(func=_server_keys)


# --- server start ------------------------------------------------------------------------------------


def _server_start(args) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    server = event_server_from_args(args)

    services = [server, MetadataService(server, server.db_url, home=args.home)]
    if not args.no_scheduler:
        services.append(SchedulerService(server, server.db_url, home=args.home, curve_dir=args.curve))

    def announce() -> None:
        print(f"aiflow event server: listening on {server.url} (updates on {server.publish_url})"
              f"{', CURVE required' if server.curve else ''}"
              f"{'' if args.no_scheduler else ', scheduler running'}; pid {os.getpid()}", flush=True)
        if server.curve is None and server.url.startswith("tcp://"):
            logging.getLogger(__name__).warning(
                "no --curve: every user of this machine can reach %s and run jobs as you; on a shared machine "
                "use --curve DIR, or --bind ipc://PATH in a directory only you can enter", server.url)

    run_services(services, announce)


def event_server_from_args(args):
    """The :class:`EventServer` that ``aiflow server start`` options describe (for a bigger service too)."""
    from aiflow_notebook.core.config import default_meta_url
    from aiflow_notebook.events.endpoints import DEFAULT_BIND
    from aiflow_notebook.events.server import DEFAULT_MAX_MESSAGE_BYTES, EventServer

    return EventServer(args.db or default_meta_url(), args.bind or DEFAULT_BIND,
                       publish_bind=args.publish_bind, curve_dir=args.curve, insecure=args.insecure,
                       max_message_bytes=args.max_message_bytes or DEFAULT_MAX_MESSAGE_BYTES)


def run_services(services: Sequence, announce: Callable[[], None] | None = None) -> None:
    """Start ``services`` in order, wait for SIGINT/SIGTERM, stop them in reverse order."""
    from aiflow_notebook.events.errors import EventServerError

    stop = StopSignal((signal.SIGINT, signal.SIGTERM))  # not a threading.Event: see stop_signal
    started = []
    try:
        for service in services:
            service.start()
            started.append(service)
        if announce is not None:
            announce()
        while not stop.wait(0.5):
            failed = next((s for s in started if not getattr(s, "alive", True)), None)
            if failed is not None:
                raise EventServerError(f"{failed!r} stopped: {getattr(failed, 'failure', None) or 'unknown reason'}")
    finally:
        for service in reversed(started):
            service.stop()
        stop.restore()


class MetadataService:
    """The metadata store and blob uploads for connected clients (``af.connect``), over the event server's
    request socket (CALLs: :class:`~aiflow_notebook.meta.service.StoreService`), in the same process.

    Registered on the server before it starts; its publisher connects on first use. Uploads land in the
    blob store the scheduler runs payloads from (``HOME/blobs``)."""

    def __init__(self, server, db_url: str, *, home: str | Path | None = None):
        from aiflow_notebook.core.config import aiflow_home
        from aiflow_notebook.events import EventClient
        from aiflow_notebook.meta.service import ActingPublisher, StoreService
        from aiflow_notebook.scheduler.services import BusServices
        from aiflow_notebook.storage.blobs import BlobUploads, LocalBlobStore

        self.server = server
        client = EventClient(server.bind_address if server.url is None else server.url, auth=self._auth(),
                             client_id=STORE_CLIENT)
        self._services = BusServices(client, db_url, wrap_publisher=ActingPublisher)
        self.client, self.store, self.publisher = client, self._services.store, self._services.publisher
        blobs = LocalBlobStore((Path(home) if home else aiflow_home()) / "blobs")
        server.serve_calls(StoreService(self.store, BlobUploads(blobs), self.publisher))

    def _auth(self):
        if self.server.curve is None:
            return None
        import zmq

        from aiflow_notebook.events.auth import CurveAuth

        public, secret = zmq.curve_keypair()
        self.server.curve.admit(STORE_CLIENT, public, speaks_for_others=True)
        return CurveAuth(self.server.curve.public_key, client_keypair=(public, secret))

    def start(self) -> MetadataService:
        self.client.url = self.server.url  # bound now (port 0 resolved)
        return self

    def stop(self) -> None:
        self._services.close()

    def __repr__(self) -> str:
        return "MetadataService()"


class SchedulerService:
    """The scheduler beside an event server, in one process.

    It talks to its own event server like any client (with CURVE when the server requires it), records in
    the same database, and leaves job processes running when it stops: a restarted server adopts them.
    """

    def __init__(self, server, db_url: str, *, name: str = DEFAULT_SCHEDULER, home: str | Path | None = None,
                 curve_dir: str | Path | None = None):
        self.server, self.db_url, self.name, self.home = server, db_url, name, home
        self.curve_dir = Path(curve_dir) if curve_dir else None
        self.scheduler = None
        self.failure: BaseException | None = None
        self._services = None

    def start(self) -> SchedulerService:
        from aiflow_notebook.events import EventClient
        from aiflow_notebook.scheduler.services import BusServices

        client = EventClient(self.server.url, auth=self._auth(), client_id=f"scheduler-{self.name}")
        self._services = BusServices(client, self.db_url)
        curve = self.server.curve
        self.scheduler = self._services.start_scheduler(
            name=self.name, home=self.home, job_env=self._job_env(),
            authorize=curve.is_admitted if curve is not None else None)
        return self

    def _auth(self):
        """The scheduler's CURVE identity: a key pair made now, held in memory, admitted as ``scheduler``."""
        if self.server.curve is None:
            return None
        import zmq

        from aiflow_notebook.events.auth import CurveAuth

        public, secret = zmq.curve_keypair()
        self.server.curve.admit(SCHEDULER_CLIENT, public)
        return CurveAuth(self.server.curve.public_key, client_keypair=(public, secret))

    def _job_env(self) -> dict[str, str]:
        """What job processes need to reach this bus: under CURVE, the server key and the jobs' certificate."""
        if self.server.curve is None:
            return {}
        from aiflow_notebook.events.auth import CLIENT_KEY_ENV, SERVER_CERT, allow_client, create_client_keys

        directory = self.server.curve.directory
        secret = directory / f"{JOBS_CLIENT}.key_secret"
        if not secret.exists():
            public, secret = create_client_keys(directory, JOBS_CLIENT)
            allow_client(directory, public)
        elif not (self.server.curve.clients_dir / f"{JOBS_CLIENT}.key").exists():
            allow_client(directory, directory / f"{JOBS_CLIENT}.key")
        os.chmod(secret, 0o600)
        return {"AIFLOW_EVENT_SERVER_KEY": str(directory / f"{SERVER_CERT}.key"), CLIENT_KEY_ENV: str(secret)}

    @property
    def alive(self) -> bool:
        return self.scheduler is not None and self.scheduler.alive

    def stop(self) -> None:
        if self._services is not None:
            self._services.close(kill_jobs=False)  # its jobs run on: a restarted server adopts them

    def __repr__(self) -> str:
        return f"SchedulerService({self.name!r})"


# --- server keys -------------------------------------------------------------------------------------


def _server_keys(args) -> None:
    from aiflow_notebook.events.auth import (
        RESERVED_PREFIX,
        allow_client,
        create_client_keys,
        create_server_keys,
    )
    from aiflow_notebook.events.errors import CurveKeyError

    if args.client:
        if args.client.startswith(RESERVED_PREFIX) or args.client == SCHEDULER_CLIENT:
            raise CurveKeyError(f"client names starting with {RESERVED_PREFIX!r} and {SCHEDULER_CLIENT!r} are the "
                                "server's own; choose another name")
        public, secret = create_client_keys(Path(args.dir), args.client)
        listed = allow_client(args.dir, public)
        print(f"client key pair: {public} (public, now listed as {listed}) and {secret} (secret: give it to "
              f"that client only, with {Path(args.dir) / 'server.key'})")
        print(f"the client connects with: af.connect(url, auth=({str(Path(args.dir) / 'server.key')!r}, "
              f"{str(secret)!r})) or AIFLOW_EVENT_CLIENT_KEY={secret}")
        return
    public, secret = create_server_keys(args.dir, overwrite=args.force)
    print(f"server key pair: {secret} (secret: stays with the server) and {public} (public: give it to clients)")
    print(f"list each client: aiflow server keys {args.dir} --client NAME")
    print(f"then start the server with: aiflow server start --curve {args.dir}")
