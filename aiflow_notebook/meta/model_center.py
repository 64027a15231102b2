"""The model center: models, their numbered versions and each version's lifecycle stage.

Mixed into :class:`~aiflow_notebook.meta.store.MetadataStore`. Version numbers are 1, 2, 3... per model,
unique and gap-free even with concurrent writers: the next number is computed inside the same write
transaction that inserts it (SQLite: under ``BEGIN IMMEDIATE``; PostgreSQL: with the model row locked).
Every stage change is published as ``MODEL_<STAGE>`` (key = model name, value = the version as JSON)
after it is committed.
"""

from __future__ import annotations

import json
import math
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from aiflow_notebook.core.vocabulary import DEFAULT_NAMESPACE
from aiflow_notebook.meta import orm
from aiflow_notebook.meta.errors import (
    InvalidStageError,
    MetadataError,
    NotFoundError,
    StageTransitionError,
    UnknownModelError,
    UnknownModelVersionError,
)
from aiflow_notebook.meta.models import ALLOWED_TRANSITIONS, Model, ModelVersion, Stage, model_event_type

MODEL_NAMESPACE = DEFAULT_NAMESPACE


class ModelCenter:
    """Model registry methods of the metadata store (needs ``self._db`` and ``self.publisher``)."""

    def register_model(self, name: str, description: str | None = None) -> Model:
        """Register a model by name; registering an existing name returns it unchanged."""
        _check_name(name, "model")

        def work(session: Session) -> orm.Model:
            row = session.scalar(select(orm.Model).where(orm.Model.name == name))
            if row is None:
                row = orm.Model(name=name, description=description)
                session.add(row)
                session.flush()
            return row

        return _model(self._db.transaction(work))

    def get_model(self, name: str) -> Model:
        with self._db.reading() as session:
            return _model(_model_row(session, name))

    def list_models(self) -> list[Model]:
        with self._db.reading() as session:
            return [_model(row) for row in session.scalars(select(orm.Model).order_by(orm.Model.name))]

    def register_model_version(
        self,
        model: str | Model,
        uri: str,
        metrics: dict[str, Any] | None = None,
        job_run: int | Any | None = None,
    ) -> ModelVersion:
        """Add the next version of ``model`` (stage GENERATED), linked to the job run that made it."""
        name = model.name if isinstance(model, Model) else model
        if not isinstance(uri, str) or not uri:
            raise MetadataError(f"model version of {name!r} needs a non-empty uri (where the model is stored)")
        metrics = _check_metrics(metrics)
        job_run_id = getattr(job_run, "id", job_run)

        def work(session: Session) -> tuple[orm.ModelVersion, str]:
            model_row = _model_row(session, name, lock=True)
            if job_run_id is not None and session.get(orm.JobRun, job_run_id) is None:
                raise NotFoundError(f"job run {job_run_id} does not exist; pass the id that start_job_run returned")
            latest = session.scalar(
                select(func.max(orm.ModelVersion.version)).where(orm.ModelVersion.model_id == model_row.id)
            )
            row = orm.ModelVersion(
                model_id=model_row.id,
                version=(latest or 0) + 1,
                uri=uri,
                metrics=metrics,
                stage=Stage.GENERATED.value,
                job_run_id=job_run_id,
            )
            session.add(row)
            session.flush()
            for key, value in (metrics or {}).items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    session.add(orm.Metric(name=key, value=float(value), job_run_id=job_run_id, model_version_id=row.id))
            if job_run_id is not None:
                session.add(orm.LineageEdge(src_kind="job_run", src_id=job_run_id, dst_kind="model_version",
                                            dst_id=row.id, relation="produced"))
            return row, model_row.name

        row, model_name = self._db.transaction(work)
        version = _version(row, model_name)
        self._publish(version)
        return version

    def update_model_version(self, model: str, version: int, stage: Stage | str | None = None, *,
                             metrics: dict[str, Any] | None = None) -> ModelVersion:
        """Move a version to ``stage`` if the lifecycle allows it (the same stage again is a no-op), and/or
        merge ``metrics`` into its metrics (an evaluation's AUC, a validation's verdict), in one transaction.
        A stage change publishes ``MODEL_<STAGE>``; metrics alone publish nothing."""
        target = None if stage is None else _stage(stage)
        metrics = _check_metrics(metrics)
        if target is None and metrics is None:
            raise MetadataError(f"update_model_version({model!r}, {version}): give a stage, metrics or both")

        def work(session: Session) -> tuple[orm.ModelVersion, bool]:
            row = _version_row(session, model, version, lock=True)
            current = Stage(row.stage)
            if target is not None and current != target and target not in ALLOWED_TRANSITIONS[current]:
                allowed = ", ".join(sorted(ALLOWED_TRANSITIONS[current])) or "none: it is final"
                raise StageTransitionError(
                    f"model {model!r} version {version} cannot go from {current} to {target} "
                    f"(allowed from {current}: {allowed})"
                )
            if metrics:
                row.metrics = {**(row.metrics or {}), **metrics}
                for key, value in metrics.items():
                    if isinstance(value, int | float) and not isinstance(value, bool):
                        session.add(orm.Metric(name=key, value=float(value), job_run_id=row.job_run_id,
                                               model_version_id=row.id))
            changed = target is not None and current != target
            if changed:
                row.stage = target.value
            session.flush()
            return row, changed

        row, changed = self._db.transaction(work)
        result = _version(row, model)
        if changed:
            self._publish(result)
        return result

    def get_model_version(self, model: str, version: int) -> ModelVersion:
        with self._db.reading() as session:
            return _version(_version_row(session, model, version), model)

    def get_latest_model_version(self, model: str, stage: Stage | str | None = None) -> ModelVersion | None:
        """The highest version of ``model`` in ``stage`` (any stage but DELETED when None), or None."""
        with self._db.reading() as session:
            model_row = _model_row(session, model)
            query = select(orm.ModelVersion).where(orm.ModelVersion.model_id == model_row.id)
            if stage is None:
                query = query.where(orm.ModelVersion.stage != Stage.DELETED.value)
            else:
                query = query.where(orm.ModelVersion.stage == _stage(stage).value)
            row = session.scalar(query.order_by(orm.ModelVersion.version.desc()).limit(1))
            return None if row is None else _version(row, model_row.name)

    def list_model_versions(self, model: str, stage: Stage | str | None = None) -> list[ModelVersion]:
        """All versions of ``model`` (oldest first), optionally only those in ``stage``."""
        with self._db.reading() as session:
            model_row = _model_row(session, model)
            query = select(orm.ModelVersion).where(orm.ModelVersion.model_id == model_row.id)
            if stage is not None:
                query = query.where(orm.ModelVersion.stage == _stage(stage).value)
            rows = session.scalars(query.order_by(orm.ModelVersion.version))
            return [_version(row, model_row.name) for row in rows]

    def _publish(self, version: ModelVersion) -> None:
        self.publisher.publish(
            key=version.model,
            value=version.to_json(),
            event_type=model_event_type(version.stage),
            namespace=MODEL_NAMESPACE,
            sender="model_center",
        )


