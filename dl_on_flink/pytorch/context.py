"""PyTorchContext: the PyTorch view of a node's Context (rank, world size, data from and to Flink)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch.utils.data import IterableDataset

from dl_on_flink.framework.channel import RowReader, RowWriter
from dl_on_flink.framework.context import Context


class PyTorchContext(Context):
    """Wrap the entry's context: ``PyTorchContext(ctx)``. ``torch.distributed`` is already initialised."""

    def __init__(self, ctx: Context) -> None:
        self.__dict__ = ctx.__dict__  # the same node, the same sockets: a view, not a copy

    def get_world_size(self) -> int:
        return self.get_node_type_count_map()["worker"]

    def get_rank(self) -> int:
        return self.get_index()

    def get_master_ip(self) -> str:
        return self.get_cluster_spec()["worker"][0]["host"]

    def get_master_port(self) -> int:
        return int(self.get_cluster_spec()["worker"][0]["props"]["master_port"])

    def get_dataset_from_flink(self) -> FlinkDataset:
        """This worker's rows from Flink as an IterableDataset: each iteration is one epoch."""
        return FlinkDataset(self.get_row_reader())

    def get_data_writer_to_flink(self) -> FlinkWriter:
        """Write result rows (tuples matching the inference output schema) back into the Flink stream."""
        return FlinkWriter(self.get_row_writer())


class FlinkDataset(IterableDataset):
    """Rows from Flink: tuples of Python scalars, bytes, str and numpy arrays (what ``default_collate``
    turns into tensors). Iterate it once per epoch; after the last epoch it is empty and
    :attr:`end_of_input` is True. Use it with ``DataLoader(..., num_workers=0)`` (the rows stream from
    this process's channel)."""

    def __init__(self, reader: RowReader) -> None:
        self._reader = reader

    def __iter__(self) -> Iterator[tuple]:
        return self._reader.read_epoch()

    @property
    def end_of_input(self) -> bool:
        return self._reader.end_of_input

    @property
    def epochs_completed(self) -> int:
        return self._reader.epochs_completed


class FlinkWriter:
    """``write(row)`` sends one row (a tuple; tensors are converted with ``.tolist()``/``.item()``)."""

    def __init__(self, writer: RowWriter) -> None:
        self._writer = writer

    def write(self, row: Any) -> None:
        self._writer.write(tuple(_plain(v) for v in row))

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def _plain(value: Any) -> Any:
    if hasattr(value, "detach"):  # a torch.Tensor
        value = value.detach().cpu()
        return value.item() if value.dim() == 0 else value.numpy()
    return value
