"""ClusterConfig: which node types a cluster has, how many of each, the entry they run, and its knobs.

Frameworks subclass it (``PyTorchClusterConfig``, ``TFClusterConfig``) to add builder methods, the hooks
their child processes run around the entry (:mod:`.hooks`) and their AM state machine (:mod:`.state_machine`).
A config is immutable once built and travels, pickled, to the operators and the child processes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from dl_on_flink.errors import ConfigError
from dl_on_flink.framework.address_book import AddressBook
from dl_on_flink.framework.context import Context, Entry
from dl_on_flink.framework.hooks import NodeHooks
from dl_on_flink.framework.state_machine import AMStateMachine
from dl_on_flink.framework.status import StatusPublisher, logging_publisher

B = TypeVar("B", bound="ClusterConfig.Builder")

DEFAULT_MAX_FAILOVER = 3


@dataclass(frozen=True)
class FileEntry:
    """An entry given as a file and a function name: loaded in the child, then called with the Context."""

    path: str
    func_name: str

    def __call__(self, ctx: Context) -> Any:
        module_name = "dl_on_flink_entry_" + hashlib.sha256(self.path.encode()).hexdigest()[:12]
        module = sys.modules.get(module_name)
        if module is None:
            spec = importlib.util.spec_from_file_location(module_name, self.path)
            if spec is None or spec.loader is None:
                raise ConfigError(f"cannot load entry file {self.path!r}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            spec.loader.exec_module(module)
        try:
            function = getattr(module, self.func_name)
        except AttributeError:
            raise ConfigError(f"entry file {self.path!r} has no function {self.func_name!r}") from None
        return function(ctx)


class ClusterConfig:
    """An immutable description of a deep-learning cluster (build it with :meth:`new_builder`).

    Properties understood by the framework (all optional, strings like every property):

    - ``bind_host`` (``127.0.0.1``): the address the AM and the nodes bind and advertise.
    - ``num_threads`` (``1``): OMP/MKL/torch/TF thread counts in each child (a shared 2-core box needs 1).
    - ``heartbeat_interval`` (``0.5``) / ``heartbeat_timeout`` (``30``): seconds between node heartbeats,
      and silence after which the AM counts the node as lost.
    - ``rendezvous_timeout`` (``180``): seconds for all nodes of an attempt to register.
    - ``stop_grace`` (``15``): seconds the AM waits, once the cluster is done, for every node to hear it.
    - ``progress_timeout`` (``600``; ``0`` turns it off): seconds without progress after which a running
      node counts as stuck and fails (see :mod:`.am` for what counts as progress).
    - ``replay_input_on_failover`` (``false``; always on when ``max_epoch > 1``): spill the input to local
      disk so that a restarted attempt sees the whole input again.
    """

    framework = "generic"
    input_node_type = "worker"

    def __init__(
        self,
        node_type_count_map: Mapping[str, int],
        properties: Mapping[str, str],
        entry: Entry | None,
        max_failover: int = DEFAULT_MAX_FAILOVER,
        status_publisher: StatusPublisher = logging_publisher,
        address_book: AddressBook | None = None,
    ) -> None:
        if entry is None or not callable(entry):
            raise ConfigError("set_node_entry(fn) is required: the function each node runs")
        if isinstance(entry, FileEntry) and not os.path.isfile(entry.path):
            raise ConfigError(f"entry file {entry.path!r} (for function {entry.func_name!r}) does not exist")
        if not node_type_count_map:
            raise ConfigError("a cluster needs at least one node type")
        for node_type, count in node_type_count_map.items():
            if not isinstance(count, int) or count < 0:
                raise ConfigError(f"node type {node_type!r}: count must be a non-negative int, got {count!r}")
        if not isinstance(max_failover, int) or max_failover < 0:
            raise ConfigError(f"max_failover must be a non-negative int, got {max_failover!r}")
        self._node_type_count_map = {k: v for k, v in node_type_count_map.items() if v > 0}
        self._properties = {str(k): str(v) for k, v in properties.items()}
        self._entry = entry
        self._max_failover = max_failover
        self._status_publisher = status_publisher
        self._address_book = address_book

    @classmethod
    def new_builder(cls) -> ClusterConfig.Builder:
        return cls.Builder(cls)

    # --- read side ---
    def get_node_type_count_map(self) -> dict[str, int]:
        return dict(self._node_type_count_map)

    def get_node_type_cnt_map(self) -> dict[str, int]:
        """dl-on-flink's name for :meth:`get_node_type_count_map`."""
        return self.get_node_type_count_map()

    def get_entry_python_file_path(self) -> str:
        """The file that defines the entry function (dl-on-flink shipped entries as file + function)."""
        if isinstance(self._entry, FileEntry):
            return self._entry.path
        return inspect.getfile(self._entry)

    def get_entry_func_name(self) -> str:
        return self._entry.func_name if isinstance(self._entry, FileEntry) else self._entry.__name__

    def get_node_count(self, node_type: str) -> int:
        return self._node_type_count_map.get(node_type, 0)

    def get_properties(self) -> dict[str, str]:
        return dict(self._properties)

    def get_property(self, key: str, default: str | None = None) -> str | None:
        return self._properties.get(key, default)

    def get_entry(self) -> Entry:
        return self._entry

    def get_max_failover(self) -> int:
        return self._max_failover

    def get_status_publisher(self) -> StatusPublisher:
        return self._status_publisher

    def get_address_book(self) -> AddressBook | None:
        return self._address_book

    def float_property(self, key: str, default: float) -> float:
        value = self._properties.get(key)
        try:
            return default if value is None else float(value)
        except ValueError:
            raise ConfigError(f"property {key!r} must be a number, got {value!r}") from None

    def bool_property(self, key: str, default: bool = False) -> bool:
        value = self._properties.get(key)
        return default if value is None else value.strip().lower() in ("1", "true", "yes", "on")

    # --- framework plug-ins (overridden by PyTorchClusterConfig / TFClusterConfig) ---
    def node_hooks(self) -> NodeHooks:
        """What the child process does around the entry (rendezvous extras, TF_CONFIG, process groups)."""
        return NodeHooks()

    def state_machine(self, has_input: bool) -> AMStateMachine:
        """A fresh AM state machine for this cluster."""
        return AMStateMachine(self.get_node_type_count_map(), self._max_failover, has_input=has_input)

    def validate(self) -> None:
        """Raise ConfigError if this cluster cannot run (called before the Flink job is built)."""

    def __repr__(self) -> str:
        entry = getattr(self._entry, "__qualname__", repr(self._entry))
        return f"{type(self).__name__}(nodes={self._node_type_count_map}, entry={entry}, max_failover={self._max_failover})"

    class Builder:
        """Builds a ClusterConfig (or the subclass that created the builder)."""

        def __init__(self, config_class: type[ClusterConfig] | None = None) -> None:
            self._config_class = config_class or ClusterConfig
            self._node_type_count_map: dict[str, int] = {}
            self._properties: dict[str, str] = {}
            self._entry: Entry | None = None
            self._max_failover = DEFAULT_MAX_FAILOVER
            self._status_publisher: StatusPublisher = logging_publisher
            self._address_book: AddressBook | None = None

        def add_node_type(self: B, node_type: str, count: int) -> B:
            """Add ``count`` nodes of ``node_type`` (e.g. "worker", "ps")."""
            self._node_type_count_map[node_type] = count
            return self

        def set_property(self: B, key: str, value: Any) -> B:
            """A property every node can read with ``ctx.get_property(key)`` (stored as a string)."""
            self._properties[str(key)] = str(value)
            return self

        def set_node_entry(self: B, entry: Entry | str | os.PathLike, func_name: str | None = None) -> B:
            """The function each node runs in its child process; it receives the node's Context.

            Either the function itself (pickled by cloudpickle), or — as dl-on-flink shipped entries — the
            path of a Python file and the name of the function in it (``set_node_entry("train.py",
            "main")``): each child loads that file (it must exist where the nodes run).
            """
            if isinstance(entry, str | os.PathLike):
                if not func_name or not isinstance(func_name, str):
                    raise ConfigError(f"set_node_entry({str(entry)!r}, func_name): name the function in the file")
                entry = FileEntry(os.path.abspath(entry), func_name)
            elif func_name is not None:
                raise ConfigError("set_node_entry(fn) takes a function, or a file path and a function name")
            self._entry = entry
            return self

        def set_max_failover(self: B, max_failover: int) -> B:
            """How many times a node failure may restart the cluster before the job fails (default 3)."""
            self._max_failover = max_failover
            return self

        def set_status_publisher(self: B, publisher: StatusPublisher) -> B:
            """Receives every cluster and node status change (default: logging)."""
            self._status_publisher = publisher
            return self

        def set_address_book(self: B, address_book: AddressBook) -> B:
            """Where the AM publishes its address (default: ``default_address_book()``)."""
            self._address_book = address_book
            return self

        def build(self) -> ClusterConfig:
            config = self._config_class(
                self._node_type_count_map,
                self._properties,
                self._entry,
                max_failover=self._max_failover,
                status_publisher=self._status_publisher,
                address_book=self._address_book,
            )
            config.validate()
            return config
