"""``aiflow db ...`` and ``aiflow models ...``.

``aiflow models`` works where a notebook would: on the ``aiflow server`` that ``--server`` or
``$AIFLOW_SERVER_URL`` names (its store, through the authenticated connection: a stage change there is the
server's event, sent by this client's listed name), else on the local store (``--db``, ``$AIFLOW_META_URL``,
``$AIFLOW_HOME/meta.db``), announcing stage changes on ``$AIFLOW_EVENT_URL``'s bus when that is set.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager

from aiflow_notebook.cli.console import print_json, print_table
from aiflow_notebook.core.config import default_meta_url
from aiflow_notebook.meta.default import bus_publisher
from aiflow_notebook.meta.store import MetadataStore
from aiflow_notebook.storage.database import Database, head_revision, safe_url

VERSION_COLUMNS = ["version", "stage", "uri", "metrics", "job_run_id", "created_at"]


def add_commands(commands: argparse._SubParsersAction) -> None:
    from aiflow_notebook.events.session import server_options

    db_url = argparse.ArgumentParser(add_help=False)
    db_url.add_argument("--db", metavar="URL", default=None,
                        help="metadata database URL (default: $AIFLOW_META_URL, else $AIFLOW_HOME/meta.db)")
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON instead of a table")
    # --db, else --server (or $AIFLOW_SERVER_URL), else the local default store
    store = argparse.ArgumentParser(add_help=False, parents=[db_url, server_options()])

    db = commands.add_parser("db", help="create or upgrade the metadata database")
    db_commands = db.add_subparsers(title="db commands", metavar="ACTION", required=True)
    upgrade = db_commands.add_parser("upgrade", parents=[db_url], help="apply migrations (default: to the newest)")
    upgrade.add_argument("revision", nargs="?", default="head")
    upgrade.set_defaults(func=_db_upgrade)
    current = db_commands.add_parser("current", parents=[db_url], help="show the schema revision")
    current.set_defaults(func=_db_current)

    models = commands.add_parser("models", help="list models and versions, change a version's stage")
    model_commands = models.add_subparsers(title="models commands", metavar="ACTION", required=True)
    listing = model_commands.add_parser("list", parents=[store, as_json], help="list registered models")
    listing.set_defaults(func=_models_list)
    versions = model_commands.add_parser("versions", parents=[store, as_json], help="list a model's versions")
    versions.add_argument("model")
    versions.add_argument("--stage", default=None, help="only versions in this stage")
    versions.set_defaults(func=_models_versions)
    stage = model_commands.add_parser("stage", parents=[store, as_json], help="move a version to a stage")
    stage.add_argument("model")
    stage.add_argument("version", type=int)
    stage.add_argument("stage", help="GENERATED, VALIDATED, DEPLOYED, DEPRECATED or DELETED")
    stage.set_defaults(func=_models_stage)


def _db_upgrade(args) -> None:
    db = Database(args.db or default_meta_url())
    try:
        before = db.current_revision()
        db.upgrade(args.revision)
        after = db.current_revision()
    finally:
        db.dispose()
    state = "already at" if before == after else f"upgraded {before or 'empty'} ->"
    print(f"{safe_url(db.url)}: {state} revision {after} (newest: {head_revision()})")


def _db_current(args) -> None:
    db = Database(args.db or default_meta_url())
    try:
        print(f"{safe_url(db.url)}: revision {db.current_revision() or 'none (empty database)'} "
              f"(newest: {head_revision()})")
    finally:
        db.dispose()


@contextmanager
def _store(args) -> Iterator[MetadataStore]:
    """``--db``; else the server (``--server`` or ``$AIFLOW_SERVER_URL``); else the local default store."""
    from aiflow_notebook.core.errors import AIFlowError

    if args.db is None:
        from aiflow_notebook.events.session import command_line_client
        from aiflow_notebook.meta.remote import RemoteStore

        client = command_line_client(args.server, args.server_key, args.client_key)
        if client is not None:
            try:
                yield RemoteStore(client)
            finally:
                client.close()
            return
    elif args.server is not None:
        raise AIFlowError("give --db (a database) or --server (an aiflow server), not both")
    # The local default store announces stage changes on $AIFLOW_EVENT_URL's bus, as af.update_model_version
    # does: a rule waiting for MODEL_VALIDATED must see a version validated from the terminal.
    publisher = bus_publisher(os.environ.get("AIFLOW_EVENT_URL")) if args.db is None else None
    with MetadataStore(args.db, publisher=publisher) as store:
        try:
            yield store
        finally:
            getattr(publisher, "close", lambda: None)()


def _models_list(args) -> None:
    with _store(args) as store:
        rows = []
        for model in store.list_models():
            latest = store.get_latest_model_version(model.name)
            rows.append({"name": model.name, "latest_version": latest and latest.version,
                         "latest_stage": latest and latest.stage.value, "created_at": model.created_at})
    if args.json:
        print_json(rows)
    else:
        print_table(rows, ["name", "latest_version", "latest_stage", "created_at"], empty="no models registered")


def _models_versions(args) -> None:
    with _store(args) as store:
        versions = [v.to_dict() for v in store.list_model_versions(args.model, args.stage)]
    if args.json:
        print_json(versions)
    else:
        print_table(versions, VERSION_COLUMNS, empty=f"model {args.model!r} has no versions")


def _models_stage(args) -> None:
    from aiflow_notebook.core.errors import AIFlowError
    from aiflow_notebook.events.errors import EventServerUnavailableError

    with _store(args) as store:
        try:
            version = store.update_model_version(args.model, args.version, args.stage)
        except EventServerUnavailableError as exc:
            if not isinstance(store, MetadataStore):
                raise  # the server did not answer: nothing was changed
            # the local store committed the change; only announcing it on the bus failed
            now = store.get_model_version(args.model, args.version)
            raise AIFlowError(f"{now.model} version {now.version} is now {now.stage.value} in "
                              f"{store.url}, but the MODEL_{now.stage.value} event was not announced: "
                              f"{exc}") from None
    if args.json:
        print_json(version.to_dict())
    else:
        print(f"{version.model} version {version.version} is now {version.stage.value}")
