"""Saving trained models and loading them back for prediction.

A ``train`` node's function returns the model object; the engine pickles it (cloudpickle, so models
defined in notebook cells work) under ``$AIFLOW_HOME/models/<model>/`` and registers it as a new model
version. ``predict`` without a function serves one version, chosen when the job starts (see
:func:`choose_model_version`: a pinned version, the one a triggering ``MODEL_*`` event names, the newest in
a stage, else the newest validated/deployed one), and applies it: ``model.predict(x)`` when the object has
that method, else ``model(x)``. The choice is written to the job log and recorded as lineage (model
version --served_by--> job run). A ``torch.nn.Module`` trained
on the pytorch engine is saved as a :class:`TorchModel`, whose ``predict`` runs it on a row of numbers.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import cloudpickle

from aiflow_notebook.core.config import aiflow_home
from aiflow_notebook.core.errors import AIFlowError
from aiflow_notebook.core.vocabulary import Stage, model_event_type


def save_model(obj: Any, model: str, home: str | Path | None = None) -> str:
    """Pickle ``obj`` into the model directory of ``home`` (default: ``aiflow_home()``); returns its ``file://``
    URI (``af.save_model``).

    Register it with ``af.register_model_version(model, uri=af.save_model(obj, model))``."""
    path = Path(home or aiflow_home()) / "models" / model / f"{uuid.uuid4().hex}.pkl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cloudpickle.dumps(obj))
    return path.as_uri()


def load_model(uri: str | Any) -> Any:
    """The model object at ``uri``, or of a model version (anything with ``.uri``) (``af.load_model``); one
    uploaded into a blob store (``af.save_model`` while connected) is read through that store, so its
    content is checked against its hash first."""
    uri = getattr(uri, "uri", uri)
    parsed = urlparse(uri)
    path = Path(parsed.path if parsed.scheme == "file" else uri)
    try:
        if path.parent.parent.name == "blobs" and path.parent.name == path.name[:2]:
            from aiflow_notebook.storage.blobs import LocalBlobStore

            return cloudpickle.loads(LocalBlobStore(path.parent.parent).get(path.as_uri()))
        return cloudpickle.loads(path.read_bytes())
    except FileNotFoundError:
        raise AIFlowError(f"model file {uri} does not exist") from None


def split_trained(result: Any) -> tuple[Any, dict[str, Any] | None]:
    """A trainer returns the model, or ``(model, metrics)`` with a dict of training metrics (loss, rows...)
    that are registered with the version."""
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], dict):
        return result[0], result[1]
    return result, None


SERVABLE_STAGES = (Stage.VALIDATED, Stage.DEPLOYED)  # what a predict without version=/stage= prefers
_NOT_SERVED_ON = (model_event_type(Stage.DEPRECATED), model_event_type(Stage.DELETED))  # a version to stop serving


class ModelSelectionError(AIFlowError):
    """No version of the model matches what a predict node asks for."""


def choose_model_version(store: Any, model: str, version: int | str | None = None, stage: str | None = None,
                         trigger: dict[str, Any] | None = None) -> tuple[Any, str]:
    """The version of ``model`` a predict node serves, and why (a sentence for the job log).

    In order: ``version`` (exactly it; in ``stage`` too when both are given); the version named by
    ``trigger``, the ``MODEL_*`` event that started this job run (if it is about ``model``, is not a
    DEPRECATED/DELETED event, and the version is in ``stage`` when one is given); the newest version in
    ``stage``; else the newest VALIDATED or DEPLOYED version, else the newest GENERATED one. Never a
    DELETED version. Raises :class:`ModelSelectionError` naming the model and the versions it has.
    """
    from aiflow_notebook.meta.errors import UnknownModelError

    try:
        versions = store.list_model_versions(model)
    except UnknownModelError:
        raise ModelSelectionError(f"model {model!r} is not registered, so there is no version to predict with; "
                                  f"train one first (or register_model_version)") from None
    by_number = {v.version: v for v in versions}
    wanted = None if stage is None else str(stage).upper()

    def exists() -> str:
        return ", ".join(f"v{v.version} {v.stage}" for v in versions) or "none"

    if version is not None:
        found = by_number.get(int(version))
        if found is None or found.stage == Stage.DELETED:
            raise ModelSelectionError(f"model {model!r} has no version {version} to predict with "
                                      f"(versions: {exists()})")
        if wanted is not None and found.stage != wanted:
            raise ModelSelectionError(f"model {model!r} version {version} is {found.stage}, not {wanted} "
                                      f"(versions: {exists()})")
        return found, f"version={version} was asked for"
    note = ""
    named = triggering_version(trigger, model)
    if named is not None:
        found = by_number.get(named)
        if found is not None and found.stage != Stage.DELETED and wanted in (None, found.stage):
            return found, (f"the job run was started by {trigger['event_type']} of version {named} "
                           f"(event {trigger.get('version')})")
        now = "missing" if found is None else found.stage
        note = f"; the triggering {trigger['event_type']} names version {named}, which is {now}"
    if wanted is not None:
        candidates = [v for v in versions if v.stage == wanted]
        if not candidates:
            raise ModelSelectionError(f"model {model!r} has no {wanted} version to predict with "
                                      f"(versions: {exists()}){note}")
        return candidates[-1], f"newest {wanted} version (stage={wanted} was asked for){note}"
    servable = [v for v in versions if v.stage in SERVABLE_STAGES]
    if servable:
        return servable[-1], f"newest VALIDATED or DEPLOYED version{note}"
    generated = [v for v in versions if v.stage == Stage.GENERATED]
    if generated:
        return generated[-1], (f"NOTE: no version is VALIDATED or DEPLOYED, so the newest GENERATED one "
                               f"(not yet validated) is served{note}")
    raise ModelSelectionError(f"model {model!r} has no version to predict with: none is VALIDATED, DEPLOYED or "
                              f"GENERATED (versions: {exists()}){note}")


def triggering_version(trigger: dict[str, Any] | None, model: str) -> int | None:
    """The version a ``MODEL_*`` event about ``model`` names (its value is the version as JSON), else None."""
    if not trigger or trigger.get("key") != model:
        return None
    event_type = str(trigger.get("event_type") or "")
    if not event_type.startswith("MODEL_") or event_type in _NOT_SERVED_ON:
        return None
    value = trigger.get("value")
    try:
        data = json.loads(value) if isinstance(value, str) else value
    except ValueError:
        return None
    number = data.get("version") if isinstance(data, dict) else data
    if isinstance(number, bool):
        return None
    try:
        return int(number)
    except (TypeError, ValueError):
        return None


def serving_predictor(model: str, version: int | str | None, stage: str | None, spec: dict[str, Any],
                      node: str, with_version: bool = False) -> Predictor:
    """In the job process, once per predict node: choose the version (see :func:`choose_model_version`),
    say which in the job log, record that this job run consumed it, and return a predictor pinned to it."""
    from aiflow_notebook.meta import default_store

    store = default_store()
    chosen, why = choose_model_version(store, model, version, stage, spec.get("trigger"))
    swap = None
    if spec.get("job", {}).get("streaming") and spec.get("run_id") is not None:  # SWAP rules may switch it
        from aiflow_notebook.engines.model_swap import swap_start
        from aiflow_notebook.events import EventClient

        with EventClient.from_environment() as client:
            swap, swapped, swap_why = swap_start(client, spec, model, spec.get("trigger"))
        if swapped is not None and swapped != chosen.version:
            chosen, why = store.get_model_version(model, swapped), swap_why
    print(f"[aiflow] {node}: serving model {model} version {chosen.version} ({chosen.stage}): {why}", flush=True)
    if spec.get("job_run_id") is not None:
        store.record_model_consumer(model, chosen.version, spec["job_run_id"])
    return Predictor(model, chosen.version, uri=chosen.uri, with_version=with_version, swap=swap)


class Predictor:
    """A picklable row function: loads the model version on first use (in the worker), then applies it.

    Engines pass the ``uri`` of the version chosen by :func:`serving_predictor`; without one, the version
    is chosen on first use (a pinned ``version``, else by :func:`choose_model_version`'s default).
    """

    def __init__(self, model: str, version: int | str | None = None, uri: str | None = None,
                 with_version: bool = False, swap: Any = None):
        self.model, self.version, self.uri, self.with_version = model, version, uri, with_version
        self.swap = swap  # a model_swap.SwapPlan: follow SWAP requests (streaming scoring)
        self._loaded = None
        self._slot = None

    def __getstate__(self) -> dict:
        return {"model": self.model, "version": self.version, "uri": self.uri, "with_version": self.with_version,
                "swap": self.swap, "_loaded": None, "_slot": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update({"uri": None, "with_version": False, "swap": None, "_slot": None, **state})

    def follow_swaps(self, instance: int, instances: int) -> None:
        """In a scoring instance (``instance`` of ``instances``): switch versions as SWAP rules ask
        (``model_swap.ModelSlot``); nothing without a swap plan."""
        if self.swap is not None and self._slot is None:
            from aiflow_notebook.engines.model_swap import ModelSlot

            self._slot = ModelSlot(self.swap, self.load(), int(self.version), instance, instances, load_model).start()

    def stop_following(self) -> None:
        if self._slot is not None:
            self._slot.stop()
            self._slot = None

    def current(self) -> tuple[Any, int | str | None]:
        """The model object and its version number that score now."""
        if self._slot is not None:
            return self._slot.current
        return self.load(), self.version

    def load(self) -> Any:
        if self._loaded is None:
            if self.uri is None:
                from aiflow_notebook.meta import default_store

                self.uri = choose_model_version(default_store(), self.model, self.version)[0].uri
            self._loaded = load_model(self.uri)
        return self._loaded

    def __call__(self, row: Any) -> Any:
        model, version = self.current()
        output = model.predict(row) if hasattr(model, "predict") else model(row)
        return self._versioned(output, version)

    def predict_rows(self, rows: list, columns: list[str] | None = None) -> list:
        """The output of each row (None: dropped). A model with ``predict_batch(frame)`` is called once,
        with a ``pandas.DataFrame`` of the rows (columns named by the dataset's schema when it has one);
        it returns one output row per input row (a DataFrame, an array or a list). Others: ``predict(row)``
        per row."""
        if not rows:
            return []
        model, version = self.current()  # one version for the whole batch
        batch = getattr(model, "predict_batch", None)
        if batch is None:
            outputs = [model.predict(row) if hasattr(model, "predict") else model(row) for row in rows]
        else:
            outputs = _output_rows(batch(_frame(rows, columns)))
        if len(outputs) != len(rows):
            raise ModelOutputError(f"model {self.model} version {version}: predict_batch returned "
                                   f"{len(outputs)} rows for {len(rows)} (one output row per input row, or "
                                   "None for a row to drop)")
        return [None if out is None else self._versioned(out, version) for out in outputs]

    def _versioned(self, output: Any, version: Any) -> Any:
        if not self.with_version:
            return output
        return [*output, int(version)] if isinstance(output, list | tuple) else [output, int(version)]


class ModelOutputError(AIFlowError):
    """A model's batch method returned something that is not one output row per input row."""


def _frame(rows: list, columns: list[str] | None) -> Any:
    import pandas as pd

    if columns is not None and rows and isinstance(rows[0], list | tuple) and len(rows[0]) == len(columns):
        return pd.DataFrame(rows, columns=columns)
    return pd.DataFrame(rows) if rows and isinstance(rows[0], list | tuple | dict) else pd.DataFrame({0: rows})


def frame_rows(frame: Any) -> list[list]:
    """A DataFrame's rows as lists of Python values (ints stay ints beside float columns)."""
    return [list(row) for row in zip(*(frame[c].tolist() for c in frame.columns), strict=True)]


def _output_rows(output: Any) -> list:
    """A batch method's output as a list of rows (lists, or scalars for one-value outputs)."""
    if hasattr(output, "columns"):  # a DataFrame: Python values, each column's own type
        return frame_rows(output)
    if hasattr(output, "tolist"):  # a numpy array or a tensor
        return output.tolist()
    return list(output)


class TorchModel:
    """A trained ``torch.nn.Module`` as a model version: ``predict(row)`` returns the row with the
    module's outputs appended (``[*row, *outputs]``), the row's values being the module's input features.

    The pytorch engine saves a module a trainer returns in this wrapper (the module itself is ``.module``);
    return your own object with a ``predict(row)`` method for anything else (feature selection, labels...).
    """

    def __init__(self, module: Any):
        self.module = module

    def predict(self, row: Any) -> list:
        import torch

        values = list(row) if isinstance(row, list | tuple) else [row]
        with torch.no_grad():
            self.module.eval()
            output = self.module(torch.tensor([[float(v) for v in values]], dtype=torch.float32))[0]
        return [*values, *output.reshape(-1).tolist()]

    def predict_batch(self, rows: Any) -> list:
        """The same for a batch (a DataFrame of feature columns): one forward pass for all of them."""
        import numpy as np
        import torch

        values = np.asarray(rows, dtype=np.float32)
        with torch.no_grad():
            self.module.eval()
            outputs = self.module(torch.from_numpy(values)).reshape(len(values), -1).tolist()
        given = frame_rows(rows) if hasattr(rows, "columns") else [list(r) for r in rows]
        return [[*row, *out] for row, out in zip(given, outputs, strict=True)]

    def __call__(self, row: Any) -> list:
        return self.predict(row)
