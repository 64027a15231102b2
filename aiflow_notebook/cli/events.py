"""``aiflow events send|list|latest|listen`` (``aiflow server`` lives in :mod:`aiflow_notebook.cli.server`).

Client commands take the server from ``--url``; else, like a notebook, the ``aiflow server`` that
``$AIFLOW_SERVER_URL`` names (keys ``$AIFLOW_SERVER_KEY``, ``$AIFLOW_CLIENT_KEY``); else ``$AIFLOW_EVENT_URL``,
else ``tcp://127.0.0.1:50052``. Its CURVE public key comes from ``--server-key`` (default
``$AIFLOW_EVENT_SERVER_KEY``) and this client's listed key from ``--client-key`` (default
``$AIFLOW_EVENT_CLIENT_KEY``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from aiflow_notebook.cli.console import print_json, print_table
from aiflow_notebook.core.vocabulary import DEFAULT_NAMESPACE, WILDCARD
from aiflow_notebook.core.waiting import Deadline

LIST_COLUMNS = ["version", "created", "namespace", "key", "event_type", "sender", "value"]


def connection_options() -> argparse.ArgumentParser:
    """The options that say how a client command reaches the server (``--url``, keys, ``--deadline``,
    ``--json``), as a parent parser; :func:`client_from_args` makes the client."""
    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument("--url", default=None, help="event server (default: $AIFLOW_SERVER_URL, else "
                                                        "$AIFLOW_EVENT_URL, else tcp://127.0.0.1:50052)")
    connection.add_argument("--server-key", metavar="PATH", default=None,
                            help="the server's CURVE public key file (default: $AIFLOW_EVENT_SERVER_KEY)")
    connection.add_argument("--client-key", metavar="PATH", default=None,
                            help="this client's listed CURVE key, NAME.key_secret (default: $AIFLOW_EVENT_CLIENT_KEY)")
    connection.add_argument("--deadline", type=float, default=10.0, metavar="SECONDS",
                            help="give up after this long without the server (default 10)")
    connection.add_argument("--json", action="store_true", help="print JSON")
    return connection


def add_commands(commands: argparse._SubParsersAction) -> None:
    connection = connection_options()
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
    send.add_argument("--namespace", default=DEFAULT_NAMESPACE)
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


# --- client commands ---------------------------------------------------------------------------------


def client_from_args(args):
    """``--url`` and keys; else the server ``$AIFLOW_SERVER_URL`` connects to (as in a notebook); else the
    event bus of ``$AIFLOW_EVENT_URL`` (default ``tcp://127.0.0.1:50052``)."""
    from aiflow_notebook.events.client import default_event_url
    from aiflow_notebook.events.session import command_line_client

    return command_line_client(args.url, args.server_key, args.client_key, default_url=default_event_url(),
                               default_server_key=os.environ.get("AIFLOW_EVENT_SERVER_KEY") or None,
                               deadline=args.deadline)


def _events_send(args) -> None:
    from aiflow_notebook.events.event import Event

    with client_from_args(args) as client:
        event = client.send_event(Event(args.key, args.value, args.event_type, args.namespace, args.sender,
                                        args.context))
    if args.json:
        print_json(event.to_dict())
    else:
        print(f"stored as version {event.version}")


def _events_list(args) -> None:
    with client_from_args(args) as client:
        events = client.list_events(args.key, args.namespace, args.event_type, args.sender,
                                    since_version=args.since_version, limit=args.limit)
    if args.json:
        print_json([e.to_dict() for e in events])
    else:
        print_table([_row(e) for e in events], LIST_COLUMNS, empty="no events")


def _events_latest(args) -> None:
    with client_from_args(args) as client:
        version = client.latest_version(args.key, args.namespace)
    print(json.dumps({"latest_version": version}) if args.json else version)


def _events_listen(args) -> int:
    with client_from_args(args) as client:
        since = args.since_version if args.since_version is not None else client.latest_version()
        listener = client.listen(args.key or WILDCARD, since_version=since, namespace=args.namespace,
                                 event_type=args.event_type, sender=args.sender)
        if not args.json:
            print(f"listening on {client.url} after version {since} (Ctrl-C to stop)", file=sys.stderr, flush=True)
        try:
            _print_arrivals(listener, args)
        except KeyboardInterrupt:
            pass
        finally:
            listener.stop()
    return 0


def _print_arrivals(listener, args) -> None:
    """Print events as they arrive, until ``--count`` of them came or ``--timeout`` seconds passed."""
    deadline = Deadline(args.timeout)
    seen = 0
    while args.count is None or seen < args.count:
        wait = min(0.5, deadline.left())
        if wait <= 0:
            return
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


def _row(event) -> dict:
    created = event.created_at
    return {**event.to_dict(), "created": created.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if created else None}
