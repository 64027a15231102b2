"""The ``aiflow_notebook`` jupyter_server extension: routes, services, start and stop.

Which scheduler (docs/server_extension.md has the why):
- ``$AIFLOW_EVENT_URL`` set when the server starts: the remote ``aiflow server`` it names (with
  ``$AIFLOW_EVENT_SERVER_KEY`` for CURVE) and the metadata database of ``$AIFLOW_META_URL``;
- else the server process's own embedded scheduler, started with the server as ``af.submit()`` starts one
  (SQLite under ``$AIFLOW_HOME``, its bus on unix sockets in a 0700 directory).
Either way the server exports ``$AIFLOW_SCHEDULER_URL`` (and ``$AIFLOW_EVENT_URL``) to the kernels it
starts, so ``af.submit()`` in a kernel runs on that scheduler and the sidebar sees the run.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor

from jupyter_server.extension.application import ExtensionApp
from traitlets import Int, Unicode

from aiflow_notebook.core.errors import AIFlowError
from aiflow_notebook.core.vocabulary import DEFAULT_SCHEDULER
from aiflow_notebook.server_extension import handlers

API = "aiflow/api"
_RUN = r"(?P<run_id>[^/]+)"
_JOB = r"(?P<job>[^/]+)"
_MODEL = r"(?P<model>[^/]+)"
_VERSION = r"(?P<version>[^/]+)"


class AIFlowExtension(ExtensionApp):
    """Serves the aiflow REST API and forwards bus events to jupyter_server's event bus."""

    name = "aiflow_notebook"
    load_other_extensions = True

    # The whole REST API, one line per route (paths below the server's base URL).
    routes = [
        (rf"/{API}/workflows/?", handlers.WorkflowsHandler),
        (rf"/{API}/runs/?", handlers.RunsHandler),
        (rf"/{API}/runs/{_RUN}/?", handlers.RunHandler),
        (rf"/{API}/runs/{_RUN}/stop/?", handlers.StopRunHandler),
        (rf"/{API}/runs/{_RUN}/rerun/?", handlers.RerunHandler),
        (rf"/{API}/runs/{_RUN}/jobs/{_JOB}/restart/?", handlers.RestartJobHandler),
        (rf"/{API}/runs/{_RUN}/jobs/{_JOB}/log/?", handlers.JobLogHandler),
        (rf"/{API}/events/?", handlers.EventsHandler),
        (rf"/{API}/models/?", handlers.ModelsHandler),
        (rf"/{API}/models/{_MODEL}/versions/?", handlers.ModelVersionsHandler),
        (rf"/{API}/models/{_MODEL}/versions/{_VERSION}/?", handlers.ModelVersionHandler),
        (rf"/{API}/lineage/{_MODEL}/{_VERSION}/?", handlers.LineageHandler),
        (rf"/{API}(?:/.*)?", handlers.NotFoundHandler),
    ]

    scheduler_name = Unicode(DEFAULT_SCHEDULER, config=True,
                             help="the scheduler that stop/restart requests go to (a run's own scheduler, when "
                                  "recorded, wins)")
    worker_threads = Int(4, config=True, help="threads that run the handlers' database and bus calls")

    def initialize_settings(self) -> None:
        from aiflow_notebook.server_extension.push import BusForwarder
        from aiflow_notebook.server_extension.service import AIFlowService

        self._environment_before: dict[str, str | None] = {}
        self._started_scheduler = self._stopped = False
        self._executor = ThreadPoolExecutor(self.worker_threads, thread_name_prefix="aiflow-api")
        self.service = self.forwarder = None
        self.settings.update({"aiflow_service": None, "aiflow_executor": self._executor, "aiflow_unavailable": None})
        try:
            store, client = self._connect()
        except AIFlowError as exc:  # e.g. another process already serves this AIFLOW_HOME's bus
            self.settings["aiflow_unavailable"] = f"the aiflow scheduler is not available to this server: {exc}"
            self.log.error("aiflow_notebook: %s", self.settings["aiflow_unavailable"])
            return
        self.service = self.settings["aiflow_service"] = AIFlowService(store, client, self.scheduler_name)
        # The forwarder emits on the server's loop (set up before extensions load); what it queues before
        # the loop runs is emitted once it does.
        self.forwarder = BusForwarder(client, self.serverapp.event_logger, self.serverapp.io_loop.asyncio_loop).start()
        self.log.info("aiflow_notebook: REST API at /%s, bus %s, metadata %s", API, client.url, store.url)

    def initialize_handlers(self) -> None:
        self.handlers.extend(self.routes)

    async def stop_extension(self) -> None:
        """Stop forwarding, the worker threads and the scheduler we started; give the environment back."""
        if self._stopped:
            return
        self._stopped = True
        if self.forwarder is not None:
            self.forwarder.stop()
        self._executor.shutdown(wait=True, cancel_futures=True)
        if self._started_scheduler:
            from aiflow_notebook.session.submit import stop_embedded_scheduler

            await asyncio.get_running_loop().run_in_executor(None, stop_embedded_scheduler)
        elif self.service is not None:
            self.service.client.close()
            self.service.store.close()
        for name, value in self._environment_before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    # --- which scheduler -----------------------------------------------------------------------------

    def _connect(self):
        """(store, event client) of the scheduler this server shows, and its address exported to kernels."""
        from aiflow_notebook.events.session import connected_client
        from aiflow_notebook.scheduler.embedded import HOST_URL_VARIABLE

        connected = connected_client()
        if connected is not None:  # $AIFLOW_SERVER_URL: that server is the truth (its kernels connect too)
            from aiflow_notebook.meta.remote import RemoteStore

            return RemoteStore(connected), connected
        remote = os.environ.get("AIFLOW_EVENT_URL")
        if remote:
            from aiflow_notebook.events import EventClient
            from aiflow_notebook.scheduler.services import BusServices

            services = BusServices(EventClient.from_environment())
            client, store, url = services.client, services.store, remote
        else:
            from aiflow_notebook.session.submit import embedded_scheduler

            self._remember("AIFLOW_EVENT_URL")
            scheduler = embedded_scheduler()  # sets $AIFLOW_EVENT_URL for this process's model center
            self._started_scheduler = True
            client, store, url = scheduler.client, scheduler.store, scheduler.event_url
        self._remember(HOST_URL_VARIABLE)
        os.environ[HOST_URL_VARIABLE] = url  # kernels started from now on inherit it
        return store, client

    def _remember(self, name: str) -> None:
        self._environment_before.setdefault(name, os.environ.get(name))
