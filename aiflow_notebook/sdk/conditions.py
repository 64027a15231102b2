"""Conditions: what makes a control edge fire. Event conditions, their combinations, and custom conditions.

- An :class:`EventCondition` matches events by key, value, type, namespace and sender (``"*"`` matches
  anything). ``value_condition=EQUALS`` needs the event's value to equal ``value``; ``UPDATED`` fires on
  any new event for the key, whatever its value. ``life=ONCE`` (default) means an event is consumed by
  the action it triggers, so the next action needs a new event; ``REPEATED`` means a matched event keeps
  counting for later evaluations too.
- :class:`MeetAll` fires when every condition has a matching event, :class:`MeetAny` when one has.
- A custom :class:`Condition`: user code decides whether an event fires a rule, with state kept between
  events (below).

In the spirit of AI Flow's ``Condition``: subclass :class:`Condition`, say which events it looks at
(``keys``, ``event_type``, ``namespace``; ``"*"`` matches anything) and implement
``is_met(event, context)``. ``context.get_state(name)`` (or an :class:`ValueStateDescriptor`) gives a
:class:`ValueState` (``value()``, ``update(v)``, ``clear()``) that the scheduler commits in the same
transaction as the rule's state and the version of the event — so a crash neither loses an update nor
applies one twice. Values must be JSON (numbers, strings, lists, dicts, None): the state is stored as
JSON, never pickled, so nothing but the condition itself (from the verified workflow payload) is
unpickled by the scheduler.

Use one in a control edge (``af.action_on_condition(job, MyCondition(...), action=...)`` or
``af.action_on_events(job, condition=MyCondition(...))``) or a workflow trigger
(``af.add_workflow_trigger(workflow, MyCondition(...))``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any

from aiflow_notebook.core.errors import InvalidArgumentError
from aiflow_notebook.core.vocabulary import DEFAULT_NAMESPACE
from aiflow_notebook.core.vocabulary import WILDCARD as ANY

CUSTOM = "CUSTOM"  # the ``mode`` of a custom condition in a control edge's plain form


class EventLife(StrEnum):
    ONCE = "ONCE"
    REPEATED = "REPEATED"


class ValueCondition(StrEnum):
    EQUALS = "EQUALS"
    UPDATED = "UPDATED"


ONCE, REPEATED = EventLife.ONCE, EventLife.REPEATED
EQUALS, UPDATED = ValueCondition.EQUALS, ValueCondition.UPDATED


@dataclass(frozen=True)
class EventCondition:
    """Which events count: all fields must match (``"*"`` matches anything)."""

    key: str
    value: str = ANY
    event_type: str = ANY
    namespace: str = DEFAULT_NAMESPACE
    sender: str = ANY
    value_condition: ValueCondition = ValueCondition.EQUALS
    life: EventLife = EventLife.ONCE

    def __post_init__(self) -> None:
        for name in ("key", "value", "event_type", "namespace", "sender"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise InvalidArgumentError(f"event condition on key {self.key!r}: {name} must be a non-empty "
                                           f"string ('*' for any), got {getattr(self, name)!r}")
        object.__setattr__(self, "value_condition", choice(ValueCondition, self.value_condition, "value_condition"))
        object.__setattr__(self, "life", choice(EventLife, self.life, "life"))

    def to_dict(self) -> dict[str, str]:
        return {"key": self.key, "value": self.value, "event_type": self.event_type, "namespace": self.namespace,
                "sender": self.sender, "value_condition": self.value_condition.value, "life": self.life.value}

    def describe(self) -> str:
        """Short text: ``key=value``, ``key updated`` or ``key``, then ``(event type)`` when one is set."""
        if self.value_condition is ValueCondition.UPDATED:
            text = f"{self.key} updated"
        else:
            text = f"{self.key}={self.value}" if self.value != ANY else self.key
        return f"{text} ({self.event_type})" if self.event_type != ANY else text


@dataclass(frozen=True, init=False)
class _EventsCondition:
    events: tuple[EventCondition, ...]
    mode = ""

    def __init__(self, *events: EventCondition):
        if len(events) == 1 and isinstance(events[0], list | tuple):
            events = tuple(events[0])
        if not events or not all(isinstance(e, EventCondition) for e in events):
            raise InvalidArgumentError(f"{type(self).__name__}(...) needs one or more af.EventCondition(...), "
                                       f"got {events!r}")
        object.__setattr__(self, "events", tuple(events))

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "events": [event.to_dict() for event in self.events]}


@dataclass(frozen=True, init=False)
class MeetAll(_EventsCondition):
    """Met when every one of its event conditions has a matching event."""

    mode = "ALL"


@dataclass(frozen=True, init=False)
class MeetAny(_EventsCondition):
    """Met when any one of its event conditions has a matching event."""

    mode = "ANY"


@dataclass(frozen=True)
class ValueStateDescriptor:
    """Names one value state of a condition (AI Flow's name for it)."""

    name: str


class ValueState:
    """One named value of a condition's state, as seen by one ``is_met`` call."""

    def __init__(self, states: dict[str, Any], name: str):
        self._states, self._name = states, name

    def value(self) -> Any:
        """The stored value, or None."""
        return self._states.get(self._name)

    def update(self, value: Any) -> None:
        """Store ``value`` (JSON); it is committed with the rule's state once the event is decided."""
        try:
            self._states[self._name] = json.loads(json.dumps(value))
        except (TypeError, ValueError) as exc:
            raise InvalidArgumentError(f"value state {self._name!r}: {value!r} is not JSON ({exc}); store numbers, "
                                       "strings, lists or dicts") from None

    def clear(self) -> None:
        self._states.pop(self._name, None)


class ConditionContext:
    """What ``is_met`` gets besides the event: its value states."""

    def __init__(self, states: dict[str, Any]):
        self._states = states

    def get_state(self, descriptor: ValueStateDescriptor | str) -> ValueState:
        name = descriptor.name if isinstance(descriptor, ValueStateDescriptor) else descriptor
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"get_state(...) needs a state name, got {descriptor!r}")
        return ValueState(self._states, name)


