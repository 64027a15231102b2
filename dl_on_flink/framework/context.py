"""Context: what a node's entry function receives — who it is, the cluster, and its data from/to Flink.

The names follow flink-extended/dl-on-flink (``get_node_type``, ``get_index``, ``get_property``,
``get_current_attempt_index``, ``get_node_type_count_map``, ``get_finished_worker_nodes``, and its
context's fields ``identity``, ``index``, ``roleName``, ``failNum``, ``properties``, ``roleParallelism``). Framework contexts (``PyTorchContext``,
``TFContext``) wrap one and add their own views of the same facts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dl_on_flink.errors import ConfigError, RendezvousError
from dl_on_flink.framework.am_protocol import AMClient, Barrier, FinishedWorkers, Progress, Rejected
from dl_on_flink.framework.channel import Receiver, RowReader, RowWriter, Sender
from dl_on_flink.framework.codec import RowCodec, Schema

Entry = Callable[["Context"], Any]  # what each node runs: a function of its Context
_MISSING = object()


@dataclass(frozen=True)
class NodeSpec:
    """Who one attempt of a node is and where it connects: what its :class:`Context` knows (written by the
    node runner into the child's launch file, see :mod:`.child`)."""

    job_key: str
    node_type: str
    index: int
    attempt: int
    node_type_count_map: dict[str, int]
    properties: dict[str, str]
    am_address: str
    host: str
    input_endpoint: str | None = None
    output_endpoint: str | None = None
    input_schema: Schema | None = None
    output_schema: Schema | None = None
    rendezvous_timeout: float = 180.0

    @property
    def name(self) -> str:
        """How messages name this node: ``"worker 1 (attempt 0)"``."""
        return f"{self.node_type} {self.index} (attempt {self.attempt})"


class Context:
    """The node's view of the cluster, given to the entry function as its only argument."""

    def __init__(self, spec: NodeSpec) -> None:
        self._spec = spec
        self._cluster: dict[str, list[dict]] | None = None
        self._reader: RowReader | None = None
        self._writer: RowWriter | None = None
        self._sockets: list[Sender | Receiver] = []
        self._state: dict[str, Any] = {}  # framework hooks keep their handles here (stores, servers)
        self._phase = "start"  # prepare, rendezvous, setup, entry, teardown, or "barrier <name>"
        self._reports = 0
        self._report_message: str | None = None

    # --- identity (dl-on-flink names) ---
    def get_node_type(self) -> str:
        return self._spec.node_type

    def get_index(self) -> int:
        return self._spec.index

    def get_current_attempt_index(self) -> int:
        """0 on the first run; incremented every time a node failure restarted the cluster."""
        return self._spec.attempt

    def get_node_type_count_map(self) -> dict[str, int]:
        return dict(self._spec.node_type_count_map)

    def get_property(self, key: str, default: Any = _MISSING) -> str:
        """A property set with ``set_property``; KeyError if missing and no default is given."""
        if key in self._spec.properties:
            return self._spec.properties[key]
        if default is _MISSING:
            raise KeyError(f"no property {key!r} (set it with ClusterConfig.Builder.set_property)")
        return default

    def get_properties(self) -> dict[str, str]:
        return dict(self._spec.properties)

    def get_job_key(self) -> str:
        return self._spec.job_key

    def get_host(self) -> str:
        return self._spec.host

    def get_finished_worker_nodes(self) -> list[int]:
        """The indices of the workers whose entry has returned in this attempt (asks the AM)."""
        spec = self._spec
        am = AMClient(spec.am_address)
        try:
            reply = am.call(FinishedWorkers((spec.node_type, spec.index), spec.attempt))
        finally:
            am.close()
        if isinstance(reply, Rejected):
            raise RendezvousError(f"the application master did not list the finished workers: {reply.error}")
        return list(reply.workers)

    # --- dl-on-flink's attribute names (its Context exposed these fields) ---
    @property
    def identity(self) -> str:
        """``"<node type>:<index>"``, e.g. ``"worker:0"``."""
        return f"{self._spec.node_type}:{self._spec.index}"

    @property
    def index(self) -> int:
        return self._spec.index

    @property
    def roleName(self) -> str:  # the node type
        return self._spec.node_type

    @property
    def failNum(self) -> int:  # the attempt index: how many failovers restarted the cluster
        return self._spec.attempt

    @property
    def properties(self) -> dict[str, str]:
        return dict(self._spec.properties)

    @property
    def roleParallelism(self) -> dict[str, int]:  # the node type count map
        return dict(self._spec.node_type_count_map)

    def get_cluster_spec(self) -> dict[str, list[dict]]:
        """Every node's ``{"host": ..., "props": {...}}`` by node type, in index order."""
        if self._cluster is None:
            raise RuntimeError("the cluster spec is known only after rendezvous")
        return self._cluster

    def _barrier(self, name: str) -> None:
        """Wait until every node of this attempt reached the barrier ``name`` (framework hooks only).

        RendezvousError when they did not within ``rendezvous_timeout`` (naming the missing nodes), or
        when this attempt was replaced meanwhile.
        """
        spec, phase = self._spec, self._phase
        self._phase = f"barrier {name}"
        am, missing = AMClient(spec.am_address), ()
        try:
            for reply in am.keep_asking(Barrier((spec.node_type, spec.index), spec.attempt, name),
                                        spec.rendezvous_timeout):
                if isinstance(reply, Rejected) or (reply is not None and reply.stale):
                    why = reply.error if isinstance(reply, Rejected) else "attempt replaced"
                    raise RendezvousError(f"{spec.name} at barrier {name!r}: {why}")
                if reply is not None and reply.go:
                    return
                missing = reply.missing if reply is not None and reply.missing else missing
        finally:
            am.close()
            self._phase = phase
        names = ", ".join(f"{t} {i}" for t, i in missing) or "some nodes"
        raise RendezvousError(f"{spec.name}: {names} did not reach {name!r} within {spec.rendezvous_timeout:.0f} s")

    # --- progress ---
    def report_progress(self, message: str | None = None) -> None:
        """Tell the cluster this node is making progress, optionally what it is doing ("epoch 3").

        Reading or writing Flink rows and using CPU count as progress by themselves; call this where a
        node may legitimately do neither for longer than the ``progress_timeout`` property (e.g. it waits
        for something outside Flink). A node that shows no progress for that long, while none of the
        others does either, is failed as stuck; its last message is quoted in the error.
        """
        self._reports += 1
        if message is not None:
            self._report_message = str(message)[:200]

    def _progress(self) -> Progress:
        """What the child's progress reporter sends to its node runner (see :mod:`.child`)."""
        reader, writer = self._reader, self._writer
        return Progress(
            phase=self._phase,
            reports=self._reports,
            message=self._report_message,
            rows_read=reader.rows_read if reader is not None else 0,
            rows_written=writer.rows_written if writer is not None else 0,
            waiting=bool((reader is not None and reader.waiting) or (writer is not None and writer.waiting)),
        )

    # --- data from and to Flink ---
    def get_input_schema(self) -> Schema | None:
        return self._spec.input_schema

    def get_output_schema(self) -> Schema | None:
        return self._spec.output_schema

    def get_row_reader(self) -> RowReader:
        """Rows from Flink (nodes fed by an upstream operator only); one epoch per ``read_epoch()``."""
        if self._reader is None:
            spec = self._spec
            receiver = self._connect(Receiver, spec.input_endpoint, spec.input_schema,
                                     "input from Flink (pass input=... to train/inference; only workers are fed)")
            self._reader = RowReader(receiver, RowCodec(spec.input_schema, arrays_as="numpy"))
        return self._reader

    def get_row_writer(self) -> RowWriter:
        """Rows to Flink (inference only): ``write(tuple)`` per row, matching the output schema."""
        if self._writer is None:
            spec = self._spec
            sender = self._connect(Sender, spec.output_endpoint, spec.output_schema,
                                   "output to Flink (only inference(...) takes an output schema)")
            self._writer = RowWriter(sender, RowCodec(spec.output_schema))
        return self._writer

    def _connect(self, end: type[Sender | Receiver], endpoint: str | None, schema: Schema | None,
                 what: str) -> Sender | Receiver:
        """This node's end of the channel at ``endpoint``; ConfigError naming ``what`` when it has none."""
        if endpoint is None or schema is None:
            raise ConfigError(f"{self.get_node_type()} {self.get_index()} has no {what}")
        sock = end(endpoint, bind=False)
        self._sockets.append(sock)
        return sock

    def _close_io(self) -> None:
        """Send the end-of-output marker (also when the entry wrote nothing) and close the sockets."""
        if self._spec.output_endpoint is not None and self._spec.output_schema is not None:
            self.get_row_writer().close()
        self._close_sockets()

    def _close_sockets(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()

    def __repr__(self) -> str:
        return (
            f"Context({self.get_node_type()} {self.get_index()}, attempt {self.get_current_attempt_index()}, "
            f"cluster {self.get_node_type_count_map()})"
        )
