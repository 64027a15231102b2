"""``af.submit`` and ``af.connect``: run the current workflow on the embedded or a remote scheduler.

Whether this process is connected is decided in ``events.session`` alone; the connected server's scheduler
client is derived from its event client (:class:`~aiflow_notebook.core.derived.Derived`), never kept as a
state of its own.
"""

from __future__ import annotations

import atexit
import os
import threading
from typing import Any

from aiflow_notebook.core.derived import Derived
from aiflow_notebook.core.vocabulary import DEFAULT_SCHEDULER

_lock = threading.Lock()
_embedded = None
_event_url_before: str | None = None  # AIFLOW_EVENT_URL as it was before the embedded scheduler set it
_session_runs: dict[int, Any] = {}


def _scheduler_for(client: Any, name: str = DEFAULT_SCHEDULER):
    from aiflow_notebook.scheduler.client import SchedulerClient
    from aiflow_notebook.storage.blobs import RemoteBlobStore

    return SchedulerClient(client, name, blob_store=RemoteBlobStore(client))


_connected: Derived[Any, Any] = Derived(_scheduler_for)
"""The connected server's ``SchedulerClient``, by the connection's ``EventClient``."""


def connect(url: str, auth: Any = None, name: str = DEFAULT_SCHEDULER, timeout: float = 10.0):
    """Make the ``aiflow server`` at ``url`` this process's one source of truth; returns its scheduler client.

    From now on submissions (their payloads uploaded over the connection), the model center, datasets,
    lineage, events, run status and panels all go to that server; nothing is written locally.
    ``auth``, when the server runs with ``--curve``: ``(server.key, NAME.key_secret)``, this client's listed
    key pair with the server's public key (or the server key alone, with ``$AIFLOW_EVENT_CLIENT_KEY``
    naming the client's file; or a ``CurveAuth``). The environment can do the same
    (``$AIFLOW_SERVER_URL``, ``$AIFLOW_SERVER_KEY``, ``$AIFLOW_CLIENT_KEY``: see docs/remote.md).
    Raises after ``timeout`` seconds if the server does not answer (down, or a wrong key).
    """
    from aiflow_notebook.events.session import connect as connect_client

    client = connect_client(url, auth=auth, timeout=timeout)
    return _connected.put(client, _scheduler_for(client, name))


def disconnect() -> None:
    """Go back to the embedded scheduler and the local store (also when ``$AIFLOW_SERVER_URL`` is set)."""
    from aiflow_notebook.events.session import disconnect as disconnect_client

    disconnect_client()


def connected() -> bool:
    """Whether this process is connected to an ``aiflow server`` (else the embedded scheduler is used)."""
    return _connected_scheduler() is not None


def _connected_scheduler():
    """The connected server's ``SchedulerClient`` (``af.connect``, or ``$AIFLOW_SERVER_URL``), else None."""
    from aiflow_notebook.events.session import connected_client

    client = connected_client()
    return None if client is None else _connected.get(client)


def event_bus() -> tuple[str, Any]:
    """``(url, auth)`` of the bus this process follows: the connected server's, else the embedded
    scheduler's (started here as ``af.submit()`` would, so a panel opened before any run has a bus)."""
    connected = _connected_scheduler()
    if connected is not None:
        return connected.client.url, connected.client.auth
    scheduler = embedded_scheduler()  # (a hosted one may follow a CURVE server: its client carries the keys)
    return scheduler.event_url, scheduler.client.auth


def save_model(obj: Any, model: str) -> str:
    """Save a model object for ``af.register_model_version(model, uri=...)``; returns its URI.

    Embedded: a pickle under ``$AIFLOW_HOME/models``. Connected: uploaded into the server's blob store
    (content-addressed, hash-verified), so the server's jobs can load it without a shared filesystem."""
    connected = _connected_scheduler()
    if connected is None:
        from aiflow_notebook.engines.model_io import save_model as save_locally

        return save_locally(obj, model)
    import cloudpickle

    return connected.blobs.put(cloudpickle.dumps(obj))


def embedded_scheduler():
    """The embedded scheduler of this process, started on first use and stopped at exit.

    In a process started by one that hosts the embedded scheduler for it (a kernel of a Jupyter server with
    the aiflow_notebook extension: ``$AIFLOW_SCHEDULER_URL``), the host's, reached over its private bus."""
    global _embedded, _event_url_before
    with _lock:
        if _embedded is None:
            from aiflow_notebook.scheduler.embedded import (
                HOST_URL_VARIABLE,
                EmbeddedScheduler,
                HostedScheduler,
            )

            host = os.environ.get(HOST_URL_VARIABLE)
            _embedded = HostedScheduler(host) if host else EmbeddedScheduler()
            _event_url_before = os.environ.get("AIFLOW_EVENT_URL")
            os.environ["AIFLOW_EVENT_URL"] = _embedded.event_url  # this process's model center -> the bus
            atexit.register(_shutdown)
        return _embedded


def stop_embedded_scheduler() -> None:
    """Stop this process's embedded scheduler and the jobs it started (also done at exit)."""
    _shutdown()


def _shutdown() -> None:
    """Stop the embedded scheduler and its jobs; the model center stops publishing to its bus."""
    global _embedded
    with _lock:
        if _embedded is None:
            return
        _embedded.stop(kill_jobs=True)
        _embedded = None
        if _event_url_before is None:
            os.environ.pop("AIFLOW_EVENT_URL", None)
        else:
            os.environ["AIFLOW_EVENT_URL"] = _event_url_before


def scheduler_client(scheduler: Any = None):
    """The ``SchedulerClient`` requests go to: ``scheduler`` if given, the connected server, else the
    embedded scheduler (started on first use)."""
    target = scheduler or _connected_scheduler() or embedded_scheduler()
    return getattr(target, "api", target)


def submit(workflow: Any = None, scheduler: Any = None):
    """Compile ``workflow`` (default: the current one) and run it; returns a ``WorkflowRun``."""
    from aiflow_notebook.core.vocabulary import DEFAULT_PROJECT
    from aiflow_notebook.sdk.compile import compile as compile_workflow

    compiled = workflow if hasattr(workflow, "to_bytes") else compile_workflow(workflow)
    if not compiled.jobs:
        from aiflow_notebook.core.errors import AIFlowError

        raise AIFlowError(f"workflow {compiled.name!r} has no jobs, so there is nothing to run. Define nodes in a job "
                          "first, or name the workflow: af.submit('my_workflow') (a `with af.workflow(...)` block "
                          "selects it only inside the block)")
    api = scheduler_client(scheduler)
    run = api.submit(compiled, project=getattr(compiled, "project", DEFAULT_PROJECT) or DEFAULT_PROJECT)
    with _lock:
        _session_runs[run.run_id] = run
    return run


def session_runs() -> dict[int, Any]:
    """The runs ``submit`` started in this process, by run id, oldest first (``%aiflow status`` finds them)."""
    with _lock:
        return dict(_session_runs)
