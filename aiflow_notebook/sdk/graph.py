"""The AI graph: nodes joined by channels, grouped into jobs by execution blocks (DESIGN §4.1).

This is the *definition* side, Metaflow-style: calling ``af.transform(...)`` records a node and returns a
:class:`Channel`; nothing runs. :mod:`aiflow_notebook.sdk.compile` later checks the graph, splits it per job and
translates it into an immutable :class:`~aiflow_notebook.sdk.workflow.Workflow`.

Execution blocks (``af.workflow``, ``af.global_config``, ``af.job_config``, ``af.engine``) work both as a
plain call ("from now on") and as a ``with`` block ("inside this block"): the call pushes a frame on one
stack, leaving the ``with`` block pops it again, together with anything pushed inside. Inner frames
override outer ones.

Channels name their node by (job, name) rather than holding it, so that re-running a notebook cell that
redefines a node re-wires the nodes that read it, the way re-running a cell redefines a Python function.
"""

from __future__ import annotations

import itertools
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from aiflow_notebook.core.errors import DuplicateNodeError, InvalidArgumentError, UnknownWorkflowError
from aiflow_notebook.core.vocabulary import DEFAULT_PROJECT

if TYPE_CHECKING:
    from aiflow_notebook.sdk.control import ControlEdge

DEFAULT_WORKFLOW = "default"
DEFAULT_JOB = "default"
JOB_SETTINGS = ("engine", "parallelism", "platform", "streaming", "properties")
BUILTIN_JOB_DEFAULTS: dict[str, Any] = {"engine": "python", "parallelism": 1, "platform": "local",
                                        "streaming": False, "properties": {}}
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-]*$")


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset as a node sees it: its name, where it lives and its schema (any JSON-able value)."""

    name: str
    uri: str | None = None
    schema: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "uri": self.uri, "schema": self.schema}


@dataclass(frozen=True)
class Channel:
    """One output of one node. Passing it to another node makes a data edge."""

    workflow: str
    job: str
    node: str
    index: int  # -1 when the node has no output (write_dataset, push_model, ...)

    def __repr__(self) -> str:
        port = "" if self.index == 0 else f"[{self.index}]"
        return f"<Channel {self.workflow}:{self.job}.{self.node}{port}>"


@dataclass
class Node:
    """A node of the AI graph: what kind of operation, the user function, its inputs and settings."""

    kind: str
    name: str
    job: str
    engine: str
    fn: Callable[..., Any] | None
    inputs: tuple[Channel, ...]
    output_num: int
    dataset: DatasetSpec | None = None
    model: str | None = None
    model_version: str | None = None
    model_stage: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    location: str = ""
    origin: str | None = None
    seq: int = 0
    generation: int = 0

    @property
    def key(self) -> tuple[str, str]:
        return (self.job, self.name)

    def describe(self) -> str:
        """How error messages name this node: name, job and the line that defined it."""
        where = f", {self.location}" if self.location else ""
        return f"node '{self.name}' ({self.kind} in job '{self.job}'{where})"


@dataclass
class JobSettings:
    """A job as its execution block declared it; the compiler turns it into a ``Job``."""

    name: str
    engine: str
    parallelism: int
    platform: str
    streaming: bool
    properties: dict[str, Any]
    origin: str | None = None
    location: str = ""
    seq: int = 0


class AIGraph:
    """The nodes, jobs and control edges of one workflow, as defined so far in this session.

    ``af.workflow(name)`` returns it; it is also a context manager (``with af.workflow("ctr"):``).
    """

    def __init__(self, name: str, project: str = DEFAULT_PROJECT):
        self.name = name
        self.project = project
        self.nodes: dict[tuple[str, str], Node] = {}
        self.jobs: dict[str, JobSettings] = {}
        self.control_edges: dict[ControlEdge, None] = {}  # an ordered set: equal edges are kept once
        self._called: _Frame | None = None  # the frame of the latest af.workflow(...) call, for __enter__
        self._open: list[_Frame] = []  # frames of the with blocks open on this graph
        self._dropped_seq: dict[str, int] = {}  # a job re-defined after drop_job keeps its place
        self._taken_below: dict[tuple[str, str], int] = {}  # unique_name: suffixes below this are all taken

    def __repr__(self) -> str:
        return (f"<AIGraph {self.name!r} (project {self.project!r}): {len(self.jobs)} jobs, "
                f"{len(self.nodes)} nodes, {len(self.control_edges)} control edges>")

    def __enter__(self) -> AIGraph:
        if self._called is not None:
            self._open.append(self._called)
            self._called = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._open:
            _session.pop_to(self._open.pop())

    # -- what the node and control functions call -------------------------------------------------------

    def add_node(self, node: Node) -> Node:
        """Add ``node``; an explicit name defined again in a later block replaces the earlier node."""
        existing = self.nodes.get(node.key)
        if existing is not None:
            if existing.generation == node.generation:
                raise DuplicateNodeError(
                    f"{existing.describe()} is defined twice in the same block (again at {node.location}). "
                    f"Give the second one another name=.")
            del self.nodes[node.key]
        self.nodes[node.key] = node
        return node

    def unique_name(self, job: str, base: str) -> str:
        """``base``, or ``base_2``, ``base_3``... when ``job`` already has a node called that."""
        if (job, base) not in self.nodes:
            return base
        for i in itertools.count(self._taken_below.get((job, base), 2)):
            if (job, f"{base}_{i}") not in self.nodes:
                self._taken_below[(job, base)] = i + 1
                return f"{base}_{i}"
        raise AssertionError("unreachable")

    def declare_job(self, settings: JobSettings) -> None:
        """Declare (or re-declare: the last declaration's settings win) a job."""
        previous = self.jobs.pop(settings.name, None)
        seq = previous.seq if previous is not None else self._dropped_seq.pop(settings.name, None)
        self.jobs[settings.name] = settings if seq is None else replace(settings, seq=seq)
        if seq is not None:  # back in its old place
            self.jobs = dict(sorted(self.jobs.items(), key=lambda item: item[1].seq))

    def add_control_edge(self, edge: ControlEdge) -> None:
        """Add a control edge; adding an equal one again (a re-run cell) keeps just one."""
        self.control_edges.setdefault(edge, None)

    # -- notebook housekeeping ----------------------------------------------------------------------------

    def drop_job(self, job: str) -> None:
        """Forget job ``job``: its settings and nodes (a ``%%aiflow job`` cell about to run again)."""
        self._taken_below.clear()
        dropped = self.jobs.pop(job, None)
        if dropped is not None:
            self._dropped_seq[job] = dropped.seq
        self.nodes = {key: node for key, node in self.nodes.items() if node.job != job}

    def drop_origin(self, origin: str) -> None:
        """Forget everything the block ``origin`` defined: jobs, nodes and control edges."""
        self._taken_below.clear()
        for name, job in self.jobs.items():
            if job.origin == origin:
                self._dropped_seq[name] = job.seq
        self.jobs = {name: job for name, job in self.jobs.items() if job.origin != origin}
        self.nodes = {key: node for key, node in self.nodes.items() if node.origin != origin}
        self.control_edges = {edge: None for edge in self.control_edges if edge.origin != origin}

    def reset(self) -> None:
        """Forget every node, job and control edge of this workflow."""
        self.nodes, self.jobs, self.control_edges = {}, {}, {}
        self._taken_below.clear()

    def snapshot(self) -> tuple[dict, dict, dict]:
        """The graph's state, to :meth:`restore` when a cell fails half-way (nodes are never mutated)."""
        return dict(self.nodes), dict(self.jobs), dict(self.control_edges)

    def restore(self, state: tuple[dict, dict, dict]) -> None:
        nodes, jobs, edges = state
        self.nodes, self.jobs, self.control_edges = dict(nodes), dict(jobs), dict(edges)
        self._taken_below.clear()

    def nodes_of(self, job: str) -> list[Node]:
        return [node for node in self.nodes.values() if node.job == job]


# ---------------------------------------------------------------------------------------------------------
# Execution blocks


def workflow(name: str, project: str | None = None) -> AIGraph:
    """Select (creating it the first time) the workflow that nodes and control edges go to.

    A plain call selects it from now on; ``with af.workflow(name):`` selects it inside the block only.
    Calling it again with the same name returns the same graph; ``project`` (default ``"default"``) is
    changed only when given.
    """
    check_name(name, "workflow")
    if project is not None and (not isinstance(project, str) or not project):
        raise InvalidArgumentError(f"workflow {name!r}: project must be a non-empty string, got {project!r}")
    graph = _session.workflows.get(name)
    if graph is None:
        graph = _session.workflows[name] = AIGraph(name, project or DEFAULT_PROJECT)
    elif project is not None:
        graph.project = project
    graph._called = _session.push(_Frame("workflow", graph))
    return graph


def global_config(**job_defaults: Any) -> _Block:
    """Defaults for every job declared after the call (or inside the ``with`` block).

    Keys: ``engine``, ``parallelism``, ``platform``, ``streaming``, ``properties``; a job's own settings
    and inner blocks override them, and ``properties`` are merged key by key.
    """
    unknown = sorted(set(job_defaults) - set(JOB_SETTINGS))
    if unknown:
        raise InvalidArgumentError(f"global_config got unknown setting(s) {', '.join(unknown)}; "
                                   f"valid: {', '.join(JOB_SETTINGS)}")
    _check_settings("global_config", job_defaults)
    return _Block(_session.push(_Frame("global", dict(job_defaults))))


def job_config(name: str, engine: str | None = None, parallelism: int | None = None,
               platform: str | None = None, properties: dict[str, Any] | None = None,
               streaming: bool | None = None, periodic: Any = None) -> _Block:
    """The execution block of job ``name``: nodes defined inside belong to that job.

    A setting left as ``None`` is inherited from the enclosing blocks, finally from the built-in
    defaults (engine ``python``, parallelism 1, platform ``$AIFLOW_PLATFORM`` or ``local``, not streaming, no
    properties).
    ``periodic`` (``"cron@*/5 * * * *"``, ``"interval@0 0 1 0"``, a cron string, seconds or a timedelta)
    makes the job rerun at every tick while its run lives (the job property ``periodic``; docs/schedules.md).
    """
    check_name(name, "job")
    if periodic is not None:
        from aiflow_notebook.core.timing import Timing

        try:
            properties = {**(properties or {}), "periodic": Timing.coerce(periodic).to_dict()}
        except InvalidArgumentError as err:
            raise InvalidArgumentError(f"job_config({name!r}, periodic={periodic!r}): {err}") from None
    explicit = {key: value for key, value in (("engine", engine), ("parallelism", parallelism),
                                              ("platform", platform), ("properties", properties),
                                              ("streaming", streaming)) if value is not None}
    _check_settings(f"job_config({name!r})", explicit)
    graph = current_graph()
    resolved = _session.inherited_settings()
    resolved.update({key: value for key, value in explicit.items() if key != "properties"})
    resolved["properties"] = {**resolved["properties"], **(properties or {})}
    graph.declare_job(JobSettings(name=name, origin=_session.origin, location=caller_location(),
                                  seq=next(_session.counter), **resolved))
    _session.generation += 1
    return _Block(_session.push(_Frame("job", name, generation=_session.generation)))


def engine(name: str) -> _Block:
    """Run the nodes defined inside on engine ``name`` (or, around ``job_config``, its default engine)."""
    if not isinstance(name, str) or not name:
        raise InvalidArgumentError(f"engine(...) needs an engine name, got {name!r}")
    return _Block(_session.push(_Frame("engine", name)))


class _Block:
    """What the block functions return: entering does nothing more, leaving pops the block's frame."""

    def __init__(self, frame: _Frame):
        self._frame = frame

    def __enter__(self) -> _Block:
        return self

    def __exit__(self, *exc: object) -> None:
        _session.pop_to(self._frame)


# ---------------------------------------------------------------------------------------------------------
# Session state: the workflows defined in this process and the stack of open blocks


def current_graph() -> AIGraph:
    """The workflow nodes go to now: the innermost selected one, else the ``default`` workflow."""
    for frame in reversed(_session.frames):
        if frame.kind == "workflow":
            return frame.value
    graph = _session.workflows.get(DEFAULT_WORKFLOW)
    if graph is None:
        graph = _session.workflows[DEFAULT_WORKFLOW] = AIGraph(DEFAULT_WORKFLOW)
    return graph


def get_workflow(name: str) -> AIGraph:
    """The workflow called ``name`` (it must have been defined in this session)."""
    graph = _session.workflows.get(name)
    if graph is None:
        known = ", ".join(sorted(_session.workflows)) or "none yet"
        raise UnknownWorkflowError(f"there is no workflow called {name!r} in this session (defined: {known}); "
                                   f"select one with af.workflow({name!r}) first")
    return graph


def list_workflows() -> list[str]:
    return list(_session.workflows)


def clear_session() -> None:
    """Forget every workflow and close every block (a fresh start, as after a kernel restart)."""
    global _session
    _session = _Session()


def current_job_frame() -> tuple[str | None, int]:
    """The job nodes go to now (``None`` outside any job block) and the generation of its block."""
    for frame in reversed(_session.frames):
        if frame.kind == "job":
            return frame.value, frame.generation
    return None, 0


def node_engine(job: JobSettings) -> str:
    """The engine for a node created now in ``job``: an ``af.engine`` block inside the job wins."""
    for frame in reversed(_session.frames):
        if frame.kind == "engine":
            return frame.value
        if frame.kind == "job":
            break
    return job.engine


def ensure_job(graph: AIGraph, name: str | None) -> JobSettings:
    """The settings of the job a node is being added to; outside any block, the ``default`` job."""
    if name is not None and name in graph.jobs:
        return graph.jobs[name]
    name = name or DEFAULT_JOB
    if name not in graph.jobs:
        graph.declare_job(JobSettings(name=name, origin=_session.origin, location=caller_location(),
                                      seq=next(_session.counter), **_session.inherited_settings()))
    return graph.jobs[name]


def next_seq() -> int:
    return next(_session.counter)


def current_origin() -> str | None:
    return _session.origin


@contextmanager
def defining(origin: str, filename: str | None = None, label: str | None = None) -> Iterator[None]:
    """Tag what is defined inside with ``origin`` (so it can be replaced later) and name its source.

    The magics wrap a cell body in this: ``origin`` identifies the cell's block, and code compiled under
    ``filename`` is reported as ``label`` in error messages ("%%aiflow job prep, line 3").
    """
    previous = _session.origin
    _session.origin = origin
    if filename and label:
        _session.source_labels[filename] = label
    try:
        yield
    finally:
        _session.origin = previous


def caller_location() -> str:
    """``"<cell or file>, line N"`` of the user code that called into the SDK."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__", "").startswith(("aiflow_notebook.",
                                                                                "kernel_magics")):
        frame = frame.f_back
    if frame is None:
        return ""
    filename = frame.f_code.co_filename
    label = _session.source_labels.get(filename)
    if label is None:
        is_cell = filename.startswith("<ipython-input-") or "ipykernel_" in filename or filename.startswith("<cell")
        label = "notebook cell" if is_cell else os.path.basename(filename)
    return f"{label}, line {frame.f_lineno}"


@dataclass(eq=False)
class _Frame:
    kind: str  # "workflow" | "global" | "engine" | "job"
    value: Any
    generation: int = 0


class _Session:
    def __init__(self) -> None:
        self.workflows: dict[str, AIGraph] = {}
        self.frames: list[_Frame] = []
        self.origin: str | None = None
        self.source_labels: dict[str, str] = {}
        self.counter = itertools.count()
        self.generation = 0

    def push(self, frame: _Frame) -> _Frame:
        self.frames.append(frame)
        return frame

    def pop_to(self, frame: _Frame) -> None:
        """Close ``frame`` and every frame opened after it (plain calls inside a ``with`` block)."""
        for i in range(len(self.frames) - 1, -1, -1):
            if self.frames[i] is frame:
                del self.frames[i:]
                return

    def inherited_settings(self) -> dict[str, Any]:
        """Job settings from the built-in defaults, then every open global/engine block, outer to inner."""
        settings = {**BUILTIN_JOB_DEFAULTS, "platform": default_platform(), "properties": {}}
        for frame in self.frames:
            if frame.kind == "global":
                settings.update({k: v for k, v in frame.value.items() if k != "properties"})
                settings["properties"] = {**settings["properties"], **frame.value.get("properties", {})}
            elif frame.kind == "engine":
                settings["engine"] = frame.value
        return settings


_session = _Session()

PLATFORM_VARIABLE = "AIFLOW_PLATFORM"


def default_platform() -> str:
    """``$AIFLOW_PLATFORM`` (e.g. ``flink://127.0.0.1:8081``: flink, pytorch and tensorflow jobs run on that
    cluster), else ``local``. Read when a job is declared; python and bash jobs run where the scheduler
    runs them whatever their platform."""
    return os.environ.get(PLATFORM_VARIABLE) or BUILTIN_JOB_DEFAULTS["platform"]


def check_name(name: Any, what: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidArgumentError(
            f"{what} name {name!r} is not valid: use letters, digits, '_' and '-' (it becomes part of event "
            f"keys such as '<workflow>.<job>')")


def _check_settings(where: str, settings: dict[str, Any]) -> None:
    parallelism = settings.get("parallelism")
    if parallelism is not None and (isinstance(parallelism, bool) or not isinstance(parallelism, int)
                                    or parallelism < 1):
        raise InvalidArgumentError(f"{where}: parallelism must be a positive integer, got {parallelism!r}")
    for key in ("engine", "platform"):
        value = settings.get(key)
        if value is not None and (not isinstance(value, str) or not value):
            raise InvalidArgumentError(f"{where}: {key} must be a non-empty string, got {value!r}")
    streaming = settings.get("streaming")
    if streaming is not None and not isinstance(streaming, bool):
        raise InvalidArgumentError(f"{where}: streaming must be True or False, got {streaming!r}")
    properties = settings.get("properties")
    if properties is not None and (not isinstance(properties, dict)
                                   or not all(isinstance(k, str) for k in properties)):
        raise InvalidArgumentError(f"{where}: properties must be a dict with string keys, got {properties!r}")
