"""``MetadataStore``: the one object through which everything is recorded and looked up.

It combines the model center, the run registry and lineage (each in its own module) over one
:class:`~aiflow_notebook.storage.database.Database`. Opening a store upgrades the schema when needed, so a new
SQLite file or an older database just works.
"""

from __future__ import annotations

import os
import threading

from aiflow_notebook.core.config import default_meta_url
from aiflow_notebook.meta.lineage import Lineage
from aiflow_notebook.meta.model_center import ModelCenter
from aiflow_notebook.meta.publisher import EventPublisher, RecordingPublisher
from aiflow_notebook.meta.runs import RunRegistry
from aiflow_notebook.storage.database import Database, safe_url


class MetadataStore(ModelCenter, RunRegistry, Lineage):
    """Metadata, model center and lineage over SQLAlchemy (SQLite by default, PostgreSQL by URL).

    ``url`` defaults to ``$AIFLOW_META_URL``, else ``sqlite:///$AIFLOW_HOME/meta.db``. ``publisher``
    receives model-stage events after each commit (default: an in-process :class:`RecordingPublisher`).
    """

    def __init__(self, url: str | None = None, *, publisher: EventPublisher | None = None, upgrade: bool = True):
        self._db = Database(url or default_meta_url())
        self.publisher: EventPublisher = publisher if publisher is not None else RecordingPublisher()
        if upgrade:
            self._db.ensure_schema()

    @property
    def url(self) -> str:
        """The database URL with any password hidden."""
        return safe_url(self._db.url)

    def close(self) -> None:
        self._db.dispose()

    def __enter__(self) -> MetadataStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MetadataStore({self.url!r})"


_default: MetadataStore | None = None
_default_key: tuple[str, str | None] | None = None
_default_lock = threading.Lock()


def default_store() -> MetadataStore:
    """The store that ``af.register_model`` and friends use; re-opened if ``AIFLOW_META_URL``/``AIFLOW_HOME``
    or ``AIFLOW_EVENT_URL`` changed. With ``AIFLOW_EVENT_URL`` set, model events go onto that event bus.

    In a process connected to an ``aiflow server`` (``af.connect``, ``$AIFLOW_SERVER_URL``): that server's
    store, a :class:`~aiflow_notebook.meta.remote.RemoteStore` (nothing is written locally)."""
    global _default, _default_key
    from aiflow_notebook.events.session import connected_client

    client = connected_client()
    if client is not None:
        return _remote_store(client)
    key = _environment_key()
    with _default_lock:
        if _default is None or _default_key != key:
            if _default is not None:
                _close_default(_default)
            _default, _default_key = MetadataStore(key[0], publisher=bus_publisher(key[1])), key
        return _default


_remote = None


def _remote_store(client):
    global _remote
    from aiflow_notebook.meta.remote import RemoteStore

    with _default_lock:
        if _remote is None or _remote.client is not client:
            _remote = RemoteStore(client)
        return _remote


def set_default_store(store: MetadataStore | None) -> None:
    """Use ``store`` for the module-level functions (None: go back to the environment's default)."""
    global _default, _default_key
    with _default_lock:
        _default = store
        _default_key = None if store is None else _environment_key()


def _environment_key() -> tuple[str, str | None]:
    return default_meta_url(), os.environ.get("AIFLOW_EVENT_URL") or None


def bus_publisher(event_url: str | None) -> EventPublisher | None:
    """A publisher onto the event bus at ``event_url`` (None: no bus, the store's in-memory default)."""
    if not event_url:
        return None
    from aiflow_notebook.events.publisher import EventBusPublisher  # pyzmq is imported only when used

    return EventBusPublisher()  # $AIFLOW_EVENT_URL, and $AIFLOW_EVENT_SERVER_KEY for CURVE


def _close_default(store: MetadataStore) -> None:
    store.close()
    close_publisher = getattr(store.publisher, "close", None)
    if close_publisher is not None:
        close_publisher()
