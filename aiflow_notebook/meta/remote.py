"""``RemoteStore``: the metadata store of a connected ``aiflow server``, with the methods of ``MetadataStore``.

Each method is one CALL over the event bus's request socket (authenticated by CURVE when the server runs
with ``--curve``), answered by the server's :class:`~aiflow_notebook.meta.service.StoreService`. Records
travel as JSON (:func:`encode` / :func:`decode`) and come back as the same frozen dataclasses a local store
returns; a store error comes back as the same error class with the server's message.

Only what a notebook or a panel needs goes over the connection (:data:`REMOTE_METHODS`): the model
center, datasets, lineage and reading runs. The scheduler's own bookkeeping (creating runs and job runs)
stays on the server; asking a ``RemoteStore`` for it raises :class:`RemoteUnsupportedError` instead of
silently writing somewhere else.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from enum import Enum
from typing import Any

import aiflow_notebook.meta.errors as _errors
from aiflow_notebook.core.errors import AIFlowError
from aiflow_notebook.meta.lineage import Lineage, LineageGraph, LineageNode
from aiflow_notebook.meta.model_center import ModelCenter
from aiflow_notebook.meta.models import Dataset, JobRun, Model, ModelVersion, Stage, WorkflowRunRecord
from aiflow_notebook.meta.runs import RunRegistry

STORE_METHOD_PREFIX = "store."
REMOTE_METHODS = frozenset({
    # model center
    "register_model", "get_model", "list_models", "register_model_version", "update_model_version",
    "get_model_version", "get_latest_model_version", "list_model_versions",
    # datasets and lineage
    "register_dataset", "get_dataset", "record_dataset_read", "record_dataset_write", "record_model_consumer",
    "lineage",
    # runs (read only: the server's scheduler writes them)
    "get_job_run", "job_log", "get_workflow_run", "list_workflow_runs", "count_workflow_runs", "list_job_runs",
    "get_workflow_snapshot",
})
_STORE_PARTS = (ModelCenter, RunRegistry, Lineage)
"""What ``MetadataStore`` is made of: a method of one of them that is not remote is the server's own."""
_RECORDS = {cls.__name__: cls for cls in (Model, ModelVersion, Dataset, JobRun, WorkflowRunRecord, LineageGraph,
                                          LineageNode)}


class RemoteUnsupportedError(AIFlowError):
    """A store method that a connected process cannot call (it is the server's own business)."""


class RemoteStore:
    """The connected server's metadata store (``client``: an :class:`~aiflow_notebook.events.EventClient`)."""

    def __init__(self, client: Any):
        self.client = client

    @property
    def url(self) -> str:
        return f"aiflow server at {self.client.url}"

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Run store method ``method`` on the server; raises what the server's store raised."""
        result, data = self.client.call(STORE_METHOD_PREFIX + method, {"args": encode(list(args)),
                                                                       "kwargs": encode(kwargs)})
        if isinstance(result, dict) and "error" in result:
            raise error_from_wire(result["error"])
        if isinstance(result, dict) and result.get("bytes"):
            return data
        return decode(result.get("value") if isinstance(result, dict) else None)

    def __getattr__(self, name: str) -> Any:
        if name in REMOTE_METHODS:
            return lambda *args, **kwargs: self.call(name, *args, **kwargs)
        if not name.startswith("_") and any(callable(getattr(part, name, None)) for part in _STORE_PARTS):
            raise RemoteUnsupportedError(
                f"{name} is not available while connected to the aiflow server at {self.client.url}: the server's "
                "scheduler records runs itself. Call it on the server, or af.disconnect() to use the local store")
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def close(self) -> None:
        """Nothing to release: the connection belongs to ``af.connect`` (``af.disconnect()`` closes it)."""

    def __repr__(self) -> str:
        return f"RemoteStore({self.client.url!r})"


# --- records on the wire -----------------------------------------------------------------------------------


def encode(value: Any) -> Any:
    """``value`` as JSON-ready data: records, datetimes and stages tagged so that :func:`decode` rebuilds them."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        if type(value).__name__ not in _RECORDS:
            return getattr(value, "id", None) if hasattr(value, "id") else str(value)
        return {"$record": type(value).__name__,
                "fields": {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}}
    if isinstance(value, datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [encode(v) for v in value]
    return value


def decode(value: Any) -> Any:
    """The inverse of :func:`encode` (unknown record names are refused)."""
    if isinstance(value, list):
        return [decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "$datetime" in value and len(value) == 1:
        return datetime.fromisoformat(value["$datetime"])
    if "$record" in value and "fields" in value and len(value) == 2:
        cls = _RECORDS.get(value["$record"])
        if cls is None:
            raise AIFlowError(f"the server sent an unknown kind of record {value['$record']!r}")
        fields = {k: decode(v) for k, v in value["fields"].items()}
        if cls is ModelVersion:
            fields["stage"] = Stage(fields["stage"])
        if cls is LineageGraph:
            fields["edges"] = [tuple(edge) for edge in fields["edges"]]
        return cls(**fields)
    return {k: decode(v) for k, v in value.items()}


def error_to_wire(exc: BaseException) -> dict[str, str]:
    return {"type": type(exc).__name__, "message": str(exc)}


def error_from_wire(error: Any) -> AIFlowError:
    """The store error the server reported, as its own class (``AIFlowError`` for any other kind)."""
    if not isinstance(error, dict):
        return AIFlowError(f"the aiflow server failed: {error!r}")
    cls = getattr(_errors, str(error.get("type")), None)
    if not (isinstance(cls, type) and issubclass(cls, AIFlowError)):
        cls = AIFlowError
    return cls(str(error.get("message")))
