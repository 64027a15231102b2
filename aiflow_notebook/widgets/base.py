"""What every panel shares: a VBox of ipywidgets whose state lives in traits, a bus follower, and a
plain HTML/text fallback for viewers without widgets (nbviewer, GitHub, a saved notebook)."""

from __future__ import annotations

import html
import threading
from datetime import UTC, datetime
from typing import Any

import ipywidgets as widgets

from aiflow_notebook.widgets.follow import Follower


class Panel(widgets.VBox):
    """Base of the panels: ``close()`` stops the follower; the display bundle carries a fallback."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._lock = threading.RLock()  # the painter thread and button callbacks both change the state
        self._follower: Follower | None = None
        self.add_class("aiflow-panel")

    # -- following the bus ---------------------------------------------------------------------------------

    def _follow(self, keys: Any, since_version: int, *, event_type: str | None = None, tick: bool = False) -> None:
        self._unfollow()
        self._follower = Follower(self, keys, since_version, self._apply_locked, event_type=event_type,
                                  tick=self._tick_locked if tick else None).start()

    def _unfollow(self) -> None:
        if self._follower is not None:
            self._follower.stop()
            self._follower = None

    def _apply_locked(self, batch: list) -> None:
        with self._lock:
            self._apply(batch)

    def _tick_locked(self) -> None:
        with self._lock:
            self._tick()

    def _apply(self, batch: list) -> None:
        """Take a batch of events (oldest first) into the traits; runs on the painter thread."""

    def _tick(self) -> None:
        """Periodic work while following (log tails); runs on the painter thread."""

    @property
    def following(self) -> bool:
        """Whether the panel still follows the bus."""
        return self._follower is not None and self._follower.running

    def threads(self) -> list[threading.Thread]:
        return self._follower.threads() if self._follower is not None else []

    def close(self) -> None:
        """Stop following the bus, then close the widget and its children."""
        self._unfollow()
        for child in self.children:
            _close_tree(child)
        super().close()

    # -- display -------------------------------------------------------------------------------------------

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = dict(super()._repr_mimebundle_(**kwargs) or {})
        with self._lock:
            bundle["text/html"] = self._fallback_html()
            bundle["text/plain"] = self._fallback_text()
        return bundle

    def _fallback_html(self) -> str:
        return f"<pre>{html.escape(self._fallback_text())}</pre>"

    def _fallback_text(self) -> str:
        return f"<{type(self).__name__}>"


def _close_tree(widget: widgets.Widget) -> None:
    """Close a widget and every widget inside it (a Box's ``close`` leaves its children open)."""
    for child in getattr(widget, "children", ()):
        _close_tree(child)
    widget.close()


def svg_body(svg: str | None) -> str:
    """SVG text without its XML prologue, ready to sit inside HTML."""
    if not svg:
        return "<em>graphviz's dot is not installed: no picture</em>"
    start = svg.find("<svg")
    return svg[start:] if start >= 0 else svg


def iso_time(ms: int | None) -> str | None:
    """Milliseconds since the epoch as ISO 8601 (UTC), as JSON can carry it."""
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A small HTML table, every cell escaped."""
    head = "".join(f"<th style='text-align:left;padding:2px 8px'>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td style='padding:2px 8px'>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table style='border-collapse:collapse;font-size:12px'><tr>{head}</tr>{body}</table>"
