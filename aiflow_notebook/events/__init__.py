"""The event bus: a durable ZeroMQ notification service with replay, idempotent send and CURVE auth.

    from aiflow_notebook.events import Event, EventClient, EventServer

    with EventServer("sqlite:///events.db", "tcp://127.0.0.1:0") as server:
        client = EventClient(server.url)
        stored = client.send_event(Event("model.ctr", "v3", event_type="MODEL_VALIDATED"))
        listener = client.listen("model.ctr", since_version=0, callback=print)

See docs/events.md (concepts, guarantees, wire protocol) and DESIGN §4.2 for the contract. Importing this
package imports pyzmq; ``import aiflow_notebook`` does not import it.
"""

from aiflow_notebook.events.auth import CurveAuth, create_client_keys, create_server_keys
from aiflow_notebook.events.client import EventClient, default_event_url
from aiflow_notebook.events.errors import (
    CurveKeyError,
    EventError,
    EventRequestError,
    EventServerError,
    EventServerUnavailableError,
    EventTooLargeError,
    InvalidEventError,
    ProtocolError,
)
from aiflow_notebook.events.event import Event, EventFilter
from aiflow_notebook.events.listener import Listener
from aiflow_notebook.events.publisher import EventBusPublisher
from aiflow_notebook.events.server import EventServer

__all__ = [
    "CurveAuth",
    "CurveKeyError",
    "Event",
    "EventBusPublisher",
    "EventClient",
    "EventError",
    "EventFilter",
    "EventRequestError",
    "EventServer",
    "EventServerError",
    "EventServerUnavailableError",
    "EventTooLargeError",
    "InvalidEventError",
    "Listener",
    "ProtocolError",
    "create_client_keys",
    "create_server_keys",
    "default_event_url",
]
