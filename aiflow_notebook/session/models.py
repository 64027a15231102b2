"""``af.register_model(...)`` and friends: the model center on the default metadata store.

The default store is ``$AIFLOW_META_URL``, else SQLite under ``$AIFLOW_HOME`` (default ``~/.aiflow``).
For another database, create a :class:`~aiflow_notebook.meta.MetadataStore` and call its methods.
"""

from __future__ import annotations

from typing import Any

from aiflow_notebook.meta import LineageGraph, Model, ModelVersion, Stage, default_store


def register_model(name: str, description: str | None = None) -> Model:
    return default_store().register_model(name, description)


def register_model_version(model: str, uri: str, metrics: dict[str, Any] | None = None,
                           job_run: int | None = None) -> ModelVersion:
    return default_store().register_model_version(model, uri, metrics=metrics, job_run=job_run)


def update_model_version(model: str, version: int, stage: Stage | str | None = None, *,
                         metrics: dict[str, Any] | None = None) -> ModelVersion:
    return default_store().update_model_version(model, version, stage, metrics=metrics)


def get_model_version(model: str, version: int) -> ModelVersion:
    return default_store().get_model_version(model, version)


def get_latest_model_version(model: str, stage: Stage | str | None = None) -> ModelVersion | None:
    return default_store().get_latest_model_version(model, stage)


def list_model_versions(model: str, stage: Stage | str | None = None) -> list[ModelVersion]:
    return default_store().list_model_versions(model, stage)


def lineage(model: str, version: int | None = None) -> LineageGraph:
    return default_store().lineage(model, version)
