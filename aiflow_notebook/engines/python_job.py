"""The python engine: run the job's nodes in this process, in order (the SDK's job runtime).

On top of the SDK's local context it adds what a scheduled job needs: datasets written by Flink (a
directory of part files) can be read, a ``train`` node's returned model is saved and registered as a new
model version (stage GENERATED, lineage to this job run), and ``predict`` without a function applies a
registered model version (chosen, logged and recorded as lineage by ``model_io.serving_predictor``).
"""

from __future__ import annotations

import base64
from typing import Any

from aiflow_notebook.engines.model_io import save_model, serving_predictor, split_trained
from aiflow_notebook.sdk.graph import DatasetSpec
from aiflow_notebook.sdk.job_runtime import LocalContext, NodeContext, run_job_payload
from aiflow_notebook.storage.part_files import local_path, read_rows


class EngineContext(LocalContext):
    def __init__(self, spec: dict[str, Any] | None = None):
        super().__init__()
        self.spec = spec or {}
        self.trigger = self.spec.get("trigger")

    def read_dataset(self, dataset: DatasetSpec) -> Any:
        if dataset.name not in self.datasets and dataset.uri:
            if local_path(dataset.uri).is_dir():  # written by Flink: part files, typed by the schema if any
                return read_rows(dataset.uri, dataset.schema)
        return super().read_dataset(dataset)

    def run_builtin(self, node: NodeContext, inputs: list[Any]) -> Any:
        if node.kind == "predict" and node.model:
            predictor = serving_predictor(node.model, node.model_version, node.model_stage, self.spec, node.node,
                                          with_version=bool(node.properties.get("with_version")))
            return [predictor(row) for row in inputs[0]]
        return super().run_builtin(node, inputs)

    def run_model_step(self, node: NodeContext, fn: Any, inputs: list[Any]) -> Any:
        """``evaluate`` and ``model_validate`` of a model: see ``model_gate``."""
        from aiflow_notebook.engines.model_gate import evaluate_version, validate_version

        if node.kind == "evaluate":
            return evaluate_version(node, fn, inputs)
        return validate_version(node, fn, inputs)


def run_job(spec: dict[str, Any]) -> None:
    payload = base64.b64decode(spec["job"]["payload"])
    results = run_job_payload(payload, EngineContext(spec))
    for node in spec["job"]["nodes"]:
        if node["kind"] == "train" and node.get("model") and results.get(node["name"]) is not None:
            from aiflow_notebook.meta import default_store  # only training jobs pay for the metadata layer

            store = default_store()
            store.register_model(node["model"])
            model, metrics = split_trained(results[node["name"]])
            version = store.register_model_version(node["model"], uri=save_model(model, node["model"]),
                                                   metrics=metrics, job_run=spec["job_run_id"])
            print(f"[aiflow] registered model {node['model']} version {version.version}", flush=True)
