"""``ModelPanel``: models, their versions, stages and metrics; buttons move a version to another stage
through the model center API (which publishes ``MODEL_<STAGE>``, so rules such as "restart serve when a
version is validated" fire as they would from code)."""

from __future__ import annotations

import html
import json
from typing import Any

import ipywidgets as widgets
import traitlets

from aiflow_notebook.core.vocabulary import MODEL_EVENT_PREFIX, Stage
from aiflow_notebook.widgets.base import Panel, table

BUTTONS = {Stage.VALIDATED: ("Validate", "success"), Stage.DEPLOYED: ("Deploy", "primary"),
           Stage.DEPRECATED: ("Deprecate", "warning")}


class ModelPanel(Panel):
    """Versions of ``model`` (every model when None), newest first, in trait ``versions``; live."""

    model = traitlets.Unicode("").tag(sync=True)
    versions = traitlets.List(traitlets.Dict()).tag(sync=True)  # {model, version, stage, metrics, uri, ...}
    message = traitlets.Unicode("").tag(sync=True)  # what the last button did

    def __init__(self, model: str | None = None):
        super().__init__()
        self.model = model or ""
        self._rows = widgets.VBox()
        self._row_widgets: dict[tuple[str, int], tuple[widgets.HTML, dict[Stage, widgets.Button]]] = {}
        self._message = widgets.HTML()
        self.children = [widgets.HTML(f"<b>AI Flow models</b>{': ' + html.escape(self.model) if self.model else ''}"),
                         self._rows, self._message]
        from aiflow_notebook.session.submit import event_bus

        event_bus()  # the bus first: the model center of this process publishes onto it from now on
        self.refresh()
        self._follow(self.model or "*", self._latest())

    def set_stage(self, model: str, version: int, stage: Stage | str) -> str:
        """Move ``model`` version ``version`` to ``stage`` (what the buttons call)."""
        import aiflow_notebook.session.models as model_center

        updated = model_center.update_model_version(model, version, stage)
        with self._lock:
            self.refresh()
        return f"{model} v{version} is {updated.stage.value}"

    def refresh(self) -> None:
        """Read the versions from the model center again."""
        import aiflow_notebook.session.models as model_center
        from aiflow_notebook.core.errors import AIFlowError
        from aiflow_notebook.meta import default_store

        names = [self.model] if self.model else [m.name for m in default_store().list_models()]
        found = []
        for name in names:
            try:
                found += [v.to_dict() for v in model_center.list_model_versions(name)]
            except AIFlowError:
                continue  # not registered yet: it appears with its first version
        versions = sorted(found, key=lambda v: (v["model"], -v["version"]))
        with self._lock:
            self._render(versions)  # the rows first: whoever sees a version in the trait finds its buttons
            self.versions = versions

    def _apply(self, batch: list) -> None:
        if any(event.event_type.startswith(MODEL_EVENT_PREFIX) for event in batch):
            self.refresh()

    def _latest(self) -> int:
        from aiflow_notebook.events import EventClient
        from aiflow_notebook.session.submit import event_bus

        url, auth = event_bus()
        with EventClient(url, auth=auth) as client:
            return client.latest_version()

    def _render(self, versions: list[dict[str, Any]]) -> None:
        from aiflow_notebook.meta.models import ALLOWED_TRANSITIONS

        rows = []
        for data in versions:
            key = (data["model"], data["version"])
            if key not in self._row_widgets:
                self._row_widgets[key] = self._new_row(*key)
            label, buttons = self._row_widgets[key]
            stage = Stage(data["stage"])
            label.value = (f"<span style='display:inline-block;min-width:260px'><b>{html.escape(data['model'])}</b> "
                           f"v{data['version']} · {stage.value} · <small>{html.escape(_metrics(data['metrics']))}"
                           "</small></span>")
            for target, button in buttons.items():
                button.disabled = target not in ALLOWED_TRANSITIONS[stage]
            rows.append(widgets.HBox([label, *buttons.values()]))
        self._rows.children = rows or [widgets.HTML("<em>no model versions yet</em>")]

    def _new_row(self, model: str, version: int) -> tuple[widgets.HTML, dict[Stage, widgets.Button]]:
        buttons = {}
        for stage, (label, style) in BUTTONS.items():
            button = widgets.Button(description=label, button_style=style, layout=widgets.Layout(width="90px"),
                                    tooltip=f"move {model} v{version} to {stage.value} (publishes MODEL_{stage.value})")
            button.on_click(lambda _, stage=stage: self._click(model, version, stage))
            buttons[stage] = button
        return widgets.HTML(), buttons

    def _click(self, model: str, version: int, stage: Stage) -> None:
        try:
            self.message = self.set_stage(model, version, stage)
        except Exception as err:  # noqa: BLE001 - shown in the panel: a callback's traceback goes nowhere
            self.message = f"failed: {err}"
        self._message.value = f"<small>{html.escape(self.message)}</small>"

    def _fallback_text(self) -> str:
        lines = [f"{v['model']} v{v['version']}: {v['stage']} {_metrics(v['metrics'])}" for v in self.versions]
        return "\n".join(["AI Flow models", *(lines or ["(no model versions yet)"])])

    def _fallback_html(self) -> str:
        return "<b>AI Flow models</b>" + table(["model", "version", "stage", "metrics"], [
            [v["model"], v["version"], v["stage"], _metrics(v["metrics"])] for v in self.versions])


def _metrics(metrics: Any) -> str:
    return json.dumps(metrics, sort_keys=True) if metrics else ""
