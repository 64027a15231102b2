"""Who may command a scheduler: anyone who reaches its bus, unless ``authorize`` is set.

A CURVE server sets ``authorize`` (its list of admitted clients): the bus stores the authenticated
client's name as an event's sender, and a submission, a stop, a restart or a change of schedules from a
sender it does not admit is refused. Listing schedules and triggers is open to anyone on the bus.
"""

from __future__ import annotations

from collections.abc import Callable

from aiflow_notebook.events import Event


class Admission:
    def __init__(self) -> None:
        self.authorize: Callable[[str | None], bool] | None = None

    def admits(self, event: Event) -> bool:
        return self.authorize is None or self.authorize(event.sender)
