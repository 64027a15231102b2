"""How the services are put together: an event client, the metadata store that announces its changes on
that client's bus, and a scheduler over both.

Every process that records or schedules anything wires them the same way — the embedded scheduler of a
notebook, a kernel using its Jupyter server's (``HostedScheduler``), ``aiflow server start`` (its
scheduler and its metadata service), the Jupyter server extension — so the wiring is written once, here,
and so is the order in which they are let go.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiflow_notebook.events import EventClient
from aiflow_notebook.events.publisher import EventBusPublisher
from aiflow_notebook.meta.publisher import EventPublisher
from aiflow_notebook.meta.store import MetadataStore
from aiflow_notebook.scheduler.scheduler import Scheduler


class BusServices:
    """``client`` → a publisher onto its bus → ``store`` (the database at ``db_url``; default
    ``$AIFLOW_META_URL``, else ``$AIFLOW_HOME``'s) → optionally ``scheduler`` (:meth:`start_scheduler`).

    ``wrap_publisher``: puts the bus publisher inside another before the store gets it (the server's
    ``ActingPublisher``, which names the client a call is made for)."""

    def __init__(self, client: EventClient, db_url: str | None = None, *,
                 wrap_publisher: Callable[[EventPublisher], EventPublisher] | None = None):
        publisher: EventPublisher = EventBusPublisher(client)
        if wrap_publisher is not None:
            publisher = wrap_publisher(publisher)
        self.client = client
        self.store = MetadataStore(db_url, publisher=publisher)
        self.scheduler: Scheduler | None = None

    @property
    def publisher(self) -> EventPublisher:
        return self.store.publisher

    def start_scheduler(self, *, authorize: Callable[[str | None], bool] | None = None,
                        **options: Any) -> Scheduler:
        """Start a :class:`Scheduler` over the client and the store (``options``: its keyword arguments:
        ``name``, ``home``, ``job_env``...); ``authorize`` decides who may submit and stop runs."""
        scheduler = Scheduler(self.store, self.client, **options)
        if authorize is not None:
            scheduler.authorize = authorize
        self.scheduler = scheduler.start()
        return self.scheduler

    def close(self, kill_jobs: bool = False) -> None:
        """Stop the scheduler (its jobs too when ``kill_jobs``; else a later scheduler adopts them), then
        close the client and the store."""
        if self.scheduler is not None:
            self.scheduler.stop(kill_jobs=kill_jobs)
        self.client.close()
        self.store.close()
