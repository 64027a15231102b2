"""``af.compile()``: check the AI graph, split it per job and translate it into a :class:`Workflow`.

Compiling is a short pipeline of passes over one :class:`Compilation`, each with one job (AI Flow's
translator, with errors that name the culprit):

    CheckNodes → CheckCycles → SplitJobs → ResolveDatasets → TranslateJobs → TranslateControlEdges → OrderJobs

Nothing runs and nothing outside this process is contacted: a dataset read by name alone that no job of
the workflow writes stays without a uri, to be looked up in the metadata store when the job runs.
"""

from __future__ import annotations

import difflib
import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import aiflow_notebook.sdk.capture as capture
import aiflow_notebook.sdk.graph as _graph
from aiflow_notebook.core.engine_names import is_known_engine, known_engines
from aiflow_notebook.core.errors import (
    CrossJobDataEdgeError,
    CycleError,
    EngineConflictError,
    MissingNodeError,
    UnknownEngineError,
    UnknownJobError,
)
from aiflow_notebook.sdk.control import ControlEdge
from aiflow_notebook.sdk.graph import AIGraph, DatasetSpec, JobSettings, Node
from aiflow_notebook.sdk.workflow import FrozenDict, Job, NodeSpec, Workflow

__all__ = ["Compilation", "Workflow", "compile"]

NodeKey = tuple[str, str]


def compile(workflow: str | AIGraph | None = None) -> Workflow:  # noqa: A001 - the public name af.compile
    """Compile the current workflow (or the one named, or the given graph) into a :class:`Workflow`."""
    if workflow is None:
        graph = _graph.current_graph()
    elif isinstance(workflow, AIGraph):
        graph = workflow
    else:
        graph = _graph.get_workflow(workflow)
    state = Compilation(graph)
    for step in PASSES:
        step().run(state)
    return Workflow(name=graph.name, project=graph.project, jobs={name: state.jobs[name] for name in state.order},
                    control_edges=state.control_edges)


@dataclass
class Compilation:
    """What the passes share: the graph (read only) and what each pass adds."""

    graph: AIGraph
    nodes: dict[NodeKey, Node] = field(default_factory=dict)
    settings: dict[str, JobSettings] = field(default_factory=dict)
    subgraphs: dict[str, list[Node]] = field(default_factory=dict)  # job → its nodes, topologically ordered
    engines: dict[str, str] = field(default_factory=dict)
    datasets: dict[NodeKey, DatasetSpec] = field(default_factory=dict)  # resolved dataset of each dataset node
    job_inputs: dict[str, list[DatasetSpec]] = field(default_factory=dict)
    job_outputs: dict[str, list[DatasetSpec]] = field(default_factory=dict)
    depends_on: dict[str, set[str]] = field(default_factory=dict)  # job → jobs it waits for
    jobs: dict[str, Job] = field(default_factory=dict)
    control_edges: tuple[ControlEdge, ...] = ()
    order: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.nodes = dict(self.graph.nodes)
        self.settings = dict(self.graph.jobs)


class CheckNodes:
    """Every input names an existing output, and every engine is a known one."""

    def run(self, state: Compilation) -> None:
        for node in state.nodes.values():
            for channel in node.inputs:
                source = state.nodes.get((channel.job, channel.node))
                if source is None:
                    raise MissingNodeError(
                        f"{node.describe()} reads the output of node {channel.node!r} in job {channel.job!r}, "
                        f"which is not in workflow {state.graph.name!r} any more (was its cell changed or "
                        f"reset?). Re-run the cell that defines {node.name!r}.")
                if channel.index >= source.output_num:
                    raise MissingNodeError(f"{node.describe()} reads output #{channel.index} of "
                                           f"{source.describe()}, which has {source.output_num} output(s)")
        for settings in state.settings.values():
            _check_engine(settings.engine, f"job {settings.name!r} ({settings.location})")
        for node in state.nodes.values():
            _check_engine(node.engine, node.describe())


