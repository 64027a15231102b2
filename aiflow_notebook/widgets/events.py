"""``EventPanel``: the newest events on the bus, live, filtered by key, type and count."""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets
import traitlets

from aiflow_notebook.widgets.base import Panel, iso_time, table

SCAN = 5_000  # on opening, the panel looks this many versions back for the newest matching events
FIELDS = ("version", "key", "value", "event_type", "namespace", "sender", "create_time")


def event_dict(event: Any) -> dict[str, Any]:
    """One event as the panel keeps it (JSON-ready; ``create_time`` ISO 8601 UTC)."""
    return {"version": event.version, "key": event.key, "value": event.value, "event_type": event.event_type,
            "namespace": event.namespace, "sender": event.sender, "create_time": iso_time(event.create_time)}


class EventPanel(Panel):
    """Newest events first (trait ``events``), at most ``limit``; ``key`` and ``event_type`` filter
    (empty or ``*``: all). Changing a filter, in code or in the panel's boxes, starts over."""

    events = traitlets.List(traitlets.Dict()).tag(sync=True)
    key = traitlets.Unicode("").tag(sync=True)
    event_type = traitlets.Unicode("").tag(sync=True)
    limit = traitlets.Int(50).tag(sync=True)

    def __init__(self, key: str | None = None, event_type: str | None = None, limit: int = 50):
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        super().__init__()
        self._key_box = widgets.Text(value=key or "", description="key", placeholder="* (all)",
                                     continuous_update=False, layout=widgets.Layout(width="260px"))
        self._type_box = widgets.Text(value=event_type or "", description="type", placeholder="* (all)",
                                      continuous_update=False, layout=widgets.Layout(width="260px"))
        self._limit_box = widgets.BoundedIntText(value=limit, min=1, max=10_000, description="limit",
                                                 layout=widgets.Layout(width="160px"))
        self._table = widgets.HTML()
        self.children = [widgets.HTML("<b>AI Flow events</b> (newest first, live)"),
                         widgets.HBox([self._key_box, self._type_box, self._limit_box]), self._table]
        with self.hold_trait_notifications():
            self.key, self.event_type, self.limit = key or "", event_type or "", limit
        for box, name in ((self._key_box, "key"), (self._type_box, "event_type"), (self._limit_box, "limit")):
            box.observe(lambda change, name=name: setattr(self, name, change["new"]), "value")
        self.observe(self._restart, ["key", "event_type", "limit"])
        self._restart()

    def _restart(self, change: Any = None) -> None:
        with self._lock:
            self._key_box.value, self._type_box.value, self._limit_box.value = self.key, self.event_type, self.limit
            self.events = []
            self._render()
        from aiflow_notebook.events import EventClient
        from aiflow_notebook.session.submit import event_bus

        url, auth = event_bus()
        with EventClient(url, auth=auth) as client:  # a short-lived client of the calling thread
            latest = client.latest_version()
        self._follow(self.key or "*", max(0, latest - SCAN), event_type=self.event_type or None)

    def _apply(self, batch: list) -> None:
        newest = [event_dict(event) for event in reversed(batch[-self.limit:])]  # a burst: only what shows
        self.events = (newest + list(self.events))[: self.limit]
        self._render()

    def _render(self) -> None:
        self._table.value = table(list(FIELDS), [[e[f] for f in FIELDS] for e in self.events]) if self.events \
            else "<em>no events yet</em>"

    def _fallback_text(self) -> str:
        head = f"AI Flow events (key {self.key or '*'}, type {self.event_type or '*'}, newest first)"
        lines = [f"v{e['version']} {e['key']} = {e['value']} ({e['event_type']}, {e['sender']})" for e in self.events]
        return "\n".join([head, *lines] if lines else [head, "(no events yet)"])

    def _fallback_html(self) -> str:
        return f"<b>AI Flow events</b>{self._table.value}"
