"""``LineageWidget``: where a model came from and who uses it (dataset → job run → model version →
serving job), drawn as a graph whose nodes can be picked to see their details; it redraws when the
model gets a new version or stage."""

from __future__ import annotations

import html
import json
from typing import Any

import ipywidgets as widgets
import traitlets

from aiflow_notebook.core.vocabulary import MODEL_EVENT_PREFIX
from aiflow_notebook.widgets.base import Panel, svg_body, table


class LineageWidget(Panel):
    """Lineage of ``model`` (one ``version``, or all); ``nodes``, ``edges`` and ``selected`` are traits."""

    model = traitlets.Unicode("").tag(sync=True)
    version = traitlets.Int(None, allow_none=True).tag(sync=True)
    nodes = traitlets.List(traitlets.Dict()).tag(sync=True)  # {key, kind, id, label, attrs}
    edges = traitlets.List(traitlets.List()).tag(sync=True)  # [src key, dst key, relation]
    selected = traitlets.Unicode("").tag(sync=True)

    def __init__(self, model: str, version: int | None = None):
        super().__init__()
        self.model, self.version = model, version
        self._picture = widgets.HTML()
        self._picker = widgets.Dropdown(options=[], description="node", layout=widgets.Layout(width="420px"))
        self._details = widgets.HTML()
        self.children = [self._picture, self._picker, self._details]
        self._picker.observe(lambda change: setattr(self, "selected", change["new"] or ""), "value")
        self.observe(lambda change: self._render_details(), "selected")
        from aiflow_notebook.events import EventClient
        from aiflow_notebook.session.submit import event_bus

        url, auth = event_bus()
        self.refresh()  # raises the model center's error for an unknown model, before following anything
        with EventClient(url, auth=auth) as client:
            latest = client.latest_version()
        self._follow(model, latest)

    def refresh(self) -> None:
        """Read the lineage again and redraw."""
        import aiflow_notebook.session.models as model_center
        from aiflow_notebook.core.rendering import render_svg

        graph = model_center.lineage(self.model, self.version)
        with self._lock:
            self._graph = graph
            self.nodes = [{"key": n.key, "kind": n.kind, "id": n.id, "label": n.label,
                           "attrs": json.loads(json.dumps(n.attrs, default=str))} for n in graph.nodes.values()]
            self.edges = [list(edge) for edge in graph.edges]
            self._picture.value = f"<div style='overflow:auto'>{svg_body(render_svg(graph.to_graphviz()))}</div>"
            self._picker.options = [(f"{n['kind'].replace('_', ' ')}: {n['label']}".replace("\n", " "), n["key"])
                                    for n in self.nodes]
            if self.selected not in {n["key"] for n in self.nodes}:
                self._picker.value = None
            self._render_details()

    def _apply(self, batch: list) -> None:
        if any(event.event_type.startswith(MODEL_EVENT_PREFIX) for event in batch):
            self.refresh()

    def _render_details(self) -> None:
        node = next((n for n in self.nodes if n["key"] == self.selected), None)
        if node is None:
            self._details.value = "<small>pick a node to see its details</small>"
            return
        rows = [["kind", node["kind"]], ["id", node["id"]], *([k, v] for k, v in node["attrs"].items())]
        rows += [[relation.replace("_", " "), other] for src, other, relation in self.edges if src == node["key"]]
        rows += [[f"{relation.replace('_', ' ')} (from)", src] for src, dst, relation in self.edges
                 if dst == node["key"]]
        self._details.value = f"<b>{html.escape(node['label'])}</b>" + table(["", ""], rows)

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        """The widget, plus the lineage drawing (SVG) and text for viewers without widgets."""
        with self._lock:
            drawing = self._graph._repr_mimebundle_()
        return {**drawing, **super()._repr_mimebundle_(**kwargs)}

    def _fallback_text(self) -> str:
        lines = [f"{src} --{relation}--> {dst}" for src, dst, relation in self.edges]
        return "\n".join([f"lineage of {self.model}", *(lines or ["(nothing recorded yet)"])])

    def _fallback_html(self) -> str:
        return self._picture.value
