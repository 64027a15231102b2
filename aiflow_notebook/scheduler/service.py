"""The scheduler as a service beside an event server, in one process: ``aiflow server start``.

It talks to its own event server like any client (with CURVE when the server requires it), records in
the same database, and leaves job processes running when it stops: a restarted server adopts them.
"""

from __future__ import annotations

from pathlib import Path

from aiflow_notebook.events import EventClient, EventServer
from aiflow_notebook.events.auth import CLIENTS_DIR, SERVER_CERT, CurveAuth, create_client_keys
from aiflow_notebook.events.publisher import EventBusPublisher
from aiflow_notebook.meta.store import MetadataStore
from aiflow_notebook.scheduler.scheduler import Scheduler

SCHEDULER_CLIENT_NAME = "aiflow-scheduler"


class SchedulerService:
    def __init__(self, server: EventServer, db_url: str, *, name: str = "default", home: str | Path | None = None,
                 curve_dir: str | Path | None = None):
        self.server, self.db_url, self.name, self.home = server, db_url, name, home
        self.curve_dir = Path(curve_dir) if curve_dir else None
        self.scheduler: Scheduler | None = None
        self.failure: BaseException | None = None

    def start(self) -> SchedulerService:
        client = EventClient(self.server.url, auth=self._auth(), client_id=f"scheduler-{self.name}")
        store = MetadataStore(self.db_url, publisher=EventBusPublisher(client))
        self.scheduler = Scheduler(store, client, name=self.name, home=self.home).start()
        return self

    def _auth(self) -> CurveAuth | None:
        if self.curve_dir is None:
            return None
        certificate = None
        if (self.curve_dir / CLIENTS_DIR).is_dir():  # the server admits listed clients only: list ourselves
            certificate = self.curve_dir / CLIENTS_DIR / f"{SCHEDULER_CLIENT_NAME}.key_secret"
            if not certificate.exists():
                create_client_keys(self.curve_dir / CLIENTS_DIR, SCHEDULER_CLIENT_NAME)
        return CurveAuth(CurveAuth.coerce(self.curve_dir / f"{SERVER_CERT}.key").server_public_key, certificate)

    @property
    def alive(self) -> bool:
        return self.scheduler is not None and self.scheduler.alive

    def stop(self) -> None:
        if self.scheduler is not None:
            self.scheduler.stop(kill_jobs=False)
            self.scheduler.client.close()
            self.scheduler.store.close()

    def __repr__(self) -> str:
        return f"SchedulerService({self.name!r})"
