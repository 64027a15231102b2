"""Lineage: which datasets and job runs a model version came from, and which jobs consumed it.

Facts are stored as edges (``src --relation--> dst``) between datasets, job runs and model versions:

    dataset --read_by--> job_run --produced--> model_version --served_by--> job_run --wrote--> dataset

:meth:`Lineage.lineage` walks them upstream and downstream from a model's versions and returns a
:class:`LineageGraph` that renders as SVG in a notebook.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import graphviz
from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

import aiflow_notebook.core.rendering as rendering
from aiflow_notebook.meta import orm
from aiflow_notebook.meta.errors import NotFoundError
from aiflow_notebook.meta.model_center import _model_row, _version_row
from aiflow_notebook.meta.models import Dataset

NodeId = tuple[str, int]  # (kind, id)
_MAX_NODES = 5_000


@dataclass(frozen=True)
class LineageNode:
    kind: str  # "dataset" | "job_run" | "model_version"
    id: int
    label: str
    attrs: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def key(self) -> str:
        return f"{self.kind}_{self.id}"


@dataclass
class LineageGraph:
    """Provenance graph around a model: ``nodes`` and ``edges`` as (src key, dst key, relation)."""

    title: str
    nodes: dict[str, LineageNode] = field(default_factory=dict)
    edges: list[tuple[str, str, str]] = field(default_factory=list)

    def nodes_of(self, kind: str) -> list[LineageNode]:
        return [node for node in self.nodes.values() if node.kind == kind]

    def to_graphviz(self) -> graphviz.Digraph:
        dot = graphviz.Digraph(name=self.title, graph_attr={"rankdir": "LR", "label": self.title, "labelloc": "t",
                                                             "fontname": "Helvetica"},
                               node_attr={"fontname": "Helvetica", "fontsize": "11"},
                               edge_attr={"fontname": "Helvetica", "fontsize": "9"})
        styles = {
            "dataset": {"shape": "cylinder", "style": "filled", "fillcolor": "#e8f1fb"},
            "job_run": {"shape": "box", "style": "rounded,filled", "fillcolor": "#fff4e0"},
            "model_version": {"shape": "hexagon", "style": "filled", "fillcolor": "#e6f6e6"},
        }
        for node in self.nodes.values():
            dot.node(node.key, node.label, **styles.get(node.kind, {}))
        for src, dst, relation in self.edges:
            dot.edge(src, dst, label=relation.replace("_", " "))
        return dot

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, str]:
        return rendering.mimebundle(self.to_graphviz())


class Lineage:
    """Dataset and lineage methods of the metadata store (needs ``self._db``)."""

    def register_dataset(self, name: str, uri: str | None = None, schema: Any = None,
                         properties: dict[str, Any] | None = None) -> Dataset:
        """Create or update a named dataset (its uri and schema are replaced when given)."""

        def work(session: Session) -> orm.Dataset:
            row = session.scalar(select(orm.Dataset).where(orm.Dataset.name == name))
            if row is None:
                row = orm.Dataset(name=name, uri=uri, schema=schema, properties=properties)
                session.add(row)
            else:
                row.uri = uri if uri is not None else row.uri
                row.schema = schema if schema is not None else row.schema
                row.properties = properties if properties is not None else row.properties
            session.flush()
            return row

        return _dataset(self._db.transaction(work))

    def get_dataset(self, name: str) -> Dataset:
        with self._db.reading() as session:
            return _dataset(_dataset_row(session, name))

    def record_dataset_read(self, job_run: int | Any, dataset: str) -> None:
        """Record that ``job_run`` read ``dataset``."""
        self._add_edge(lambda s: ("dataset", _dataset_row(s, dataset).id), lambda s: _job_run_node(s, job_run),
                       "read_by")

    def record_dataset_write(self, job_run: int | Any, dataset: str) -> None:
        """Record that ``job_run`` wrote ``dataset``."""
        self._add_edge(lambda s: _job_run_node(s, job_run), lambda s: ("dataset", _dataset_row(s, dataset).id),
                       "wrote")

    def record_model_consumer(self, model: str, version: int, job_run: int | Any) -> None:
        """Record that ``job_run`` (a serving or evaluating job) used ``model`` version ``version``."""
        self._add_edge(lambda s: ("model_version", _version_row(s, model, version).id),
                       lambda s: _job_run_node(s, job_run), "served_by")

    def lineage(self, model: str, version: int | None = None) -> LineageGraph:
        """The provenance of ``model`` (one version, or all of them): upstream and downstream closure."""
        with self._db.reading() as session:
            model_row = _model_row(session, model)
            if version is None:
                starts = session.scalars(select(orm.ModelVersion.id).where(orm.ModelVersion.model_id == model_row.id))
                title = f"lineage of model {model}"
            else:
                starts = [_version_row(session, model, version).id]
                title = f"lineage of model {model} v{version}"
            start_ids = {("model_version", vid) for vid in starts}
            edges = _walk(session, start_ids, upstream=True) | _walk(session, start_ids, upstream=False)
            node_ids = set(start_ids) | {e[0] for e in edges} | {e[1] for e in edges}
            graph = LineageGraph(title=title)
            for node in _load_nodes(session, node_ids):
                graph.nodes[node.key] = node
            graph.edges = sorted((f"{s[0]}_{s[1]}", f"{d[0]}_{d[1]}", rel) for s, d, rel in edges)
            return graph

    def _add_edge(self, src_of, dst_of, relation: str) -> None:
        """Store ``src --relation--> dst`` once; ``src_of``/``dst_of`` look the ends up in the session."""

        def work(session: Session) -> None:
            (src_kind, src_id), (dst_kind, dst_id) = src_of(session), dst_of(session)
            exists = session.scalar(select(orm.LineageEdge.id).where(
                orm.LineageEdge.src_kind == src_kind, orm.LineageEdge.src_id == src_id,
                orm.LineageEdge.dst_kind == dst_kind, orm.LineageEdge.dst_id == dst_id,
                orm.LineageEdge.relation == relation))
            if exists is None:
                session.add(orm.LineageEdge(src_kind=src_kind, src_id=src_id, dst_kind=dst_kind, dst_id=dst_id,
                                            relation=relation))

        self._db.transaction(work)


def _walk(session: Session, starts: set[NodeId], upstream: bool) -> set[tuple[NodeId, NodeId, str]]:
    """Breadth-first closure over lineage edges, one query per level."""
    seen, frontier, found = set(starts), set(starts), set()
    edge = orm.LineageEdge
    near_kind, near_id = (edge.dst_kind, edge.dst_id) if upstream else (edge.src_kind, edge.src_id)
    while frontier and len(seen) < _MAX_NODES:
        rows = session.execute(select(edge.src_kind, edge.src_id, edge.dst_kind, edge.dst_id, edge.relation)
                               .where(tuple_(near_kind, near_id).in_(list(frontier)))).all()
        frontier = set()
        for src_kind, src_id, dst_kind, dst_id, relation in rows:
            src, dst = (src_kind, src_id), (dst_kind, dst_id)
            found.add((src, dst, relation))
            far = src if upstream else dst
            if far not in seen:
                seen.add(far)
                frontier.add(far)
    return found


def _load_nodes(session: Session, node_ids: Iterable[NodeId]) -> list[LineageNode]:
    by_kind: dict[str, list[int]] = {}
    for kind, ident in node_ids:
        by_kind.setdefault(kind, []).append(ident)
    nodes = []
    for row in session.scalars(select(orm.Dataset).where(orm.Dataset.id.in_(by_kind.get("dataset", [])))):
        nodes.append(LineageNode("dataset", row.id, f"{row.name}\n{row.uri or ''}".strip(), {"uri": row.uri}))
    runs = session.execute(
        select(orm.JobRun, orm.Job.name, orm.Workflow.name)
        .join(orm.Job, orm.Job.id == orm.JobRun.job_id).join(orm.Workflow, orm.Workflow.id == orm.Job.workflow_id)
        .where(orm.JobRun.id.in_(by_kind.get("job_run", [])))).all()
    for run, job, workflow in runs:
        nodes.append(LineageNode("job_run", run.id, f"{workflow}.{job}\nrun {run.id} · {run.state}",
                                 {"job": job, "workflow": workflow, "state": run.state}))
    versions = session.execute(
        select(orm.ModelVersion, orm.Model.name).join(orm.Model, orm.Model.id == orm.ModelVersion.model_id)
        .where(orm.ModelVersion.id.in_(by_kind.get("model_version", [])))).all()
    for row, name in versions:
        nodes.append(LineageNode("model_version", row.id, f"{name} v{row.version}\n{row.stage}",
                                 {"model": name, "version": row.version, "stage": row.stage}))
    return nodes


def _dataset_row(session: Session, name: str) -> orm.Dataset:
    row = session.scalar(select(orm.Dataset).where(orm.Dataset.name == name))
    if row is None:
        raise NotFoundError(f"dataset {name!r} is not registered; call register_dataset({name!r}, uri=...) first")
    return row


def _dataset(row: orm.Dataset) -> Dataset:
    return Dataset(name=row.name, uri=row.uri, schema=row.schema, properties=row.properties, id=row.id)


def _job_run_node(session: Session, job_run: int | Any) -> NodeId:
    ident = int(getattr(job_run, "id", job_run))
    if session.get(orm.JobRun, ident) is None:
        raise NotFoundError(f"job run {ident} does not exist; pass the id that start_job_run returned")
    return "job_run", ident
