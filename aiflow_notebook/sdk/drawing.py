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

from aiflow_notebook.core.vocabulary import JobState

if TYPE_CHECKING:
    from aiflow_notebook.sdk.workflow import Job, Workflow

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
STATUS_COLOURS = {JobState.INIT: "#eeeeee", JobState.STARTING: "#dbeafe", JobState.RUNNING: "#bfdbfe",
                  JobState.FINISHED: "#bbf7d0", JobState.FAILED: "#fecaca", JobState.KILLED: "#e5e7eb"}
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
    # Lines are written straight into the body: graphviz's per-attribute quoting would cost more than
    # laying the graph out (ids are generated, so only labels need quoting, done by _attrs).
    body = dot.body
    ids: dict[tuple[str, str], str] = {}
    anchors: dict[str, str] = {}
    clusters: dict[str, str] = {}
    for j, job in enumerate(workflow.jobs.values()):
        clusters[job.name] = f"cluster_{j}"
        state = status.get(job.name)
        cluster = _attrs(label=_job_label(job, state), **_cluster_style(job.name, highlight, state))
        body.append(f"subgraph cluster_{j} {{\ngraph {cluster}\n")
        for node in job.nodes:
            node_id = ids[(job.name, node.name)] = f"n{len(ids)}"
            label = _node_label(node.name, node.kind, node.dataset, node.model)
            attributes = _attrs(label=label, tooltip=f"{node.kind} in job {job.name}", **NODE_STYLES.get(node.kind, {}))
            body.append(f"{node_id} {attributes}\n")
        if not job.nodes:
            ids[(job.name, "")] = node_id = f"n{len(ids)}"
            body.append(f"{node_id} {_attrs(label='(no nodes)', shape='plaintext', style='')}\n")
        body.append("}\n")
        anchors[job.name] = ids[(job.name, job.nodes[0].name if job.nodes else "")]
        for node in job.nodes:
            target = ids[(job.name, node.name)]
            body.extend(f"{ids[(job.name, source)]} -> {target}\n" for source, _index in node.inputs)
    _draw_dataset_handoffs(body, workflow, ids)
    _draw_control_edges(body, workflow, ids, anchors, clusters)
    return dot


def _attrs(**attributes: str) -> str:
    """``[key="value" ...]``, quoted for DOT."""
    return "[" + " ".join(f"{key}={_quote(value)}" for key, value in attributes.items()) + "]"


def _quote(value: str) -> str:
    """A DOT string; a newline becomes DOT's centred line break."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


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


def _draw_dataset_handoffs(body: list[str], workflow: Workflow, ids: dict[tuple[str, str], str]) -> None:
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
                    body.append(f"{ids[writer]} -> {ids[(job.name, node.name)]} "
                                f"{_attrs(color='#7a8ca3', penwidth='1.4', tooltip=f'dataset {node.dataset.name}')}\n")


def _draw_control_edges(body: list[str], workflow: Workflow, ids: dict[tuple[str, str], str],
                        anchors: dict[str, str], clusters: dict[str, str]) -> None:
    style = {"style": "dashed", "color": CONTROL_COLOUR, "fontcolor": CONTROL_COLOUR}
    counter = iter(range(1, 1 << 30))
    trainers: dict[str, list[str]] = {}
    for job in workflow.jobs.values():
        for node in job.nodes:
            if node.kind == "train" and node.model:
                trainers.setdefault(node.model, []).append(ids[(job.name, node.name)])
    model_ids: dict[str, str] = {}

    def box(label: str, **attributes: str) -> str:
        box_id = f"c{next(counter)}"
        body.append(f"{box_id} {_attrs(label=label, **attributes)}\n")
        return box_id

    for edge in workflow.control_edges:
        if edge.job not in anchors:
            continue
        into = f"{anchors[edge.job]} {{}}\n"
        lhead = {"lhead": clusters[edge.job]}
        if edge.upstream_jobs and all(name in anchors for name in edge.upstream_jobs):
            body.extend(f"{anchors[name]} -> " + into.format(
                _attrs(label=edge.label, ltail=clusters[name], **lhead, **style)) for name in edge.upstream_jobs)
        elif edge.model is not None:
            if edge.model not in model_ids:
                model_ids[edge.model] = box(f"model {edge.model}", shape="hexagon", fillcolor="#e6f6e6")
                body.extend(f"{trainer} -> {model_ids[edge.model]} {_attrs(color='#7a8ca3')}\n"
                            for trainer in trainers.get(edge.model, ()))
            body.append(f"{model_ids[edge.model]} -> " + into.format(_attrs(label=edge.label, **lhead, **style)))
        else:
            events = edge.condition.events
            source = None if len(events) == 1 else box(edge.condition.mode, shape="circle", fillcolor="#fef3c7",
                                                          fontsize="8")
            for event in events:
                event_id = box(f"event\n{event.describe()}", shape="note", fillcolor="#fef3c7")
                if source is None:
                    source = event_id
                else:
                    body.append(f"{event_id} -> {source} {_attrs(**style)}\n")
            body.append(f"{source} -> " + into.format(_attrs(label=edge.action.value, **lhead, **style)))
