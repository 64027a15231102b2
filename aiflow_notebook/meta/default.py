"""The default metadata store: what ``af.register_model`` and friends use when given no store.

Connected to an ``aiflow server`` (``af.connect``, ``$AIFLOW_SERVER_URL``): that server's store, a
:class:`~aiflow_notebook.meta.remote.RemoteStore` over the connection (nothing is written locally). Else a
local :class:`~aiflow_notebook.meta.store.MetadataStore` of ``$AIFLOW_META_URL`` (or ``$AIFLOW_HOME``'s
SQLite file) that announces model-stage changes on ``$AIFLOW_EVENT_URL``'s bus when that is set.

Why a module of its own: choosing between the two stores needs both, and neither store should know the
other. Whether the process is connected is decided in ``events.session`` alone; each store is derived
from what it depends on (:class:`~aiflow_notebook.core.derived.Derived`), so nothing here can disagree with it.
"""

from __future__ import annotations

import os
from typing import Any

from aiflow_notebook.core.config import default_meta_url
from aiflow_notebook.core.derived import Derived
from aiflow_notebook.meta.publisher import EventPublisher
from aiflow_notebook.meta.store import MetadataStore


def default_store() -> Any:
    """The store that ``af.register_model`` and friends use; re-opened if ``AIFLOW_META_URL``/``AIFLOW_HOME``
    or ``AIFLOW_EVENT_URL`` changed. With ``AIFLOW_EVENT_URL`` set, model events go onto that event bus.

    In a process connected to an ``aiflow server`` (``af.connect``, ``$AIFLOW_SERVER_URL``): that server's
    store, a :class:`~aiflow_notebook.meta.remote.RemoteStore` (nothing is written locally)."""
    from aiflow_notebook.events.session import connected_client

    client = connected_client()
    if client is not None:
        return _remote.get(client)
    return _local.get(_environment_key())


def set_default_store(store: MetadataStore | None) -> None:
    """Use ``store`` for the module-level functions (None: go back to the environment's default)."""
    if store is None:
        _local.forget()
    else:
        _local.put(_environment_key(), store)


def bus_publisher(event_url: str | None) -> EventPublisher | None:
    """A publisher onto the event bus at ``event_url`` (None: no bus, the store's in-memory default)."""
    if not event_url:
        return None
    from aiflow_notebook.events.publisher import EventBusPublisher  # pyzmq is imported only when used

    return EventBusPublisher()  # $AIFLOW_EVENT_URL, and $AIFLOW_EVENT_SERVER_KEY for CURVE


def _environment_key() -> tuple[str, str | None]:
    return default_meta_url(), os.environ.get("AIFLOW_EVENT_URL") or None


def _open_local(key: tuple[str, str | None]) -> MetadataStore:
    meta_url, event_url = key
    return MetadataStore(meta_url, publisher=bus_publisher(event_url))


def _close_local(store: MetadataStore) -> None:
    store.close()
    close_publisher = getattr(store.publisher, "close", None)
    if close_publisher is not None:
        close_publisher()


def _open_remote(client: Any) -> Any:
    from aiflow_notebook.meta.remote import RemoteStore

    return RemoteStore(client)


_local: Derived[tuple[str, str | None], MetadataStore] = Derived(_open_local, drop=_close_local)
"""The local store, by the environment it was opened from."""
_remote: Derived[Any, Any] = Derived(_open_remote)
"""The connected server's store, by the connection's ``EventClient``."""
