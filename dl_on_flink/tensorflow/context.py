"""TFContext: the TensorFlow view of a node's Context (TF_CONFIG cluster, server, data from/to Flink)."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from dl_on_flink.framework.channel import RowWriter
from dl_on_flink.framework.codec import FieldType
from dl_on_flink.framework.context import Context
from dl_on_flink.tensorflow.hooks import SERVER_KEY
from dl_on_flink.tensorflow.tasks import tf_cluster, tf_task

_SPECS = {
    FieldType.INT: tf.TensorSpec((), tf.int32),
    FieldType.BIGINT: tf.TensorSpec((), tf.int64),
    FieldType.FLOAT: tf.TensorSpec((), tf.float32),
    FieldType.DOUBLE: tf.TensorSpec((), tf.float64),
    FieldType.STRING: tf.TensorSpec((), tf.string),
    FieldType.BYTES: tf.TensorSpec((), tf.string),
    FieldType.ARRAY_INT: tf.TensorSpec((None,), tf.int32),
    FieldType.ARRAY_BIGINT: tf.TensorSpec((None,), tf.int64),
    FieldType.ARRAY_FLOAT: tf.TensorSpec((None,), tf.float32),
    FieldType.ARRAY_DOUBLE: tf.TensorSpec((None,), tf.float64),
}


_TF_BATCH_ROWS = 1024  # rows per column batch handed to tf.data (then split into rows there)


class TFContext(Context):
    """Wrap the entry's context: ``TFContext(ctx)``. ``TF_CONFIG`` is already set."""

    def __init__(self, ctx: Context) -> None:
        self.__dict__ = ctx.__dict__  # the same node, the same sockets: a view, not a copy

    def get_tf_cluster_config(self) -> dict[str, list[str]]:
        """The cluster as in TF_CONFIG: ``{"worker": ["host:port", ...], "ps": [...], "chief": [...]}``."""
        return tf_cluster(self, self.get_cluster_spec())

    def get_task_type(self) -> str:
        return tf_task(self)[0]

    def get_task_index(self) -> int:
        return tf_task(self)[1]

    def get_tf_server(self) -> tf.distribute.Server | None:
        """In parameter-server mode, the running server of a ps or worker task (``.join()`` it)."""
        return self._state.get(SERVER_KEY)

    def get_tfdataset_from_flink(
        self, compression_type: str | None = None, buffer_size: int | None = None,
        num_parallel_reads: int | None = None,
    ) -> tf.data.Dataset:
        """This worker's rows from Flink; each iteration over the dataset is one epoch.

        Elements are tuples following the input schema (INT → int32, BIGINT → int64, FLOAT → float32,
        DOUBLE → float64, STRING/BYTES → string, ARRAY<...> → 1-D tensors). Without ARRAY columns the
        rows enter TensorFlow as whole column batches (from the Arrow batches of the feed) that tf.data
        splits into rows, so ``.batch(n)`` costs no Python work per row; numeric columns must then hold
        no nulls (as before: a tensor cannot hold None).

        dl-on-flink's arguments are accepted so its entries run unchanged: ``buffer_size`` (bytes of read
        buffer there) becomes a prefetch of that many rows at most 1024 here; ``compression_type`` must be
        None or ``""`` (the rows arrive uncompressed over the node's channel) and ``num_parallel_reads``
        changes nothing (one channel per node).
        """
        if compression_type not in (None, "", "NONE"):
            raise ValueError(
                f"compression_type={compression_type!r}: rows from Flink arrive uncompressed; pass None"
            )
        if num_parallel_reads is not None and (not isinstance(num_parallel_reads, int) or num_parallel_reads < 1):
            raise ValueError(f"num_parallel_reads must be a positive int or None, got {num_parallel_reads!r}")
        reader = self.get_row_reader()
        schema = self.get_input_schema()
        signature = tuple(_SPECS[t] for t in schema.types)
        if any(t.is_array for t in schema.types):  # rows of arrays may differ in length: row by row
            dataset = tf.data.Dataset.from_generator(reader.read_epoch, output_signature=signature)
        else:  # whole column batches into TensorFlow, split into rows by tf.data itself (C++)
            def column_batches():
                for columns in reader.read_batches(_TF_BATCH_ROWS):
                    yield tuple(columns.values())

            batched = tuple(tf.TensorSpec((None, *spec.shape), spec.dtype) for spec in signature)
            dataset = tf.data.Dataset.from_generator(column_batches, output_signature=batched).unbatch()
        if buffer_size:
            dataset = dataset.prefetch(min(int(buffer_size), 1024))
        return dataset

    def get_row_writer_to_flink(self) -> TFRowWriter:
        """``write(row)`` sends one row back into Flink; tensors and numpy values are converted, and
        the bytes TensorFlow uses for strings are decoded (UTF-8) for STRING fields."""
        return TFRowWriter(self.get_row_writer(), self.get_output_schema().types)


class TFRowWriter:
    def __init__(self, writer: RowWriter, types: list[FieldType]) -> None:
        self._writer = writer
        self._is_string = [t is FieldType.STRING for t in types]

    def write(self, row: Any) -> None:
        values = [_plain(v) for v in row]
        for i, is_string in enumerate(self._is_string[: len(values)]):
            if is_string and isinstance(values[i], bytes):
                values[i] = values[i].decode("utf-8", "surrogatepass")
        self._writer.write(tuple(values))

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def _plain(value: Any) -> Any:
    if isinstance(value, tf.Tensor):
        value = value.numpy()
    if hasattr(value, "ndim") and value.ndim == 0:
        value = value.item()
    return value