class CheckCycles:
    """The data edges form no cycle (possible in a notebook: a re-run cell re-wires by name)."""

    def run(self, state: Compilation) -> None:
        readers: dict[NodeKey, list[NodeKey]] = {key: [] for key in state.nodes}
        for key, node in state.nodes.items():
            for channel in node.inputs:
                readers[(channel.job, channel.node)].append(key)
        colour: dict[NodeKey, int] = dict.fromkeys(state.nodes, 0)  # 0 new, 1 on the path, 2 done
        for start in state.nodes:
            if colour[start]:
                continue
            path: list[NodeKey] = [start]
            stack = [iter(readers[start])]
            colour[start] = 1
            while stack:
                nxt = next(stack[-1], None)
                if nxt is None:
                    colour[path.pop()] = 2
                    stack.pop()
                elif colour[nxt] == 1:
                    cycle = [*path[path.index(nxt):], nxt]
                    names = " → ".join(f"{job}.{name}" for job, name in cycle)
                    where = "; ".join(state.nodes[key].describe() for key in cycle[:-1])
                    raise CycleError(f"the data edges of workflow {state.graph.name!r} form a cycle: {names}. A "
                                     f"node cannot read its own output; this happens when a cell is re-run "
                                     f"after a node it reads was redefined to read it. ({where})",
                                     [f"{job}.{name}" for job, name in cycle[:-1]])
                elif colour[nxt] == 0:
                    colour[nxt] = 1
                    path.append(nxt)
                    stack.append(iter(readers[nxt]))


class SplitJobs:
    """One subgraph per job: no data edge may cross jobs, and a job's nodes share one engine."""

    def run(self, state: Compilation) -> None:
        members: dict[str, list[Node]] = {name: [] for name in state.settings}
        for node in state.nodes.values():
            members.setdefault(node.job, []).append(node)
            for channel in node.inputs:
                if channel.job != node.job:
                    source = state.nodes[(channel.job, channel.node)]
                    raise CrossJobDataEdgeError(
                        f"{node.describe()} reads the output of {source.describe()} directly, but a data edge "
                        f"between two jobs must go through a dataset: in job {source.job!r} write it with "
                        f"af.write_dataset(<channel>, 'some_name') and in job {node.job!r} read it with "
                        f"af.read_dataset('some_name').")
        for job, nodes in members.items():
            state.subgraphs[job] = _topological(nodes)
            engines: dict[str, list[Node]] = {}
            for node in nodes:
                engines.setdefault(node.engine, []).append(node)
            if len(engines) > 1:
                detail = "; ".join(f"{engine}: {', '.join(repr(n.name) for n in group)} ({group[0].location})"
                                   for engine, group in engines.items())
                raise EngineConflictError(
                    f"job {job!r} has nodes on two engines ({detail}). A job runs on one engine: put the nodes "
                    f"of the other engine in a job of their own and connect the two through a dataset.")
            state.engines[job] = next(iter(engines)) if engines else state.settings[job].engine


class ResolveDatasets:
    """A dataset read by name gets the uri and schema its writer gave; jobs learn their inputs/outputs."""

    def run(self, state: Compilation) -> None:
        writers: dict[str, list[Node]] = {}
        for node in state.nodes.values():
            if node.kind == "write_dataset" and node.dataset is not None:
                writers.setdefault(node.dataset.name, []).append(node)
        for job, nodes in state.subgraphs.items():
            inputs: dict[str, DatasetSpec] = {}
            outputs: dict[str, DatasetSpec] = {}
            deps = state.depends_on.setdefault(job, set())
            for node in nodes:
                if node.dataset is None:
                    continue
                dataset = node.dataset
                if node.kind == "read_dataset":
                    sources = writers.get(dataset.name, [])
                    known = next((w.dataset for w in sources if w.dataset and w.dataset.uri), None)
                    if known is not None:
                        dataset = DatasetSpec(dataset.name, dataset.uri or known.uri,
                                              dataset.schema if dataset.schema is not None else known.schema)
                    deps.update(w.job for w in sources if w.job != job)
                    if all(w.job != job for w in sources):
                        inputs.setdefault(dataset.name, dataset)
                elif node.kind == "write_dataset":
                    outputs.setdefault(dataset.name, dataset)
                state.datasets[node.key] = dataset
            state.job_inputs[job] = list(inputs.values())
            state.job_outputs[job] = list(outputs.values())


