"""The batched feed: a Table's rows reach the fed workers as Arrow batches, not one record at a time.

Shape (added by :func:`dl_on_flink.operator.placement.place_cluster` unless the cluster property
``feed`` is ``"row"``)::

    Table ─ map(ArrowFrames, a pandas UDF) ─ filter(frame IS NOT NULL) ─ to_data_stream ─ key_by ─ workers

PyFlink hands a vectorized (``func_type="pandas"``) function up to ``python.fn-execution.arrow.batch.size``
rows at once, columnar. :class:`ArrowFrames` cuts each batch into one slice per worker (so the workers'
shares stay within a row of each other per upstream subtask, as with dl-on-flink's row-by-row round robin:
DDP needs equal steps), encodes each slice as one Arrow IPC frame and returns the frames in the batch's
first rows, each with its worker's key; the other rows are null and a Java-side filter drops them. So the per-record Python work of PyFlink is paid once per batch on the way to
the workers, and the workers' operator forwards whole frames (:meth:`.NodeRunner.write_frame`) through the
same channel, spill and failover replay as rows. A DataStream input is converted to a Table first
(``from_data_stream``), which happens in Java.

Why the frame rides in the Flink record (and not, say, a file beside it): the record is what Flink
orders before the final watermark (the end of a bounded input), back-pressures, and ships between
TaskManagers on different hosts. Its cost, measured on the 2-core machine (docs/benchmarks.md): a bare
vectorized function over a CSV table that returns nothing reached ≈ 410k rows/s, one that returns its
frame ≈ 190k rows/s; the JVM (CSV parsing, Arrow conversion, copying frames, JIT compilation in short
jobs) is then the busy process, not Python.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from pyflink.table import DataTypes, StreamTableEnvironment, Table
from pyflink.table.expressions import col
from pyflink.table.udf import FunctionContext, ScalarFunction, udf

from dl_on_flink.errors import ConfigError
from dl_on_flink.framework.batches import encode_batch
from dl_on_flink.framework.channel import ARROW
from dl_on_flink.framework.codec import Schema

FEED = "feed"  # the cluster property choosing the feed: "arrow" (default) or "row" (one record per row)
FEEDS = ("arrow", "row")
BATCH_ROWS = "feed_batch_rows"  # cluster property: rows per Arrow batch (python.fn-execution.arrow.batch.size)
DEFAULT_BATCH_ROWS = 10_000
ARROW_BATCH_SIZE = "python.fn-execution.arrow.batch.size"
BUNDLE_SIZE = "python.fn-execution.bundle.size"
_FRAME_TYPE = DataTypes.ROW([DataTypes.FIELD("key", DataTypes.INT()), DataTypes.FIELD("frame", DataTypes.BYTES())])


def feed_of(config: Any) -> str:
    """The feed a cluster config asks for (ConfigError for an unknown one)."""
    feed = (config.get_property(FEED, "arrow") or "arrow").strip().lower()
    if feed not in FEEDS:
        raise ConfigError(f"cluster property {FEED}={feed!r} is not a feed (valid: {', '.join(FEEDS)})")
    return feed


class ArrowFrames(ScalarFunction):
    """Pandas UDF: a batch of rows → (worker key, Arrow frame) in its first row, nulls in the others."""

    def __init__(self, schema: Schema, keys: list[int]) -> None:
        self.schema = schema
        self.keys = keys

    def open(self, function_context: FunctionContext) -> None:
        self.next = function_context.get_index_of_this_subtask() or 0  # subtasks start on different workers

    def eval(self, rows: pd.DataFrame) -> pd.DataFrame:
        """Split the batch into one slice per worker (sizes within one row of each other; the workers that
        get the extra rows take turns), each slice one frame in a row of its own; the rest are null."""
        count, workers = len(rows), len(self.keys)
        base, extra = divmod(count, workers)
        keys, frames, start = [], [], 0
        for j in range(workers):
            size = base + (1 if j < extra else 0)
            if size == 0:
                break
            part = rows.iloc[start:start + size]
            frames.append(ARROW + encode_batch((part.iloc[:, i] for i in range(part.shape[1])), self.schema))
            keys.append(self.keys[(self.next + j) % workers])
            start += size
        self.next = (self.next + extra) % workers
        padding = [None] * (count - len(frames))
        return pd.DataFrame({"key": pd.Series([*keys, *padding], dtype=object),
                             "frame": pd.Series([*frames, *padding], dtype=object)})


def arrow_frames(input: Table, schema: Schema, keys: list[int], batch_rows: int) -> Any:
    """The DataStream of Row(worker key, Arrow frame) for ``input``'s rows (see the module docstring)."""
    t_env = input._t_env
    if not isinstance(t_env, StreamTableEnvironment):
        raise ConfigError(f"tables must come from a StreamTableEnvironment, not a {type(t_env).__name__}")
    _batch_at_least(t_env, batch_rows)
    frames = udf(ArrowFrames(schema, keys), result_type=_FRAME_TYPE, func_type="pandas")
    return t_env.to_data_stream(input.map(frames).filter(col("frame").is_not_null))


def as_table(stream: Any, env: Any) -> Table:
    """A DataStream as a Table of its row type's columns (for the batched feed)."""
    return StreamTableEnvironment.create(env).from_data_stream(stream)


def batch_rows_of(config: Any) -> int:
    raw = config.get_property(BATCH_ROWS, None)
    if raw is None:
        return DEFAULT_BATCH_ROWS
    try:
        rows = int(raw)
    except ValueError:
        rows = 0
    if rows < 1:
        raise ConfigError(f"cluster property {BATCH_ROWS}={raw!r} must be a positive number of rows")
    return rows


def _batch_at_least(t_env: StreamTableEnvironment, rows: int) -> None:
    """Arrow batches of ``rows`` unless the user set a size; a bundle holds at least one batch."""
    config = t_env.get_config()
    if not config.get(ARROW_BATCH_SIZE, ""):
        config.set(ARROW_BATCH_SIZE, str(rows))
    batch = int(config.get(ARROW_BATCH_SIZE, str(rows)))
    bundle = config.get(BUNDLE_SIZE, "")
    if not bundle or int(bundle) < batch:
        config.set(BUNDLE_SIZE, str(max(batch, 100_000)))