class Condition:
    """Base class of user-defined conditions: implement ``is_met(event, context) -> bool``.

    ``keys`` (a key or a list; AI Flow's ``expect_event_keys`` works too), ``event_type`` and
    ``namespace`` select the events ``is_met`` is asked about. The object is pickled with the workflow
    (like a node's function), so it may hold settings; its *state* belongs in ``context.get_state``.
    """

    def __init__(self, keys: str | Iterable[str] = ANY, event_type: str = ANY, namespace: str = ANY,
                 expect_event_keys: Iterable[str] | None = None):
        chosen = expect_event_keys if expect_event_keys is not None else keys
        self.keys = (chosen,) if isinstance(chosen, str) else tuple(chosen)
        self.event_type, self.namespace = event_type, namespace

    def is_met(self, event: Any, context: ConditionContext) -> bool:
        raise NotImplementedError(f"{type(self).__name__} must implement is_met(event, context)")

    # --- what control edges and triggers need -----------------------------------------------------

    mode = CUSTOM

    @property
    def name(self) -> str:
        return type(self).__name__

    @property
    def events(self) -> tuple:
        """The event filters, as :class:`EventCondition` (for drawing)."""
        return tuple(EventCondition(key=key, event_type=getattr(self, "event_type", ANY),
                                    namespace=getattr(self, "namespace", ANY),
                                    value_condition=ValueCondition.UPDATED)
                     for key in getattr(self, "keys", (ANY,)) or (ANY,))

    def to_dict(self) -> dict[str, Any]:
        """The plain form: filters, name, code fingerprint, and the pickled object (base64)."""
        import cloudpickle

        from aiflow_notebook.sdk.capture import capture_job, fingerprint

        # the class too: its module, if local (a notebook's helper file, a test), then travels by value
        payload = capture_job(f"condition {self.name}", [], {"condition": self, "class": type(self)},
                              {"condition": f"condition {self.name}", "class": f"class {self.name}"})
        return {"mode": CUSTOM, "name": self.name, "events": [event.to_dict() for event in self.events],
                "fingerprint": fingerprint({"class": type(self), "settings": _settings(self)}),
                "payload": base64.b64encode(payload).decode("ascii"),
                "cloudpickle": cloudpickle.__version__}


class PickledCondition:
    """A custom condition read back from a workflow's plain form: its filters and name, not unpickled
    (only the scheduler unpickles it, from a payload of its own verified blob store)."""

    mode = CUSTOM

    def __init__(self, data: dict[str, Any]):
        self._data = dict(data)
        self.name = data.get("name", "Condition")

    @property
    def events(self) -> tuple:
        return tuple(EventCondition(**event) for event in self._data["events"])

    def to_dict(self) -> dict[str, Any]:
        return dict(self._data)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PickledCondition) and other._data.get("fingerprint") == self._data.get("fingerprint")

    def __hash__(self) -> int:
        return hash(self._data.get("fingerprint"))


def load_condition(data: dict[str, Any]) -> Condition:
    """Unpickle a custom condition from its plain form (runs code: only from a verified payload)."""
    from aiflow_notebook.sdk.capture import load_payload

    return load_payload(base64.b64decode(data["payload"]))["callables"]["condition"]


def _settings(condition: Condition) -> str:
    try:
        return json.dumps(vars(condition), sort_keys=True, default=repr)
    except TypeError:
        return repr(sorted(vars(condition)))


def choice(kind: type[Enum], value: Any, what: str) -> Any:
    """``value`` as a member of ``kind`` (a member, or its name in any case); else an argument error."""
    if isinstance(value, kind):
        return value
    if isinstance(value, str) and value.upper() in kind.__members__:
        return kind[value.upper()]
    raise InvalidArgumentError(f"{what} {value!r} is not one of {', '.join(kind.__members__)}")
