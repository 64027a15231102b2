"""Draw a compiled workflow the way the user thinks of it: the split graph.

- each job is a labelled cluster (name, engine, parallelism, streaming, workers/ps);
- nodes are shaped by kind (datasets are cylinders, training a 3-D box, validation a diamond...);
- data edges are solid; a dataset written by one job and read by another is a solid grey edge between
  the two dataset nodes;
- control edges are dashed and labelled with their condition and action: from the upstream job for
  job-status rules, from a model for model-version rules, from event boxes for other event rules.

DOT node ids are short generated ids (``n0``, ``n1``...), never user names, so any name is safe to draw.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import graphviz

if TYPE_CHECKING:
    from aiflow_notebook.workflow import Job, Workflow

FONT = "Helvetica"
NODE_STYLES: dict[str, dict[str, str]] = {
    "read_dataset": {"shape": "cylinder", "fillcolor": "#e8f1fb"},
    "write_dataset": {"shape": "cylinder", "fillcolor": "#e8f1fb"},
    "transform": {"shape": "box", "fillcolor": "#ffffff"},
    "train": {"shape": "box3d", "fillcolor": "#fff4e0"},
    "evaluate": {"shape": "octagon", "fillcolor": "#f3e8fd"},
    "model_validate": {"shape": "diamond", "fillcolor": "#f3e8fd"},
    "predict": {"shape": "parallelogram", "fillcolor": "#e6f6e6"},
    "push_model": {"shape": "house", "fillcolor": "#e6f6e6"},
    "user_define_operation": {"shape": "component", "fillcolor": "#ffffff"},
}
STATUS_COLOURS = {"INIT": "#eeeeee", "STARTING": "#dbeafe", "RUNNING": "#bfdbfe", "FINISHED": "#bbf7d0",
                  "FAILED": "#fecaca", "KILLED": "#e5e7eb"}
CONTROL_COLOUR = "#b45309"


def draw(workflow: Workflow, highlight: str | None = None,
         status: Mapping[str, str] | None = None) -> graphviz.Digraph:
    status = status or {}
    dot = graphviz.Digraph(
        name=workflow.name,
        graph_attr={"rankdir": "LR", "compound": "true", "fontname": FONT, "labelloc": "t", "fontsize": "12",
                    "label": f"workflow {workflow.name} (project {workflow.project})", "newrank": "true",
                    "nodesep": "0.25", "ranksep": "0.45"},
        node_attr={"fontname": FONT, "fontsize": "10", "style": "filled", "height": "0.35"},
        edge_attr={"fontname": FONT, "fontsize": "9", "arrowsize": "0.7"})
    ids: dict[tuple[str, str], str] = {}
    anchors: dict[str, str] = {}
    for j, job in enumerate(workflow.jobs.values()):
        with dot.subgraph(name=f"cluster_{j}") as cluster:
            cluster.attr(label=_job_label(job, status.get(job.name)), **_cluster_style(job.name, highlight,
                                                                                       status.get(job.name)))
            for node in job.nodes:
                node_id = ids[(job.name, node.name)] = f"n{len(ids)}"
                cluster.node(node_id, _node_label(node.name, node.kind, node.dataset, node.model),
                             tooltip=f"{node.kind} in job {job.name}", **NODE_STYLES.get(node.kind, {}))
            if not job.nodes:
                ids[(job.name, "")] = node_id = f"n{len(ids)}"
                cluster.node(node_id, "(no nodes)", shape="plaintext", style="")
            anchors[job.name] = ids[(job.name, job.nodes[0].name if job.nodes else "")]
            for node in job.nodes:
                for source, _index in node.inputs:
                    dot.edge(ids[(job.name, source)], ids[(job.name, node.name)])
    _draw_dataset_handoffs(dot, workflow, ids)
    clusters = {name: f"cluster_{j}" for j, name in enumerate(workflow.jobs)}
    _draw_control_edges(dot, workflow, ids, anchors, clusters)
    return dot


def _job_label(job: Job, state: str | None) -> str:
    facts = [job.engine, f"parallelism {job.parallelism}"]
    if job.streaming:
        facts.append("streaming")
    if job.platform != "local":
        facts.append(f"platform {job.platform}")
    facts += [f"{key} {job.properties[key]}" for key in ("workers", "ps") if key in job.properties]
    label = f"{job.name}\n{' · '.join(facts)}"
    return f"{label}\n[{state}]" if state else label


def _cluster_style(name: str, highlight: str | None, state: str | None) -> dict[str, str]:
    style = {"style": "rounded,filled", "fillcolor": STATUS_COLOURS.get(state or "", "#f7f7f7"),
             "color": "#9aa5b1", "penwidth": "1", "fontsize": "11"}
    if name == highlight:
        style.update(color="#d97706", penwidth="3")
        if not state:
            style["fillcolor"] = "#fff7e6"
    return style


def _node_label(name: str, kind: str, dataset: object, model: str | None) -> str:
    """The node's name, plus what it does when the name does not already say it."""
    if kind in ("read_dataset", "write_dataset"):
        detail = f"{kind.split('_')[0]} {dataset.name}"  # type: ignore[attr-defined]
    elif model:
        detail = f"{'validate' if kind == 'model_validate' else kind.split('_')[0]} {model}"
    else:
        detail = "" if kind == "transform" else kind.replace("_", " ")
    return name if not detail or detail.replace(" ", "_") == name else f"{name}\n{detail}"


