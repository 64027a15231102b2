"""Metadata store, model center and lineage (DESIGN §4.3)."""

from aiflow_notebook.meta.default import default_store, set_default_store
from aiflow_notebook.meta.errors import (
    DatabaseUnavailableError,
    DatabaseURLError,
    InvalidStageError,
    MetadataError,
    NotFoundError,
    StageTransitionError,
    UnknownModelError,
    UnknownModelVersionError,
)
from aiflow_notebook.meta.lineage import LineageGraph, LineageNode
from aiflow_notebook.meta.models import (
    ALLOWED_TRANSITIONS,
    Dataset,
    JobRun,
    Model,
    ModelVersion,
    Stage,
    WorkflowRunRecord,
)
from aiflow_notebook.meta.publisher import EventPublisher, PublishedEvent, RecordingPublisher
from aiflow_notebook.meta.store import MetadataStore

__all__ = [
    "ALLOWED_TRANSITIONS",
    "DatabaseURLError",
    "DatabaseUnavailableError",
    "Dataset",
    "EventPublisher",
    "InvalidStageError",
    "JobRun",
    "LineageGraph",
    "LineageNode",
    "MetadataError",
    "MetadataStore",
    "Model",
    "ModelVersion",
    "NotFoundError",
    "PublishedEvent",
    "RecordingPublisher",
    "Stage",
    "StageTransitionError",
    "UnknownModelError",
    "UnknownModelVersionError",
    "WorkflowRunRecord",
    "default_store",
    "set_default_store",
]
