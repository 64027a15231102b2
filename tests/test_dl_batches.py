"""Arrow batches of the feed (dl_on_flink.framework.batches) and the child's reader of them, without Flink.

Rows read from an Arrow frame must be the very tuples the per-row codec gives (so an entry sees no
difference between the two feeds), and batches of columns must re-cut frames into exactly
``batch_size`` rows in order, over real ZeroMQ channels.
"""

from __future__ import annotations

import math
import tempfile

import numpy as np
import pandas as pd
import pytest

from dl_on_flink.errors import CodecError
from dl_on_flink.framework.batches import BatchDecoder, encode_batch
from dl_on_flink.framework.channel import (
    ARROW,
    END_OF_EPOCH,
    END_OF_INPUT,
    FrameBuilder,
    Receiver,
    RowReader,
    Sender,
)
from dl_on_flink.framework.codec import RowCodec, Schema

ALL = Schema([("i", "INT"), ("l", "BIGINT"), ("f", "FLOAT"), ("d", "DOUBLE"), ("s", "STRING"), ("b", "BYTES"),
              ("ai", "ARRAY<INT>"), ("al", "ARRAY<BIGINT>"), ("af", "ARRAY<FLOAT>"), ("ad", "ARRAY<DOUBLE>")])


def awkward_rows(count: int) -> list[tuple]:
    rows = []
    for k in range(count):
        rows.append((
            [-(2**31), 2**31 - 1, 0, k][k % 4],
            [-(2**63), 2**63 - 1, -1, k * 1_000_000_007][k % 4],
            [0.5, -0.0, float("inf"), 3.25][k % 4],
            [1e-300, -1e300, float("nan"), float("-inf")][k % 4],
            ["a,b", "line\nbreak", "ünïcödé ✓ 中", ""][k % 4] + f"#{k}",
            bytes([k % 256, 0, 44, 10]) * (k % 3),
            [k, -k],
            [2**62, -(2**63)] * (k % 2),
            [0.25, float(k)],
            [1 / 3] * (k % 3),
        ))
    return rows


def frame_of(rows: list[tuple], schema: Schema = ALL) -> bytes:
    """What ArrowFrames sends for these rows: columns as PyFlink's pandas conversion gives them."""
    frame = pd.DataFrame(rows, columns=schema.names)
    return ARROW + encode_batch((frame.iloc[:, i] for i in range(len(schema))), schema)


