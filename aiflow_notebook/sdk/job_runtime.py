"""Run one job's nodes in this process, from its payload: what the python engine does with a job.

Nodes run in the compiled (topological) order; each receives the outputs of the nodes it reads:

- ``read_dataset``: ``fn(dataset)`` when the node has a function, else ``context.read_dataset(dataset)``;
- ``write_dataset``: ``fn(data, dataset)``, else ``context.write_dataset(dataset, data)``;
- every other kind: ``fn(*inputs)``; a node without a function asks ``context.run_builtin``.

A user function that declares a parameter named ``context`` also gets a :class:`NodeContext` (its job,
node, dataset, model and properties, the run context, and ``trigger``: the event whose rule started this
job run, as a dict with key, value, event_type, namespace, sender, version and context, or None). :class:`LocalContext`, the default, keeps
datasets written in this run in memory and reads/writes a few file formats by the uri's suffix; engines
bring their own context.
"""

from __future__ import annotations

import csv
import inspect
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from aiflow_notebook.core.errors import AIFlowError
from aiflow_notebook.sdk.capture import load_payload
from aiflow_notebook.sdk.graph import DatasetSpec

MODEL_STEPS = ("evaluate", "model_validate")


class JobRunError(AIFlowError):
    """A node of a job could not run (a missing built-in, a wrong number of outputs...)."""


class RunContext(Protocol):
    def read_dataset(self, dataset: DatasetSpec) -> Any: ...

    def write_dataset(self, dataset: DatasetSpec, data: Any) -> None: ...

    def run_builtin(self, node: NodeContext, inputs: list[Any]) -> Any: ...


@dataclass
class NodeContext:
    """What a user function that asks for ``context`` gets: where it runs and what it works on."""

    job: str
    node: str
    kind: str
    dataset: DatasetSpec | None
    model: str | None
    model_version: str | None
    properties: dict[str, Any]
    runtime: Any
    model_stage: str | None = None
    trigger: dict[str, Any] | None = None  # the event whose rule started this job run (key, value, type...)


def run_job_payload(payload: bytes, context: RunContext | None = None) -> dict[str, Any]:
    """Run every node of the job in ``payload``; returns each node's return value by node name."""
    data = load_payload(payload)
    context = context if context is not None else LocalContext()
    callables = data["callables"]
    results: dict[str, Any] = {}
    for node in data["nodes"]:
        inputs = [_output(results[source], index, data["nodes"], source) for source, index in node["inputs"]]
        results[node["name"]] = _run_node(data["job"], node, callables.get(node["name"]), inputs, context)
    return results