def _draw_dataset_handoffs(dot: graphviz.Digraph, workflow: Workflow, ids: dict[tuple[str, str], str]) -> None:
    writers: dict[str, list[tuple[str, str]]] = {}
    for job in workflow.jobs.values():
        for node in job.nodes:
            if node.kind == "write_dataset" and node.dataset is not None:
                writers.setdefault(node.dataset.name, []).append((job.name, node.name))
    for job in workflow.jobs.values():
        for node in job.nodes:
            if node.kind != "read_dataset" or node.dataset is None:
                continue
            for writer in writers.get(node.dataset.name, ()):
                if writer[0] != job.name:
                    dot.edge(ids[writer], ids[(job.name, node.name)], color="#7a8ca3", penwidth="1.4",
                             tooltip=f"dataset {node.dataset.name}")


def _draw_control_edges(dot: graphviz.Digraph, workflow: Workflow, ids: dict[tuple[str, str], str],
                        anchors: dict[str, str], clusters: dict[str, str]) -> None:
    style = {"style": "dashed", "color": CONTROL_COLOUR, "fontcolor": CONTROL_COLOUR}
    extra = 0

    def new_id() -> str:
        nonlocal extra
        extra += 1
        return f"c{extra}"

    model_ids: dict[str, str] = {}
    for edge in workflow.control_edges:
        if edge.job not in anchors:
            continue
        target = {"lhead": clusters[edge.job]}
        if edge.upstream is not None and edge.upstream in anchors:
            dot.edge(anchors[edge.upstream], anchors[edge.job], label=edge.label, ltail=clusters[edge.upstream],
                     **target, **style)
        elif edge.model is not None:
            if edge.model not in model_ids:
                model_ids[edge.model] = new_id()
                dot.node(model_ids[edge.model], f"model {edge.model}", shape="hexagon", fillcolor="#e6f6e6")
                for job in workflow.jobs.values():
                    for node in job.nodes:
                        if node.kind == "train" and node.model == edge.model:
                            dot.edge(ids[(job.name, node.name)], model_ids[edge.model], color="#7a8ca3")
            dot.edge(model_ids[edge.model], anchors[edge.job], label=edge.label, **target, **style)
        else:
            events = edge.condition.events
            if len(events) == 1:
                event_id = new_id()
                dot.node(event_id, f"event\n{events[0].describe()}", shape="note", fillcolor="#fef3c7")
                dot.edge(event_id, anchors[edge.job], label=edge.action.value, **target, **style)
                continue
            join_id = new_id()
            dot.node(join_id, edge.condition.mode, shape="circle", fillcolor="#fef3c7", fontsize="8")
            for event in events:
                event_id = new_id()
                dot.node(event_id, f"event\n{event.describe()}", shape="note", fillcolor="#fef3c7")
                dot.edge(event_id, join_id, **style)
            dot.edge(join_id, anchors[edge.job], label=edge.action.value, **target, **style)
