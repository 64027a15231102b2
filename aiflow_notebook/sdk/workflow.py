"""The compiled workflow: what the scheduler runs, the metadata store snapshots and the notebook draws.

A :class:`Workflow` is immutable plain data: its jobs (engine, parallelism, platform, streaming flag,
properties, nodes in topological order with their datasets and models, and a cloudpickled payload of the
user functions) and its control edges. It has a stable :attr:`Workflow.content_hash` (same definition,
same hash, in any process) and round-trips through :meth:`Workflow.to_bytes` / :meth:`Workflow.from_bytes`,
a JSON document that can be read without unpickling anything; only :meth:`Job.load_callables` unpickles.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiflow_notebook.core.errors import WorkflowFormatError
from aiflow_notebook.sdk.control import ControlEdge
from aiflow_notebook.sdk.graph import DatasetSpec

FORMAT = "aiflow-workflow/1"


class FrozenDict(dict):
    """A dict that refuses changes (and still pickles), for the mappings inside a :class:`Workflow`."""

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("a compiled Workflow is immutable; change the definition and compile again")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _refuse  # type: ignore

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenDict, (dict(self),))

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(json.dumps(self, sort_keys=True, default=repr))


@dataclass(frozen=True)
class NodeSpec:
    """One node of a job: ``inputs`` are ``(node name, output index)`` pairs within the same job."""

    kind: str
    name: str
    inputs: tuple[tuple[str, int], ...]
    output_num: int
    dataset: DatasetSpec | None = None
    model: str | None = None
    model_version: str | None = None
    model_stage: str | None = None  # predict: serve the newest version in this stage
    has_fn: bool = False
    properties: FrozenDict = field(default_factory=FrozenDict)
    location: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "inputs": [list(i) for i in self.inputs],
                "output_num": self.output_num, "dataset": self.dataset.to_dict() if self.dataset else None,
                "model": self.model, "model_version": self.model_version, "model_stage": self.model_stage,
                "has_fn": self.has_fn,
                "properties": dict(self.properties), "location": self.location}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NodeSpec:
        dataset = data.get("dataset")
        return cls(kind=data["kind"], name=data["name"], inputs=tuple((n, int(i)) for n, i in data["inputs"]),
                   output_num=int(data["output_num"]), dataset=DatasetSpec(**dataset) if dataset else None,
                   model=data.get("model"), model_version=data.get("model_version"),
                   model_stage=data.get("model_stage"),
                   has_fn=bool(data.get("has_fn")), properties=FrozenDict(data.get("properties") or {}),
                   location=data.get("location", ""))


@dataclass(frozen=True)
class Job:
    """One executable job: where and how it runs, its nodes in order, the datasets it reads and writes."""

    name: str
    engine: str
    parallelism: int
    platform: str
    streaming: bool
    properties: FrozenDict
    nodes: tuple[NodeSpec, ...]
    inputs: tuple[DatasetSpec, ...]
    outputs: tuple[DatasetSpec, ...]
    payload: bytes = field(repr=False)
    code_fingerprint: str = ""

    def load_callables(self) -> dict[str, Callable[..., Any]]:
        """The user functions of this job's nodes, by node name (unpickles the payload)."""
        from aiflow_notebook.sdk.capture import load_payload

        return dict(load_payload(self.payload)["callables"])

    def run(self, context: Any = None) -> dict[str, Any]:
        """Run this job's nodes here, in order (what the python engine does); outputs by node name."""
        from aiflow_notebook.sdk.job_runtime import run_job_payload

        return run_job_payload(self.payload, context)

    def to_dict(self, include_payload: bool = True) -> dict[str, Any]:
        data = {"name": self.name, "engine": self.engine, "parallelism": self.parallelism,
                "platform": self.platform, "streaming": self.streaming, "properties": dict(self.properties),
                "nodes": [node.to_dict() for node in self.nodes],
                "inputs": [d.to_dict() for d in self.inputs], "outputs": [d.to_dict() for d in self.outputs],
                "code_fingerprint": self.code_fingerprint}
        if include_payload:
            data["payload"] = base64.b64encode(self.payload).decode("ascii")
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Job:
        return cls(name=data["name"], engine=data["engine"], parallelism=int(data["parallelism"]),
                   platform=data["platform"], streaming=bool(data["streaming"]),
                   properties=FrozenDict(data.get("properties") or {}),
                   nodes=tuple(NodeSpec.from_dict(n) for n in data["nodes"]),
                   inputs=tuple(DatasetSpec(**d) for d in data.get("inputs", ())),
                   outputs=tuple(DatasetSpec(**d) for d in data.get("outputs", ())),
                   payload=base64.b64decode(data["payload"]) if data.get("payload") else b"",
                   code_fingerprint=data.get("code_fingerprint", ""))