def same(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and a.tobytes() == b.tobytes()
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return type(a) is type(b) and (a == b) and (not isinstance(a, float) or math.copysign(1, a) == math.copysign(1, b))


def test_rows_from_an_arrow_frame_are_the_rows_the_row_codec_gives():
    rows = awkward_rows(40)
    codec = RowCodec(ALL)
    decoder = BatchDecoder(ALL)
    from_arrow = list(decoder.rows(decoder.batch(memoryview(frame_of(rows))[1:])))
    from_codec = [codec.decode(codec.encode(row)) for row in rows]
    assert len(from_arrow) == len(from_codec) == 40
    for got, want in zip(from_arrow, from_codec, strict=True):
        assert all(same(g, w) for g, w in zip(got, want, strict=True)), (got, want)


def test_nulls_come_back_as_none_also_in_integer_columns():
    schema = Schema([("n", "BIGINT"), ("s", "STRING"), ("v", "ARRAY<FLOAT>")])
    # PyFlink hands a nullable integer column to pandas as float64 with NaN
    columns = [pd.Series([1.0, float("nan"), 3.0]), pd.Series(["a", None, "c"]),
               pd.Series([np.array([1.0], dtype=np.float32), None, np.array([], dtype=np.float32)], dtype=object)]
    decoder = BatchDecoder(schema)
    rows = list(decoder.rows(decoder.batch(encode_batch(columns, schema))))
    assert [r[:2] for r in rows] == [(1, "a"), (None, None), (3, "c")]
    assert rows[1][2] is None and rows[2][2].dtype == np.float32 and rows[2][2].size == 0
    with pytest.raises(CodecError, match="'n' has nulls"):
        decoder.columns([decoder.batch(encode_batch(columns, schema))])


def test_a_value_that_does_not_fit_names_its_column():
    schema = Schema([("x", "DOUBLE"), ("n", "INT")])
    with pytest.raises(CodecError, match="column 'n' \\(INT\\)"):
        encode_batch([pd.Series([1.0]), pd.Series([2**40])], schema)
    with pytest.raises(CodecError, match="fraction"):
        encode_batch([pd.Series([1.0]), pd.Series([1.5])], schema)


def test_columns_are_writable_arrays_and_fixed_length_arrays_are_two_dimensional():
    schema = Schema([("x", "FLOAT"), ("v", "ARRAY<DOUBLE>"), ("s", "STRING")])
    rows = [(float(k), [k, k + 0.5], f"r{k}") for k in range(5)]
    decoder = BatchDecoder(schema)
    batch = decoder.batch(memoryview(frame_of(rows, schema))[1:])
    columns = decoder.columns([batch.slice(0, 2), batch.slice(2)])
    assert columns["x"].dtype == np.float32 and columns["x"].flags.writeable
    assert columns["x"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert columns["v"].shape == (5, 2) and columns["v"][3].tolist() == [3.0, 3.5]
    assert columns["s"] == [f"r{k}" for k in range(5)]


def test_a_corrupt_frame_is_a_codec_error():
    with pytest.raises(CodecError, match="corrupt Arrow frame"):
        BatchDecoder(ALL).batch(b"not arrow at all")


@pytest.fixture
def channel():
    directory = tempfile.mkdtemp()
    sender = Sender(f"ipc://{directory}/in", bind=True)
    receiver = Receiver(f"ipc://{directory}/in", bind=False)
    yield sender, receiver
    sender.close()
    receiver.close()


def test_the_reader_re_cuts_mixed_frames_into_exact_batches_per_epoch(channel):
    sender, receiver = channel
    schema = Schema([("id", "BIGINT"), ("x", "DOUBLE")])
    codec = RowCodec(schema)
    rows = [(k, k / 2) for k in range(23)]
    row_frames = FrameBuilder()
    for row in rows[10:15]:
        row_frames.add(codec.encode(row))
    for frame in (frame_of(rows[:4], schema), frame_of(rows[4:10], schema), row_frames.take(),
                  frame_of(rows[15:], schema), END_OF_EPOCH, frame_of(rows[:3], schema), END_OF_INPUT):
        assert sender.send(frame, timeout=5)
    reader = RowReader(receiver, codec, timeout=5)
    first = list(reader.read_batches(5))
    assert [len(b["id"]) for b in first] == [5, 5, 5, 5, 3]
    assert np.concatenate([b["id"] for b in first]).tolist() == list(range(23))
    assert reader.epochs_completed == 1 and reader.rows_read == 23
    assert [b["x"].tolist() for b in reader.read_batches(5)] == [[0.0, 0.5, 1.0]]
    assert reader.end_of_input and list(reader.read_batches(5)) == []


def test_the_reader_gives_rows_from_arrow_frames_in_order(channel):
    sender, receiver = channel
    schema = Schema([("id", "BIGINT"), ("v", "ARRAY<FLOAT>")])
    rows = [(k, [float(k)] * (k % 3)) for k in range(12)]
    for frame in (frame_of(rows[:7], schema), frame_of(rows[7:], schema), END_OF_INPUT):
        assert sender.send(frame, timeout=5)
    got = list(RowReader(receiver, RowCodec(schema), timeout=5))
    assert [r[0] for r in got] == list(range(12))
    assert all(r[1].dtype == np.float32 and r[1].tolist() == want[1] for r, want in zip(got, rows, strict=True))


def test_a_batch_size_that_is_not_a_positive_int_is_refused(channel):
    _, receiver = channel
    with pytest.raises(ValueError, match="batch_size"):
        next(RowReader(receiver, RowCodec(Schema([("x", "INT")]))).read_batches(0))
