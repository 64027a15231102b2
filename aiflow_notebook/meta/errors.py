"""Errors of the metadata store and model center (all ``AIFlowError``)."""

from __future__ import annotations

from aiflow_notebook.core.errors import AIFlowError
from aiflow_notebook.storage.database import DatabaseError, DatabaseUnavailableError, DatabaseURLError

__all__ = ["DatabaseError", "DatabaseURLError", "DatabaseUnavailableError", "InvalidStageError", "MetadataError",
           "NotFoundError", "StageTransitionError", "UnknownModelError", "UnknownModelVersionError"]


class MetadataError(AIFlowError):
    """Something about the metadata store or the model center went wrong."""


class NotFoundError(MetadataError, LookupError):
    """A named thing (model, version, dataset, job run) does not exist."""


class UnknownModelError(NotFoundError):
    pass


class UnknownModelVersionError(NotFoundError):
    pass


class InvalidStageError(MetadataError, ValueError):
    """A stage name that is not one of GENERATED, VALIDATED, DEPLOYED, DEPRECATED, DELETED."""


class StageTransitionError(MetadataError):
    """A stage change the lifecycle forbids (for example anything out of DELETED)."""
