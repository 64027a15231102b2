"""Saving trained models and loading them back for prediction.

A ``train`` node's function returns the model object; the engine pickles it (cloudpickle, so models
defined in notebook cells work) under ``$AIFLOW_HOME/models/<model>/`` and registers it as a new model
version. ``predict`` without a function loads a version (the latest, or a pinned one) and applies it:
``model.predict(x)`` when the object has that method, else ``model(x)``. A ``torch.nn.Module`` trained
on the pytorch engine is saved as a :class:`TorchModel`, whose ``predict`` runs it on a row of numbers.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import cloudpickle

from aiflow_notebook.config import aiflow_home
from aiflow_notebook.errors import AIFlowError


def save_model(obj: Any, model: str) -> str:
    """Pickle ``obj`` into the model directory; returns its ``file://`` URI."""
    path = aiflow_home() / "models" / model / f"{uuid.uuid4().hex}.pkl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cloudpickle.dumps(obj))
    return path.as_uri()


def load_model(uri: str) -> Any:
    parsed = urlparse(uri)
    path = Path(parsed.path if parsed.scheme == "file" else uri)
    try:
        return cloudpickle.loads(path.read_bytes())
    except FileNotFoundError:
        raise AIFlowError(f"model file {uri} does not exist") from None


class Predictor:
    """A picklable row function: loads the model version on first use (in the worker), then applies it."""

    def __init__(self, model: str, version: int | str | None = None):
        self.model, self.version = model, version
        self._loaded = None

    def __getstate__(self) -> dict:
        return {"model": self.model, "version": self.version, "_loaded": None}

    def load(self) -> Any:
        if self._loaded is None:
            from aiflow_notebook.meta import default_store

            store = default_store()
            if self.version is None:
                found = store.get_latest_model_version(self.model)
                if found is None:
                    raise AIFlowError(f"model {self.model!r} has no version to predict with; train one first")
            else:
                found = store.get_model_version(self.model, int(self.version))
            self._loaded = load_model(found.uri)
        return self._loaded

    def __call__(self, row: Any) -> Any:
        model = self.load()
        return model.predict(row) if hasattr(model, "predict") else model(row)


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

    def __call__(self, row: Any) -> list:
        return self.predict(row)
