"""Arrow record batches: how rows from a Flink Table or DataStream reach a node many at a time.

Why: one Flink record per sample crosses PyFlink's Java ⇄ Python boundary once per Python operator,
which caps a per-record feed near 10,000 rows/s on a 2-core machine (docs/benchmarks.md). PyFlink's
vectorized (``func_type="pandas"``) functions receive rows as Arrow batches instead; the batched feed
(:mod:`dl_on_flink.operator.arrow_feed`) turns each such batch into one frame of kind ``A`` (an Arrow
IPC stream of one record batch, :func:`encode_batch`) and sends it down the node's channel like any other, so
back-pressure, spill, replay on failover and the end-of-input markers work unchanged.

In the child, :class:`BatchDecoder` turns a frame's body back into rows — the very tuples the per-row codec
gives (:mod:`.codec`: Python scalars, str, bytes, numpy arrays, None) — or into columns: one numpy array
per column (a 2-D array for ARRAY columns whose rows all have one length), without per-row Python work
for numeric columns.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from dl_on_flink.errors import CodecError
from dl_on_flink.framework.codec import FieldType, Schema

_ARROW_TYPES = {
    FieldType.INT: pa.int32(),
    FieldType.BIGINT: pa.int64(),
    FieldType.FLOAT: pa.float32(),
    FieldType.DOUBLE: pa.float64(),
    FieldType.STRING: pa.string(),
    FieldType.BYTES: pa.binary(),
    FieldType.ARRAY_INT: pa.list_(pa.int32()),
    FieldType.ARRAY_BIGINT: pa.list_(pa.int64()),
    FieldType.ARRAY_FLOAT: pa.list_(pa.float32()),
    FieldType.ARRAY_DOUBLE: pa.list_(pa.float64()),
}
_NUMBERS = {FieldType.INT, FieldType.BIGINT, FieldType.FLOAT, FieldType.DOUBLE}
_FLOATS = {FieldType.FLOAT, FieldType.DOUBLE}


def arrow_schema(schema: Schema) -> pa.Schema:
    """The Arrow schema of rows of ``schema`` (the same names, the codec's widths)."""
    return pa.schema([pa.field(f.name, _ARROW_TYPES[f.type]) for f in schema.fields])


def encode_batch(columns: Iterable[Any], schema: Schema) -> bytes:
    """One record batch as Arrow IPC bytes (the body of an ``A`` frame), from one sequence per column (pandas Series, numpy arrays or lists), in schema order.

    Raises CodecError naming the column whose values do not fit its type.
    """
    arrays = []
    for field, values in zip(schema.fields, columns, strict=True):
        arrow_type = _ARROW_TYPES[field.type]
        try:
            if field.type in (FieldType.INT, FieldType.BIGINT):
                values = _integers(values)
            # NaN stays NaN in FLOAT/DOUBLE columns (pandas, and so PyFlink's vectorized functions, give a
            # null there as NaN too: the two cannot be told apart); elsewhere pandas' NaN/None is a null
            arrays.append(pa.array(values, type=arrow_type, from_pandas=field.type not in _FLOATS))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as exc:
            raise CodecError(f"column {field.name!r} ({field.type.value}) cannot hold its values: {exc}") from None
    batch = pa.RecordBatch.from_arrays(arrays, schema=arrow_schema(schema))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def _integers(values: Any) -> Any:
    """PyFlink hands an INT/BIGINT column with nulls to pandas as float64 with NaN: back to integers + nulls."""
    dtype = getattr(values, "dtype", None)
    if dtype is not None and dtype.kind == "f":
        array = np.asarray(values)
        mask = np.isnan(array)
        if (array[~mask] != np.round(array[~mask])).any():
            raise ValueError("values with a fraction in an integer column")
        return pa.array(np.where(mask, 0, array).astype(np.int64), mask=mask)
    return values


def decode_batch(data: bytes | memoryview) -> pa.RecordBatch:
    """The record batch that :func:`encode_batch` wrote."""
    try:
        reader = pa.ipc.open_stream(data)
        batches = list(reader)
    except pa.ArrowInvalid as exc:
        raise CodecError(f"corrupt Arrow frame: {exc}") from None
    if len(batches) != 1:
        raise CodecError(f"an Arrow frame holds one record batch, this one {len(batches)}")
    return batches[0]


class BatchDecoder:
    """Rows or columns of ``A`` frames, typed as the per-row codec types them (see the module docstring)."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self._expected = arrow_schema(schema)

    def batch(self, data: bytes | memoryview) -> pa.RecordBatch:
        batch = decode_batch(data)
        if not batch.schema.equals(self._expected):
            raise CodecError(f"an Arrow frame with schema {batch.schema} where {self.schema} was expected")
        return batch

    def rows(self, batch: pa.RecordBatch) -> Iterator[tuple]:
        """The batch's rows as tuples: Python scalars, str, bytes, numpy arrays (ARRAY columns), None."""
        columns = [_python_values(batch.column(i), field.type) for i, field in enumerate(self.schema.fields)]
        return zip(*columns, strict=True)

    def columns(self, batches: list[pa.RecordBatch]) -> dict[str, Any]:
        """One value per column over ``batches`` together: a writable numpy array for a numeric column
        (CodecError if it has nulls), a 2-D numpy array for an ARRAY column whose rows share one length
        (else a list of 1-D arrays), a list for STRING/BYTES columns (None for nulls)."""
        out: dict[str, Any] = {}
        for i, field in enumerate(self.schema.fields):
            chunks = [b.column(i) for b in batches]
            if field.type in _NUMBERS:
                if any(c.null_count for c in chunks):
                    raise CodecError(f"column {field.name!r} has nulls: batches of numbers cannot hold them "
                                     "(fill or filter them upstream, or read rows instead of batches)")
                out[field.name] = np.concatenate([c.to_numpy(zero_copy_only=False) for c in chunks]) \
                    if len(chunks) > 1 else chunks[0].to_numpy(zero_copy_only=False).copy()
            elif field.type.is_array:
                out[field.name] = _array_column(pa.chunked_array(chunks, type=chunks[0].type), field)
            else:
                out[field.name] = [v for c in chunks for v in c.to_pylist()]
        return out


def _python_values(column: pa.Array, ftype: FieldType) -> list:
    if ftype in _NUMBERS:
        return column.to_numpy(zero_copy_only=False).tolist() if column.null_count == 0 else column.to_pylist()
    if ftype.is_array:
        dtype = _ARROW_TYPES[ftype].value_type.to_pandas_dtype()
        offsets = column.offsets.to_numpy()  # into .values, also for a slice of a batch
        values = column.values.to_numpy(zero_copy_only=False).astype(dtype, copy=False)
        valid = column.is_valid().to_numpy(zero_copy_only=False)
        return [values[offsets[k]:offsets[k + 1]].copy() if valid[k] else None for k in range(len(column))]
    return column.to_pylist()


def _array_column(column: pa.ChunkedArray, field: Any) -> Any:
    combined = column.combine_chunks()
    if combined.null_count:
        raise CodecError(f"column {field.name!r} has null arrays: batches cannot hold them (read rows instead)")
    rows = _python_values(combined, field.type)
    lengths = {len(r) for r in rows}
    if len(lengths) == 1:
        return np.stack(rows) if rows else np.empty((0, 0), dtype=_ARROW_TYPES[field.type].value_type.to_pandas_dtype())
    return rows