@dataclass(frozen=True)
class Workflow:
    """A compiled workflow (``af.compile()``). ``jobs`` is in topological order of the jobs' dependencies
    (datasets one job writes and another reads, and job-status rules); ``control_edges`` are the
    scheduling rules."""

    name: str
    project: str
    jobs: FrozenDict
    control_edges: tuple[ControlEdge, ...]
    content_hash: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "jobs", FrozenDict(self.jobs))
        object.__setattr__(self, "control_edges", tuple(self.control_edges))
        object.__setattr__(self, "content_hash", self._hash())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Workflow) and other.content_hash == self.content_hash

    def __hash__(self) -> int:
        return hash(self.content_hash)

    def __repr__(self) -> str:
        return (f"<Workflow {self.name!r} (project {self.project!r}): jobs {', '.join(self.jobs) or 'none'}; "
                f"{len(self.control_edges)} control edges; hash {self.content_hash[:12]}>")

    @property
    def node_count(self) -> int:
        return sum(len(job.nodes) for job in self.jobs.values())

    # -- serialization ------------------------------------------------------------------------------------

    def to_dict(self, include_payload: bool = True) -> dict[str, Any]:
        return {"format": FORMAT, "name": self.name, "project": self.project,
                "jobs": [job.to_dict(include_payload) for job in self.jobs.values()],
                "control_edges": [edge.to_dict() for edge in self.control_edges],
                "content_hash": self.content_hash}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Workflow:
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, Mapping) else type(data).__name__
            raise WorkflowFormatError(f"not a serialized workflow of format {FORMAT!r} (found {found!r})")
        try:
            workflow = cls(name=data["name"], project=data["project"],
                           jobs={job["name"]: Job.from_dict(job) for job in data["jobs"]},
                           control_edges=tuple(ControlEdge.from_dict(e) for e in data["control_edges"]))
        except (KeyError, TypeError, ValueError) as err:
            raise WorkflowFormatError(f"the serialized workflow is incomplete or malformed: {err!r}") from None
        expected = data.get("content_hash")
        if expected and expected != workflow.content_hash:
            raise WorkflowFormatError(f"workflow {workflow.name!r}: content hash mismatch (stored {expected[:12]}, "
                                      f"computed {workflow.content_hash[:12]}); the bytes were altered")
        return workflow

    def to_bytes(self) -> bytes:
        """UTF-8 JSON, payloads base64-encoded; reading it back never unpickles anything.

        Keys keep their order (no sorting): a dataset schema ``{column: type}`` is positional.
        """
        return json.dumps(self.to_dict(), separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> Workflow:
        try:
            decoded = json.loads(data)
        except (UnicodeDecodeError, ValueError) as err:
            raise WorkflowFormatError(f"not a serialized workflow (invalid JSON: {err})") from None
        return cls.from_dict(decoded)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Workflow.from_bytes, (self.to_bytes(),))

    # -- drawing --------------------------------------------------------------------------------------------

    def to_graphviz(self, highlight: str | None = None, status: Mapping[str, str] | None = None) -> Any:
        """The split graph as a ``graphviz.Digraph``: jobs as clusters, data edges solid, control edges
        dashed; ``highlight`` outlines one job, ``status`` (job → state) colours jobs."""
        from aiflow_notebook.sdk.drawing import draw

        return draw(self, highlight=highlight, status=status)

    def view(self, highlight: str | None = None, status: Mapping[str, str] | None = None,
             run_id: int | None = None, run_status: str | None = None) -> WorkflowView:
        """Something to display: the drawing with ``highlight``/``status`` applied (of run ``run_id``)."""
        return WorkflowView(self, highlight, status, run_id, run_status)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return self.view()._repr_mimebundle_(include, exclude)

    # -- content hash --------------------------------------------------------------------------------------

    def _hash(self) -> str:
        """sha256 of a canonical form: no payload bytes (they embed per-process details such as the
        notebook's temp file names) but each job's code fingerprint; no source locations; jobs, nodes and
        edges sorted, so neither re-running a cell nor a blank line changes it."""
        jobs = []
        for job in sorted(self.jobs.values(), key=lambda j: j.name):
            data = job.to_dict(include_payload=False)
            data["nodes"] = sorted(({k: v for k, v in node.items() if k != "location"} for node in data["nodes"]),
                                   key=lambda n: n["name"])
            jobs.append(data)
        edges = sorted(json.dumps(_without_payload(edge.to_dict()), sort_keys=True) for edge in self.control_edges)
        canonical = json.dumps({"name": self.name, "project": self.project, "jobs": jobs, "edges": edges},
                               sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _without_payload(edge: dict[str, Any]) -> dict[str, Any]:
    """A control edge for hashing: a custom condition counts by its code fingerprint, not its pickle."""
    condition = edge.get("condition") or {}
    if "payload" not in condition:
        return edge
    return {**edge, "condition": {k: v for k, v in condition.items() if k not in ("payload", "cloudpickle")}}


class WorkflowView:
    """A workflow drawn for display, e.g. with the job a cell just defined highlighted.

    Its bundle carries ``application/vnd.aiflow.workflow+json`` (docs/workflow-mime.md) for renderers that
    draw it interactively, and SVG, PNG and text for every other viewer."""

    def __init__(self, workflow: Workflow, highlight: str | None = None, status: Mapping[str, str] | None = None,
                 run_id: int | None = None, run_status: str | None = None):
        self.workflow, self.highlight, self.status = workflow, highlight, status
        self.run_id, self.run_status = run_id, run_status

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        import aiflow_notebook.core.rendering as rendering
        from aiflow_notebook.sdk.mime import MIME_TYPE, workflow_json

        bundle: dict[str, Any] = rendering.mimebundle(self.workflow.to_graphviz(self.highlight, self.status),
                                                      png=True)
        bundle[MIME_TYPE] = workflow_json(self.workflow, self.status, self.run_id, self.run_status)
        return bundle