@dataclass
class LocalContext:
    """Datasets in memory (by name) and on local files: ``.csv`` (rows as lists of strings), ``.json``,
    ``.jsonl``, ``.npy`` and ``.pkl``; uris are paths or ``file://`` URLs."""

    datasets: dict[str, Any] = field(default_factory=dict)

    def read_dataset(self, dataset: DatasetSpec) -> Any:
        if dataset.name in self.datasets:
            return self.datasets[dataset.name]
        if not dataset.uri:
            raise JobRunError(f"dataset {dataset.name!r} has no uri and was not written in this run")
        path = _path(dataset.uri)
        suffix = path.suffix.lower()
        if suffix == ".csv":
            with path.open(newline="") as f:
                return list(csv.reader(f))
        if suffix == ".json":
            return json.loads(path.read_text())
        if suffix == ".jsonl":
            return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if suffix == ".npy":
            import numpy

            return numpy.load(path)
        if suffix in (".pkl", ".pickle"):
            with path.open("rb") as f:
                return pickle.load(f)
        raise JobRunError(f"dataset {dataset.name!r}: no built-in reader for {dataset.uri!r}; "
                          f"pass fn= to read_dataset")

    def write_dataset(self, dataset: DatasetSpec, data: Any) -> None:
        self.datasets[dataset.name] = data
        if not dataset.uri:
            return
        path = _path(dataset.uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        suffix = path.suffix.lower()
        if suffix == ".csv":
            with path.open("w", newline="") as f:
                csv.writer(f).writerows(data)
        elif suffix == ".json":
            path.write_text(json.dumps(data))
        elif suffix == ".jsonl":
            path.write_text("".join(json.dumps(row) + "\n" for row in data))
        elif suffix == ".npy":
            import numpy

            numpy.save(path, data)
        elif suffix in (".pkl", ".pickle"):
            with path.open("wb") as f:
                pickle.dump(data, f)
        else:
            raise JobRunError(f"dataset {dataset.name!r}: no built-in writer for {dataset.uri!r}; "
                              f"pass fn= to write_dataset")

    def run_builtin(self, node: NodeContext, inputs: list[Any]) -> Any:
        raise JobRunError(f"node {node.node!r} ({node.kind}) in job {node.job!r} has no function, and running "
                          f"in-process has no built-in {node.kind}: give it one (e.g. predictor=...), or run "
                          f"the job on an engine that provides it")


def _run_node(job: str, node: dict[str, Any], fn: Any, inputs: list[Any], context: RunContext) -> Any:
    spec = node.get("dataset")
    dataset = DatasetSpec(**spec) if spec else None
    node_ctx = NodeContext(job=job, node=node["name"], kind=node["kind"], dataset=dataset, model=node.get("model"),
                           model_version=node.get("model_version"), properties=dict(node.get("properties") or {}),
                           runtime=context, model_stage=node.get("model_stage"),
                           trigger=getattr(context, "trigger", None))
    kwargs = {"context": node_ctx} if fn is not None and _wants_context(fn) else {}
    kind = node["kind"]
    if kind == "read_dataset":
        return fn(dataset, **kwargs) if fn else context.read_dataset(dataset)
    if kind == "write_dataset":
        if fn:
            return fn(inputs[0], dataset, **kwargs)
        context.write_dataset(dataset, inputs[0])
        return None
    if kind in MODEL_STEPS and node_ctx.model and hasattr(context, "run_model_step"):
        return context.run_model_step(node_ctx, fn, inputs)  # an engine that gates model versions
    if fn is None:
        return context.run_builtin(node_ctx, inputs)
    if kind == "transform" and node_ctx.properties.get("group_by") is not None:
        return _grouped(fn, inputs, node_ctx.properties["group_by"], kwargs)
    return fn(*inputs, **kwargs)


def _grouped(fn: Any, inputs: list[Any], key: Any, kwargs: dict[str, Any]) -> list[Any]:
    """``transform(..., group_by=K)`` in-process: ``fn(rows)`` per key, the outputs concatenated."""
    groups: dict[Any, list[Any]] = {}
    for row in inputs[0]:
        groups.setdefault(row[key], []).append(row)
    return [out for rows in groups.values() for out in (fn(rows, **kwargs) or [])]


def _output(result: Any, index: int, nodes: list[dict[str, Any]], source: str) -> Any:
    output_num = next(n["output_num"] for n in nodes if n["name"] == source)
    if output_num == 1:
        return result
    if not isinstance(result, tuple | list) or len(result) != output_num:
        raise JobRunError(f"node {source!r} declares output_num={output_num} but returned "
                          f"{type(result).__name__}; return a tuple of {output_num} values")
    return result[index]


def _wants_context(fn: Any) -> bool:
    try:
        return "context" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _path(uri: str) -> Path:
    return Path(uri[len("file://"):] if uri.startswith("file://") else uri)


def report_progress(fraction: float) -> None:
    """Tell the run panels how far this job is (``0``..``1``): a ``JOB_PROGRESS`` event for this job run.

    Call it from a job's code; outside a scheduled job (no ``$AIFLOW_RUN_ID``) it does nothing."""
    import os

    if not os.environ.get("AIFLOW_RUN_ID") or not os.environ.get("AIFLOW_EVENT_URL"):
        return
    from aiflow_notebook.core.vocabulary import JOB_PROGRESS
    from aiflow_notebook.events import Event, EventClient

    with EventClient.from_environment() as client:
        client.send_event(Event(f"{os.environ['AIFLOW_WORKFLOW']}.{os.environ['AIFLOW_JOB']}",
                                str(min(1.0, max(0.0, float(fraction)))), JOB_PROGRESS,
                                context=json.dumps({"run": int(os.environ["AIFLOW_RUN_ID"]),
                                                    "job_run": int(os.environ.get("AIFLOW_JOB_RUN_ID") or 0)})))
