"""What the metadata store returns: plain frozen records, safe to keep after the session closes."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from aiflow_notebook.core.vocabulary import Stage, model_event_type

__all__ = ["ALLOWED_TRANSITIONS", "Dataset", "JobRun", "Model", "ModelVersion", "Stage", "WorkflowRunRecord",
           "model_event_type"]


# Which stage may follow which. Anything not listed is refused with StageTransitionError;
# nothing leaves DELETED. DEPRECATED -> DEPLOYED is a rollback.
ALLOWED_TRANSITIONS: dict[Stage, frozenset[Stage]] = {
    Stage.GENERATED: frozenset({Stage.VALIDATED, Stage.DEPLOYED, Stage.DEPRECATED, Stage.DELETED}),
    Stage.VALIDATED: frozenset({Stage.DEPLOYED, Stage.DEPRECATED, Stage.DELETED}),
    Stage.DEPLOYED: frozenset({Stage.DEPRECATED, Stage.DELETED}),
    Stage.DEPRECATED: frozenset({Stage.DEPLOYED, Stage.DELETED}),
    Stage.DELETED: frozenset(),
}


@dataclass(frozen=True)
class Model:
    name: str
    description: str | None
    created_at: datetime
    id: int = field(repr=False, compare=False)


@dataclass(frozen=True)
class ModelVersion:
    model: str
    version: int
    uri: str
    stage: Stage
    metrics: dict[str, Any] | None
    job_run_id: int | None
    created_at: datetime
    updated_at: datetime
    id: int = field(repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["stage"] = self.stage.value
        data["created_at"] = self.created_at.isoformat()
        data["updated_at"] = self.updated_at.isoformat()
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


@dataclass(frozen=True)
class Dataset:
    name: str
    uri: str | None
    schema: Any
    properties: dict[str, Any] | None
    id: int = field(repr=False, compare=False)


@dataclass(frozen=True)
class JobRun:
    id: int
    workflow: str
    job: str
    state: str
    attempt: int
    started_at: datetime | None
    ended_at: datetime | None
    log_uri: str | None
    error: str | None
    workflow_run_id: int | None
    savepoint: str | None = None  # the savepoint a stop left (streaming Flink jobs), for the next start


@dataclass(frozen=True)
class WorkflowRunRecord:
    """One run of a workflow as the store knows it (its jobs' runs: ``list_job_runs(run.id)``)."""

    id: int
    workflow: str
    project: str
    state: str
    created_at: datetime
    ended_at: datetime | None
    scheduler: str | None  # the scheduler that runs it (None: recorded without one)
    snapshot_id: int | None
    properties: dict[str, Any] | None
