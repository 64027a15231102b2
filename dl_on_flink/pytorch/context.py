"""PyTorchContext: the PyTorch view of a node's Context (rank, world size, data from and to Flink)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset

from dl_on_flink.framework.channel import RowReader, RowWriter
from dl_on_flink.framework.codec import FieldType, Schema
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

    def get_dataset_from_flink(self, as_tensors: bool | None = None,
                               batch_size: int | None = None) -> FlinkDataset | FlinkBatches:
        """This worker's rows from Flink as an IterableDataset: each iteration is one epoch.

        ``batch_size=N`` gives batches instead of rows (:class:`FlinkBatches`): a dict column name →
        tensor of N rows (the last batch of an epoch may hold fewer), built column by column from the
        Arrow batches of the feed without per-row Python work. Iterate it directly, or wrap it in
        ``DataLoader(..., batch_size=None)``.

        Elements are tuples following the input's row type (Python scalars, str, bytes, numpy arrays).
        ``as_tensors=True`` gives them as dl-on-flink did: a list with one tensor of shape ``[1]`` per
        column, typed by the column (INT → int32, BIGINT → int64, FLOAT → float32, DOUBLE → float64;
        arrays as 1-D tensors, STRING/BYTES as they are), so a ``DataLoader`` batch of 128 rows of one
        INT column is one ``[128, 1]`` int32 tensor. The default (None) is dl-on-flink's shape exactly when
        the cluster has dl-on-flink's ``input_types`` property (e.g. ``"INT_32,FLOAT_64"``), whose types
        then win — so their configs run unchanged.
        """
        if batch_size is not None:
            if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
                raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
            return FlinkBatches(self.get_row_reader(), batch_size)
        types = self.get_property(INPUT_TYPES, None)
        if as_tensors is None:
            as_tensors = types is not None
        if not as_tensors:
            return FlinkDataset(self.get_row_reader())
        return FlinkDataset(self.get_row_reader(), _column_dtypes(self.get_input_schema(), types))

    def get_data_writer_to_flink(self) -> FlinkWriter:
        """Write result rows (tuples matching the inference output schema) back into the Flink stream."""
        return FlinkWriter(self.get_row_writer())


class _Epochs:
    """What an iterable over the rows from Flink says about the epochs read so far."""

    _reader: RowReader

    @property
    def end_of_input(self) -> bool:
        return self._reader.end_of_input

    @property
    def epochs_completed(self) -> int:
        return self._reader.epochs_completed


class FlinkDataset(_Epochs, IterableDataset):
    """Rows from Flink: tuples of Python scalars, bytes, str and numpy arrays (what ``default_collate``
    turns into tensors). Iterate it once per epoch; after the last epoch it is empty and
    :attr:`end_of_input` is True. Use it with ``DataLoader(..., num_workers=0)`` (the rows stream from
    this process's channel)."""

    def __init__(self, reader: RowReader, column_dtypes: list | None = None) -> None:
        self._reader = reader
        self._dtypes = column_dtypes  # None: tuples; else one torch dtype (or None: as it is) per column

    def __iter__(self) -> Iterator[tuple] | Iterator[list]:
        rows = self._reader.read_epoch()
        if self._dtypes is None:
            return rows
        return (_as_tensors(row, self._dtypes) for row in rows)


class FlinkBatches(_Epochs, IterableDataset):
    """Batches from Flink: dicts of column name → value for ``batch_size`` rows. Numeric columns are 1-D
    tensors of their column's dtype (INT → int32, BIGINT → int64, FLOAT → float32, DOUBLE → float64),
    ARRAY columns whose rows share one length 2-D tensors ``[rows, length]`` (else lists of 1-D tensors),
    STRING and BYTES columns lists. Numeric columns must hold no nulls (read rows for those). Each
    iteration is one epoch, as for :class:`FlinkDataset`."""

    def __init__(self, reader: RowReader, batch_size: int) -> None:
        self._reader = reader
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for columns in self._reader.read_batches(self.batch_size):
            yield {name: _column_tensor(value) for name, value in columns.items()}


def _column_tensor(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)  # the decoder's own writable copy: shared, not copied again
    if value and isinstance(value[0], np.ndarray):
        return [torch.from_numpy(v) for v in value]
    return value


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


INPUT_TYPES = "input_types"  # dl-on-flink's property: the input columns' types, e.g. "INT_32,FLOAT_64"
_DL_ON_FLINK_DTYPES = {"INT_32": "int32", "INT_64": "int64", "FLOAT_32": "float32", "FLOAT_64": "float64"}
_FIELD_DTYPES = {FieldType.INT: "int32", FieldType.BIGINT: "int64", FieldType.FLOAT: "float32",
                 FieldType.DOUBLE: "float64"}


def _column_dtypes(schema: Schema | None, input_types: str | None) -> list:
    """One torch dtype per input column (None: the value passes as it is)."""
    names: list[str | None]
    if input_types is not None:
        names = [_DL_ON_FLINK_DTYPES.get(t.strip().upper()) for t in input_types.split(",")]
    elif schema is not None:
        names = [_FIELD_DTYPES.get(t) for t in schema.types]
    else:
        names = []
    return [getattr(torch, name) if name is not None else None for name in names]


def _as_tensors(row: tuple, dtypes: list) -> list:
    out = []
    for index, value in enumerate(row):
        dtype = dtypes[index] if index < len(dtypes) else None
        if isinstance(value, np.ndarray):
            out.append(torch.from_numpy(value) if dtype is None else torch.from_numpy(value).to(dtype))
        elif dtype is not None and value is not None:
            out.append(torch.tensor([value], dtype=dtype))
        else:
            out.append(value)
    return out


def _plain(value: Any) -> Any:
    if hasattr(value, "detach"):  # a torch.Tensor
        value = value.detach().cpu()
        return value.item() if value.dim() == 0 else value.numpy()
    return value
