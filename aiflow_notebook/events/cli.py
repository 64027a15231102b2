"""``aiflow server start|keys`` and ``aiflow events send|list|latest|listen``.

``server start`` runs a list of services (each with ``start()``/``stop()``) until SIGINT/SIGTERM: the
:class:`EventServer` (built by :func:`event_server_from_args`) and, unless ``--no-scheduler``, the
scheduler beside it (:class:`aiflow_notebook.scheduler.service.SchedulerService`).
Client commands take the server from ``--url`` (default ``$AIFLOW_EVENT_URL``, else
``tcp://127.0.0.1:50052``) and its CURVE public key from ``--server-key`` (default
``$AIFLOW_EVENT_SERVER_KEY``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence

from aiflow_notebook.console import print_json, print_table
from aiflow_notebook.events.errors import EventServerError

LIST_COLUMNS = ["version", "created", "namespace", "key", "event_type", "sender", "value"]


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
                       help="require CURVE: DIR holds server.key_secret (make it with `aiflow server keys DIR`)")
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

    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument("--url", default=None, help="event server (default: $AIFLOW_EVENT_URL or "
                                                        "tcp://127.0.0.1:50052)")
    connection.add_argument("--server-key", metavar="PATH", default=None,
                            help="the server's CURVE public key file (default: $AIFLOW_EVENT_SERVER_KEY)")
    connection.add_argument("--deadline", type=float, default=10.0, metavar="SECONDS",
                            help="give up after this long without the server (default 10)")
    connection.add_argument("--json", action="store_true", help="print JSON")
    selection = argparse.ArgumentParser(add_help=False)
    selection.add_argument("--key", action="append", default=None, metavar="KEY",
                           help="only this key (repeat for several; default: all)")
    selection.add_argument("--namespace", default=None)
    selection.add_argument("--type", dest="event_type", default=None, metavar="EVENT_TYPE")
    selection.add_argument("--sender", default=None)

    events = commands.add_parser("events", help="send, list and listen to events on the event bus")
    event_commands = events.add_subparsers(title="events commands", metavar="ACTION", required=True)
    send = event_commands.add_parser("send", parents=[connection], help="send one event")
    send.add_argument("key")
    send.add_argument("value")
    send.add_argument("--type", dest="event_type", default="UNDEFINED", metavar="EVENT_TYPE")
    send.add_argument("--namespace", default="default")
    send.add_argument("--sender", default=None)
    send.add_argument("--context", default=None)
    send.set_defaults(func=_events_send)
    listing = event_commands.add_parser("list", parents=[connection, selection], help="list stored events")
    listing.add_argument("--since-version", type=int, default=0, metavar="N", help="only versions > N")
    listing.add_argument("--limit", type=int, default=None, metavar="N", help="the oldest N matches")
    listing.set_defaults(func=_events_list)
    latest = event_commands.add_parser("latest", parents=[connection], help="print the latest version")
    latest.add_argument("--key", default=None)
    latest.add_argument("--namespace", default=None)
    latest.set_defaults(func=_events_latest)
    listen = event_commands.add_parser("listen", parents=[connection, selection],
                                       help="print events as they arrive (Ctrl-C to stop)")
    listen.add_argument("--since-version", type=int, default=None, metavar="N",
                        help="replay from version N first (default: only events from now on)")
    listen.add_argument("--count", type=int, default=None, metavar="N", help="stop after N events")
    listen.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                        help="stop after this long")
    listen.set_defaults(func=_events_listen)


# --- server ------------------------------------------------------------------------------------------


def _server_start(args) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    server = event_server_from_args(args)

    services = [server]
    if not args.no_scheduler:
        from aiflow_notebook.scheduler.service import SchedulerService

        services.append(SchedulerService(server, server.db_url, home=args.home, curve_dir=args.curve))

    def announce() -> None:
        print(f"aiflow event server: listening on {server.url} (updates on {server.publish_url})"
              f"{', CURVE required' if server.curve else ''}"
              f"{'' if args.no_scheduler else ', scheduler running'}; pid {os.getpid()}", flush=True)

    run_services(services, announce)


def event_server_from_args(args):
    """The :class:`EventServer` that ``aiflow server start`` options describe (for a bigger service too)."""
    from aiflow_notebook.config import default_meta_url
    from aiflow_notebook.events.server import DEFAULT_BIND, DEFAULT_MAX_MESSAGE_BYTES, EventServer

    return EventServer(args.db or default_meta_url(), args.bind or DEFAULT_BIND,
                       publish_bind=args.publish_bind, curve_dir=args.curve, insecure=args.insecure,
                       max_message_bytes=args.max_message_bytes or DEFAULT_MAX_MESSAGE_BYTES)


def run_services(services: Sequence, announce: Callable[[], None] | None = None) -> None:
    """Start ``services`` in order, wait for SIGINT/SIGTERM, stop them in reverse order."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
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
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _server_keys(args) -> None:
    from pathlib import Path

    from aiflow_notebook.events.auth import CLIENTS_DIR, create_client_keys, create_server_keys

    if args.client:
        public, secret = create_client_keys(Path(args.dir), args.client)
        allowed = Path(args.dir) / CLIENTS_DIR
        allowed.mkdir(exist_ok=True)
        (allowed / public.name).write_bytes(public.read_bytes())
        print(f"client key pair: {public} (public, now allowed in {allowed}) and {secret} (secret: give it to "
              "that client only)")
        return
    public, secret = create_server_keys(args.dir, overwrite=args.force)
    print(f"server key pair: {secret} (secret: stays with the server) and {public} (public: give it to clients)")
    print(f"start the server with: aiflow server start --curve {args.dir}")
    print(f"clients: EventClient(url, auth={str(public)!r}) or AIFLOW_EVENT_SERVER_KEY={public}")


