"""Errors of the event bus (all ``AIFlowError``): each message says what went wrong and what to do."""

from __future__ import annotations

from aiflow_notebook.core.errors import AIFlowError


class EventError(AIFlowError):
    """Something about the event bus went wrong."""


class InvalidEventError(EventError, ValueError):
    """An event (or a filter) has a field of the wrong type or size; nothing was sent."""


class EventTooLargeError(InvalidEventError):
    """An event is bigger than the server accepts (``max_message_bytes``)."""


class EventServerUnavailableError(EventError, TimeoutError):
    """No answer from the event server before the client's deadline (down, wrong URL or wrong CURVE key)."""


class EventRequestError(EventError):
    """The event server refused a request and said why (the message is the server's)."""


class ProtocolError(EventError):
    """A frame that does not follow the wire protocol; ``code`` names the rule it broke."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class EventServerError(EventError):
    """The event server cannot start or keep running (address in use, database taken, unsafe bind)."""


class CurveKeyError(EventError):
    """A CURVE key file is missing or unreadable, or CURVE is asked for where it cannot be used."""