class TranslateJobs:
    """Each subgraph becomes a :class:`Job`, with its user functions captured in a payload."""

    def run(self, state: Compilation) -> None:
        for name, settings in state.settings.items():
            nodes = state.subgraphs.get(name, [])
            specs = tuple(NodeSpec(kind=node.kind, name=node.name,
                                   inputs=tuple((channel.node, channel.index) for channel in node.inputs),
                                   output_num=node.output_num, dataset=state.datasets.get(node.key),
                                   model=node.model, model_version=node.model_version,
                                   model_stage=node.model_stage, has_fn=node.fn is not None,
                                   properties=FrozenDict(node.properties), location=node.location)
                          for node in nodes)
            callables = {node.name: node.fn for node in nodes if node.fn is not None}
            payload = capture.capture_job(name, [spec.to_dict() for spec in specs], callables,
                                          describe={node.name: node.describe() for node in nodes})
            state.jobs[name] = Job(name=name, engine=state.engines[name], parallelism=settings.parallelism,
                                   platform=settings.platform, streaming=settings.streaming,
                                   properties=FrozenDict(settings.properties), nodes=specs,
                                   inputs=tuple(state.job_inputs.get(name, ())),
                                   outputs=tuple(state.job_outputs.get(name, ())), payload=payload,
                                   code_fingerprint=capture.fingerprint(callables))


class TranslateControlEdges:
    """Control edges become the workflow's scheduling rules; each must name jobs that exist."""

    def run(self, state: Compilation) -> None:
        for edge in state.graph.control_edges:
            for role, job in (("acts on", edge.job), *(("listens to", name) for name in edge.upstream_jobs)):
                if job not in state.jobs:
                    raise UnknownJobError(f"{edge.describe()} {role} job {job!r}, which workflow "
                                          f"{state.graph.name!r} does not have{_did_you_mean(job, state.jobs)} "
                                          f"(jobs: {', '.join(state.jobs) or 'none'}).")
            state.depends_on.setdefault(edge.job, set()).update(edge.upstream_jobs)
        state.control_edges = tuple(state.graph.control_edges)


class OrderJobs:
    """Jobs in topological order of what they wait for; ties (and cycles, which control edges may form
    on purpose, e.g. continuous training) keep the order the jobs were declared in."""

    def run(self, state: Compilation) -> None:
        declared = list(state.jobs)
        position = {name: i for i, name in enumerate(declared)}
        waiting = {name: {d for d in state.depends_on.get(name, ()) if d in position and d != name}
                   for name in declared}
        waited_by: dict[str, list[str]] = {name: [] for name in declared}
        for name, deps in waiting.items():
            for dep in deps:
                waited_by[dep].append(name)
        ready = [(position[name], name) for name, deps in waiting.items() if not deps]
        heapq.heapify(ready)
        done: set[str] = set()
        while len(done) < len(declared):
            if not ready:  # a cycle: release the earliest declared job still waiting
                name = next(n for n in declared if n not in done)
                waiting[name].clear()
                heapq.heappush(ready, (position[name], name))
            _, name = heapq.heappop(ready)
            if name in done:
                continue
            done.add(name)
            state.order.append(name)
            for other in waited_by[name]:
                deps = waiting[other]
                if name in deps:
                    deps.discard(name)
                    if not deps and other not in done:
                        heapq.heappush(ready, (position[other], other))


PASSES = (CheckNodes, CheckCycles, SplitJobs, ResolveDatasets, TranslateJobs, TranslateControlEdges, OrderJobs)


def _topological(nodes: list[Node]) -> list[Node]:
    """Kahn's algorithm over one job's data edges; ties go to the node defined first."""
    by_key = {node.key: node for node in nodes}
    waiting = {node.key: {(c.job, c.node) for c in node.inputs if (c.job, c.node) in by_key} for node in nodes}
    readers: dict[NodeKey, list[NodeKey]] = {key: [] for key in by_key}
    for key, deps in waiting.items():
        for dep in deps:
            readers[dep].append(key)
    ready = [(by_key[key].seq, key) for key, deps in waiting.items() if not deps]
    heapq.heapify(ready)
    ordered: list[Node] = []
    while ready:
        _, key = heapq.heappop(ready)
        ordered.append(by_key[key])
        for reader in readers[key]:
            waiting[reader].discard(key)
            if not waiting[reader]:
                heapq.heappush(ready, (by_key[reader].seq, reader))
    return ordered


def _check_engine(engine: str, culprit: str) -> None:
    if not is_known_engine(engine):
        raise UnknownEngineError(f"{culprit} uses engine {engine!r}, which is not known"
                                 f"{_did_you_mean(engine, known_engines())}; known engines: "
                                 f"{', '.join(known_engines())}.")


def _did_you_mean(name: str, choices: Iterable[Any]) -> str:
    close = difflib.get_close_matches(name, [str(c) for c in choices], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