# --- client commands ---------------------------------------------------------------------------------


def _client(args):
    from aiflow_notebook.events.client import EventClient, default_event_url

    return EventClient(args.url or default_event_url(),
                       auth=args.server_key or os.environ.get("AIFLOW_EVENT_SERVER_KEY") or None,
                       deadline=args.deadline)


def _events_send(args) -> None:
    from aiflow_notebook.events.event import Event

    with _client(args) as client:
        event = client.send_event(Event(args.key, args.value, args.event_type, args.namespace, args.sender,
                                        args.context))
    if args.json:
        print_json(event.to_dict())
    else:
        print(f"stored as version {event.version}")


def _events_list(args) -> None:
    with _client(args) as client:
        events = client.list_events(args.key, args.namespace, args.event_type, args.sender,
                                    since_version=args.since_version, limit=args.limit)
    if args.json:
        print_json([e.to_dict() for e in events])
    else:
        print_table([_row(e) for e in events], LIST_COLUMNS, empty="no events")


def _events_latest(args) -> None:
    with _client(args) as client:
        version = client.latest_version(args.key, args.namespace)
    print(json.dumps({"latest_version": version}) if args.json else version)


def _events_listen(args) -> int:
    import time

    with _client(args) as client:
        since = args.since_version if args.since_version is not None else client.latest_version()
        listener = client.listen(args.key or "*", since_version=since, namespace=args.namespace,
                                 event_type=args.event_type, sender=args.sender)
        if not args.json:
            print(f"listening on {client.url} after version {since} (Ctrl-C to stop)", file=sys.stderr, flush=True)
        end = None if args.timeout is None else time.monotonic() + args.timeout
        seen = 0
        try:
            while args.count is None or seen < args.count:
                wait = 0.5 if end is None else min(0.5, end - time.monotonic())
                if wait <= 0:
                    break
                try:
                    event = listener.get(timeout=wait)
                except TimeoutError:
                    continue
                seen += 1
                if args.json:
                    print(json.dumps(event.to_dict()), flush=True)
                else:
                    row = _row(event)
                    print("  ".join(str(row[c]) for c in LIST_COLUMNS), flush=True)
        except KeyboardInterrupt:
            pass
        finally:
            listener.stop()
    return 0


def _row(event) -> dict:
    created = event.created_at
    return {**event.to_dict(), "created": created.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if created else None}
