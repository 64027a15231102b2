"""The framework layer: AM, node runner, state machine, child process, codec, channel, address book.

Nothing here imports PyFlink, PyTorch or TensorFlow.
"""

from dl_on_flink.framework.address_book import (
    AddressBook,
    BusAddressBook,
    FileAddressBook,
    default_address_book,
)
from dl_on_flink.framework.cluster import ClusterConfig
from dl_on_flink.framework.codec import FieldType, RowCodec, Schema
from dl_on_flink.framework.context import Context
from dl_on_flink.framework.state_machine import AMStateMachine, ClusterState
from dl_on_flink.framework.status import StatusEvent, logging_publisher

__all__ = [
    "AMStateMachine",
    "AddressBook",
    "BusAddressBook",
    "ClusterConfig",
    "ClusterState",
    "Context",
    "FieldType",
    "FileAddressBook",
    "RowCodec",
    "Schema",
    "StatusEvent",
    "default_address_book",
    "logging_publisher",
]
