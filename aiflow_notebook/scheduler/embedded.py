"""The zero-set-up scheduler: event server + scheduler as threads of this process (the notebook kernel).

``af.submit()`` with no server uses one: SQLite under ``AIFLOW_HOME``, an event server on unix sockets in
a directory only this user can enter (``$AIFLOW_HOME/sockets``, mode 0700: on a shared machine no other
user can drive it, as they could a loopback TCP port), and the model center of this process publishing onto
that bus (so ``af.update_model_version`` in a cell can restart a serving job), wired by
:class:`~aiflow_notebook.scheduler.services.BusServices`. It stops, and stops the jobs it started, when the
process exits.
"""

from __future__ import annotations

import os
from pathlib import Path

from aiflow_notebook.core.config import default_meta_url
from aiflow_notebook.core.vocabulary import DEFAULT_SCHEDULER
from aiflow_notebook.events import EventClient, EventServer
from aiflow_notebook.scheduler.client import SchedulerClient
from aiflow_notebook.scheduler.services import BusServices

HOST_URL_VARIABLE = "AIFLOW_SCHEDULER_URL"
"""Set by a process that runs the embedded scheduler for the processes it starts (the Jupyter server
extension, for its kernels): the bus of that scheduler, which they then use instead of starting their own."""


class EmbeddedScheduler:
    """``EmbeddedScheduler(db_url=..., event_url=None)``: starts its own event server unless given one."""

    def __init__(self, db_url: str | None = None, event_url: str | None = None, *, name: str = DEFAULT_SCHEDULER,
                 home: str | Path | None = None):
        self.db_url = db_url or default_meta_url()
        self._server = None
        if event_url is None:
            self._server = EventServer(self.db_url).start()  # private unix sockets: only this user gets in
            event_url = self._server.url
        self.event_url = event_url
        self._services = BusServices(EventClient(event_url), self.db_url)
        self.client, self.store = self._services.client, self._services.store
        self.scheduler = self._services.start_scheduler(name=name, home=home)
        self.api = SchedulerClient(self.client, name, self.scheduler.blobs)

    def submit(self, workflow, **kwargs):
        return self.api.submit(workflow, **kwargs)

    def stop(self, kill_jobs: bool = True) -> None:
        self._services.close(kill_jobs=kill_jobs)
        if self._server is not None:
            self._server.stop()

    def __enter__(self) -> EmbeddedScheduler:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class HostedScheduler:
    """The embedded scheduler of another process that started this one (``$AIFLOW_SCHEDULER_URL``): the
    Jupyter server's, in a kernel it started. Same face as :class:`EmbeddedScheduler` (``event_url``,
    ``client``, ``store``, ``api``, ``submit``), but ``stop`` only closes this process's connections: the
    scheduler and its jobs belong to the host.

    One event server may write a log, so a kernel cannot start its own bus over the database the server's
    scheduler already serves; using the host's also puts the kernel's runs where the server's sidebar shows
    them. The bus is the host's private unix socket (or the remote server it follows, with the CURVE keys
    of the environment), so nothing else is exposed.
    """

    scheduler = None  # runs in the host process

    def __init__(self, event_url: str, *, db_url: str | None = None, name: str = DEFAULT_SCHEDULER):
        self.db_url = db_url or default_meta_url()
        self.event_url = event_url
        self._services = BusServices(EventClient(event_url, auth=os.environ.get("AIFLOW_EVENT_SERVER_KEY") or None),
                                     self.db_url)
        self.client, self.store = self._services.client, self._services.store
        self.api = SchedulerClient(self.client, name)

    def submit(self, workflow, **kwargs):
        return self.api.submit(workflow, **kwargs)

    def stop(self, kill_jobs: bool = True) -> None:
        self._services.close()  # no scheduler here: only this process's connections
