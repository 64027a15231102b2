"""The model center's publisher onto the bus: ``MetadataStore`` stage changes become bus events.

:class:`EventBusPublisher` implements :class:`aiflow_notebook.meta.publisher.EventPublisher` over an
:class:`EventClient`. The store calls it after its commit, so a published event always describes a
committed change; the send is idempotent and retried until the client's deadline, after which the
store's caller sees :class:`EventServerUnavailableError` (the change itself stays committed).
``default_store()`` uses it when ``$AIFLOW_EVENT_URL`` is set.
"""

from __future__ import annotations

from aiflow_notebook.core.vocabulary import DEFAULT_NAMESPACE
from aiflow_notebook.events.client import EventClient
from aiflow_notebook.events.event import Event


class EventBusPublisher:
    """Publishes through ``client`` (an :class:`EventClient`, or a URL to make one)."""

    def __init__(self, client: EventClient | str | None = None, **client_kwargs):
        if client is None:
            client = EventClient.from_environment(**client_kwargs)
        elif isinstance(client, str):
            client = EventClient(client, **client_kwargs)
        self.client = client

    def publish(self, key: str, value: str, event_type: str, namespace: str = DEFAULT_NAMESPACE,
                sender: str | None = None) -> None:
        self.client.send_event(Event(key, value, event_type, namespace, sender))

    def close(self) -> None:
        self.client.close()

    def __repr__(self) -> str:
        return f"EventBusPublisher({self.client.url!r})"
