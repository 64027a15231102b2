"""Rules whose condition is user code (``af.Condition``): filters pick the events, ``is_met`` decides.

A :class:`CustomRule` behaves like a :class:`~aiflow_notebook.scheduler.rules.Rule` for the scheduler:
``on_event`` returns whether it fires, and its ``met`` is plain JSON — here ``[value states]``, the
condition's :class:`~aiflow_notebook.sdk.conditions.ValueState` values by name — committed with the rule
states, the actions and the cursor in one transaction. ``on_event`` never changes ``met`` in place (it
replaces the dict), so the scheduler's evaluate-on-a-copy keeps the committed state intact until the
commit succeeds.

The condition object is unpickled by :func:`bind` only from a payload the caller read from its own
verified blob store; an unbound rule refuses to evaluate.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Any

from aiflow_notebook.scheduler.rules import matches
from aiflow_notebook.sdk.conditions import ConditionContext, load_condition

log = logging.getLogger(__name__)


@dataclass
class CustomRule:
    job: str
    action: str
    mode: str
    conditions: list[dict[str, str]]  # the event filters
    met: list[dict[str, Any]]  # [value states]
    name: str = "Condition"
    condition: Any = field(default=None, compare=False, repr=False)  # the unpickled af.Condition, once bound

    @classmethod
    def from_edge(cls, edge: dict[str, Any], state: list | None = None) -> CustomRule:
        data = edge["condition"]
        return cls(job=edge["job"], action=edge["action"], mode=data["mode"],
                   conditions=[dict(c) for c in data["events"]], met=list(state) if state else [{}],
                   name=data.get("name", "Condition"))

    def on_event(self, event: Any) -> bool:
        """Ask the condition about ``event`` if a filter matches; its state changes are kept in ``met``."""
        if not any(matches(condition, event) for condition in self.conditions):
            return False
        if self.condition is None:
            raise RuntimeError(f"custom condition {self.name} was not loaded from the verified workflow payload")
        states = copy.deepcopy(self.met[0]) if self.met else {}
        try:
            fired = bool(self.condition.is_met(event, ConditionContext(states)))
        except Exception:  # user code: a failing condition is not met and changes no state
            log.exception("custom condition %s failed on event %s (%s); not met", self.name, event.version, event.key)
            return False
        self.met = [states]
        return fired

    def keys(self) -> set[str]:
        return {c["key"] for c in self.conditions}


def bind(rules: list, edges: list[dict[str, Any]]) -> None:
    """Give the custom rules among ``rules`` their condition objects, unpickled from ``edges`` — the control
    edges of a workflow read from the scheduler's own verified blob store, in the same order."""
    for rule, edge in zip(rules, edges, strict=False):
        if isinstance(rule, CustomRule) and rule.condition is None:
            rule.condition = load_condition(edge["condition"])