def _check_name(name: Any, what: str) -> None:
    if not isinstance(name, str) or not name.strip():
        raise MetadataError(f"a {what} name must be a non-empty string, got {name!r}")


def _check_metrics(metrics: Any) -> dict[str, Any] | None:
    if metrics is None:
        return None
    if not isinstance(metrics, dict):
        raise MetadataError(f"metrics must be a dict of name -> value, got {type(metrics).__name__}")
    try:
        json.dumps(metrics, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise MetadataError(f"metrics must be JSON-serialisable finite values: {exc}") from None
    for key, value in metrics.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise MetadataError(f"metric {key!r} is {value}; store finite numbers only")
    return dict(metrics)


def _stage(stage: Stage | str) -> Stage:
    try:
        return Stage(str(stage).upper())
    except ValueError:
        valid = ", ".join(s.value for s in Stage)
        raise InvalidStageError(f"unknown stage {stage!r}; valid stages: {valid}") from None


def _model_row(session: Session, name: str, lock: bool = False) -> orm.Model:
    query = select(orm.Model).where(orm.Model.name == name)
    if lock:
        query = query.with_for_update()  # PostgreSQL: serialise version numbering per model
    row = session.scalar(query)
    if row is None:
        raise UnknownModelError(f"model {name!r} is not registered; call register_model({name!r}) first")
    return row


def _version_row(session: Session, model: str, version: int, lock: bool = False) -> orm.ModelVersion:
    model_row = _model_row(session, model)
    query = select(orm.ModelVersion).where(
        orm.ModelVersion.model_id == model_row.id, orm.ModelVersion.version == version
    )
    if lock:
        query = query.with_for_update()
    row = session.scalar(query)
    if row is None:
        raise UnknownModelVersionError(f"model {model!r} has no version {version!r}")
    return row


def _model(row: orm.Model) -> Model:
    return Model(name=row.name, description=row.description, created_at=row.created_at, id=row.id)


def _version(row: orm.ModelVersion, model_name: str) -> ModelVersion:
    return ModelVersion(
        model=model_name,
        version=row.version,
        uri=row.uri,
        stage=Stage(row.stage),
        metrics=row.metrics,
        job_run_id=row.job_run_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
        id=row.id,
    )
