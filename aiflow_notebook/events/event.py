"""The event and the filter that selects events: the data model shared by client, server and log.

An :class:`Event` is what users send and receive. Its ``version`` and ``create_time`` are empty until the
server stores it; then ``version`` is the event's place in the one global, strictly increasing order of
the log, and ``create_time`` the server's clock (milliseconds since the epoch) at the commit.

An :class:`EventFilter` is one selection (keys, namespace, type, sender, version and time range). The
server turns it into SQL; a listener applies the very same rules in Python to live updates, so a replayed
event and a live one are selected alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from aiflow_notebook.core.vocabulary import DEFAULT_NAMESPACE, WILDCARD
from aiflow_notebook.events.errors import InvalidEventError

MAX_KEY_CHARS = 1024
MAX_NAME_CHARS = 255  # event_type, namespace, sender


@dataclass(slots=True)
class Event:
    """One event. Treat it as immutable: the client returns a new ``Event`` with ``version`` set.

    ``value`` and ``context`` are strings (serialise structured data, e.g. with ``json.dumps``).
    """

    key: str
    value: str
    event_type: str = "UNDEFINED"
    namespace: str = DEFAULT_NAMESPACE
    sender: str | None = None
    context: str | None = None
    version: int | None = None
    create_time: int | None = None  # ms since the epoch, set by the server

    @property
    def created_at(self) -> datetime | None:
        """``create_time`` as a timezone-aware UTC datetime."""
        if self.create_time is None:
            return None
        return datetime.fromtimestamp(self.create_time / 1000, tz=UTC)

    def to_dict(self) -> dict:
        return {"version": self.version, "create_time": self.create_time, "key": self.key, "value": self.value,
                "event_type": self.event_type, "namespace": self.namespace, "sender": self.sender,
                "context": self.context}


def validate_event(event: Event) -> None:
    """Raise :class:`InvalidEventError` naming the first bad field; the client calls this before sending."""
    if not isinstance(event, Event):
        raise InvalidEventError(f"expected an aiflow_notebook.events.Event, got {type(event).__name__}")
    problem = event_problem(event.key, event.value, event.event_type, event.namespace, event.sender,
                            event.context)
    if problem:
        raise InvalidEventError(problem)


def event_problem(key, value, event_type, namespace, sender, context) -> str | None:
    """What is wrong with these event fields (None: nothing). Client and server apply the same rules.

    Besides types and lengths this refuses NUL characters and unpaired surrogates: PostgreSQL cannot store
    the first, UTF-8 cannot encode the second, and one such event must not fail a whole group commit.
    """
    for field, text, limit, optional in (("key", key, MAX_KEY_CHARS, False),
                                         ("event_type", event_type, MAX_NAME_CHARS, False),
                                         ("namespace", namespace, MAX_NAME_CHARS, False),
                                         ("sender", sender, MAX_NAME_CHARS, True)):
        if text is None and optional:
            continue
        if not isinstance(text, str) or not text:
            return f"event {field} must be a non-empty string, got {text!r}"[:300]
        if text == WILDCARD:
            return f"event {field} cannot be {WILDCARD!r}: that is the wildcard of filters"
        if len(text) > limit:
            return f"event {field} is {len(text)} characters long; the limit is {limit}"
        if not _storable(text):
            return f"event {field} contains a NUL character or an unpaired surrogate, which cannot be stored"
    if not isinstance(value, str):
        return (f"event value must be a str, got {type(value).__name__} (key {key!r}); "
                "serialise structured values, e.g. json.dumps(value)")
    if not _storable(value):
        return "event value contains a NUL character or an unpaired surrogate, which cannot be stored"
    if context is not None and (not isinstance(context, str) or not _storable(context)):
        return "event context must be None or a str without NUL characters or unpaired surrogates"
    return None


def _storable(text: str) -> bool:
    if "\x00" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def to_millis(value: int | float | datetime | None, field: str) -> int | None:
    """A time bound as ms since the epoch: a datetime (naive means UTC) or a number of ms."""
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return int(value.timestamp() * 1000)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidEventError(f"{field} must be a datetime or milliseconds since the epoch, got {value!r}")
    return int(value)


@dataclass(frozen=True, slots=True)
class EventFilter:
    """A selection of events; ``None`` (or ``"*"``) in a field means "any".

    Versions select ``since_version < version <= until_version``; times select
    ``since_time <= create_time < until_time`` (ms since the epoch).
    """

    keys: frozenset[str] | None = None
    namespace: str | None = None
    event_type: str | None = None
    sender: str | None = None
    since_version: int = 0
    until_version: int | None = None
    since_time: int | None = None
    until_time: int | None = None

    @classmethod
    def build(cls, key=None, namespace=None, event_type=None, sender=None, since_version=0,
              until_version=None, since_time=None, until_time=None) -> EventFilter:
        """Normalise user arguments (a key, a list of keys or ``"*"``; datetimes) and check them."""
        return cls(
            keys=_keys(key),
            namespace=_wild(namespace, "namespace"),
            event_type=_wild(event_type, "event_type"),
            sender=_wild(sender, "sender"),
            since_version=_version(since_version, "since_version") or 0,
            until_version=_version(until_version, "until_version"),
            since_time=to_millis(since_time, "since_time"),
            until_time=to_millis(until_time, "until_time"),
        )

    def matches_row(self, row) -> bool:
        """Whether a wire row ``[version, create_time, key, value, type, namespace, sender, context]`` matches."""
        if self.keys is not None and row[2] not in self.keys:
            return False
        if self.namespace is not None and row[5] != self.namespace:
            return False
        if self.event_type is not None and row[4] != self.event_type:
            return False
        if self.sender is not None and row[6] != self.sender:
            return False
        if row[0] <= self.since_version or (self.until_version is not None and row[0] > self.until_version):
            return False
        if self.since_time is not None and row[1] < self.since_time:
            return False
        return self.until_time is None or row[1] < self.until_time

    def to_wire(self) -> dict:
        return {"keys": None if self.keys is None else sorted(self.keys), "namespace": self.namespace,
                "event_type": self.event_type, "sender": self.sender, "since_version": self.since_version,
                "until_version": self.until_version, "since_time": self.since_time,
                "until_time": self.until_time}

    @classmethod
    def from_wire(cls, data) -> EventFilter:
        """The server's side of :meth:`to_wire`; anything malformed raises :class:`InvalidEventError`."""
        if not isinstance(data, dict):
            raise InvalidEventError("a filter must be a JSON object")
        keys = data.get("keys")
        if keys is not None and not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
            raise InvalidEventError("filter keys must be a list of strings or null")
        return cls.build(key=keys, namespace=data.get("namespace"), event_type=data.get("event_type"),
                         sender=data.get("sender"), since_version=data.get("since_version", 0),
                         until_version=data.get("until_version"), since_time=data.get("since_time"),
                         until_time=data.get("until_time"))


def _keys(key: str | Iterable[str] | None) -> frozenset[str] | None:
    if key is None or key == WILDCARD:
        return None
    if isinstance(key, str):
        keys = (key,)
    else:
        try:
            keys = tuple(key)
        except TypeError:
            raise InvalidEventError(f"key must be a string, a list of strings or '*', got {key!r}") from None
    if not all(isinstance(k, str) and k for k in keys):
        raise InvalidEventError(f"every key must be a non-empty string, got {list(keys)!r}")
    if WILDCARD in keys:
        return None
    if not keys:
        raise InvalidEventError("an empty list of keys selects nothing; pass '*' (or None) for all keys")
    return frozenset(keys)


def _wild(value: str | None, field: str) -> str | None:
    if value is None or value == WILDCARD:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidEventError(f"{field} must be a non-empty string, '*' or None, got {value!r}")
    return value


def is_count(value, least: int = 0) -> bool:
    """Whether ``value`` is an integer of at least ``least`` (a bool is not): a version, a limit."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _version(value, field: str) -> int | None:
    if value is None:
        return None
    if not is_count(value):
        raise InvalidEventError(f"{field} must be a non-negative integer, got {value!r}")
    return value
