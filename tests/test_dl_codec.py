"""The typed row codec round-trips every value of every supported type exactly."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dl_on_flink.errors import CodecError, ConfigError
from dl_on_flink.framework.channel import FrameBuilder, iter_rows
from dl_on_flink.framework.codec import FieldType, RowCodec, Schema

I32 = st.integers(-(2**31), 2**31 - 1)
I64 = st.integers(-(2**63), 2**63 - 1)
F32 = st.floats(width=32, allow_nan=True, allow_infinity=True)
F64 = st.floats(allow_nan=True, allow_infinity=True)
VALUES = {
    FieldType.INT: I32,
    FieldType.BIGINT: I64,
    FieldType.FLOAT: F32,
    FieldType.DOUBLE: F64,
    FieldType.STRING: st.text(),  # includes commas, newlines, quotes, NULs and lone surrogates
    FieldType.BYTES: st.binary(),
    FieldType.ARRAY_INT: st.lists(I32, max_size=20),
    FieldType.ARRAY_BIGINT: st.lists(I64, max_size=20),
    FieldType.ARRAY_FLOAT: st.lists(F32, max_size=20),
    FieldType.ARRAY_DOUBLE: st.lists(F64, max_size=20),
}


@st.composite
def schema_and_rows(draw):
    types = draw(st.lists(st.sampled_from(list(FieldType)), min_size=1, max_size=8))
    schema = Schema([(f"f{i}", t) for i, t in enumerate(types)])
    rows = draw(
        st.lists(
            st.tuples(*[st.one_of(st.none(), VALUES[t]) for t in types]),
            min_size=1,
            max_size=5,
        )
    )
    return schema, rows


def same(a, b) -> bool:
    """Equal, with NaN equal to NaN (bit patterns of floats are compared through struct)."""
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, list | np.ndarray) or isinstance(b, list | np.ndarray):
        a, b = list(a), list(b)
        return len(a) == len(b) and all(same(float(x) if isinstance(x, np.floating) else x,
                                              float(y) if isinstance(y, np.floating) else y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


@settings(max_examples=300, deadline=None)
@given(schema_and_rows())
def test_round_trip_every_type(case):
    schema, rows = case
    to_list, to_numpy = RowCodec(schema, arrays_as="list"), RowCodec(schema, arrays_as="numpy")
    encoded = [to_list.encode(row) for row in rows]
    for row, data in zip(rows, encoded, strict=True):
        back = to_list.decode(data)
        assert all(same(x, y) for x, y in zip(row, back, strict=True)), (row, back)
        as_numpy = to_numpy.decode(data)
        for field, value in zip(schema.fields, as_numpy, strict=True):
            if field.type.is_array and value is not None:
                assert isinstance(value, np.ndarray)
    frames = FrameBuilder(frame_bytes=10**9)
    for data in encoded:
        frames.add(data)
    assert [bytes(r) for r in iter_rows(frames.take())] == encoded


def test_strings_with_separators_and_binary_survive():
    schema = Schema([("s", "STRING"), ("b", "BYTES"), ("v", "ARRAY<DOUBLE>")])
    codec = RowCodec(schema, arrays_as="list")
    row = ('a,b\n"c"\r\n,,\x00\ud800 é', b"\x00,\n\xff", [1.5, -0.0, float("inf")])
    assert codec.decode(codec.encode(row)) == row


def test_frames_keep_rows_apart():
    codec = RowCodec(Schema([("x", "BIGINT"), ("s", "STRING")]))
    frames = FrameBuilder(frame_bytes=10**6)
    rows = [(i, "x," * i) for i in range(100)]
    for row in rows:
        assert frames.add(codec.encode(row)) is None
    frame = frames.take()
    assert [codec.decode(r) for r in iter_rows(frame)] == rows


@pytest.mark.parametrize(
    ("ftype", "value"),
    [("INT", 2**31), ("BIGINT", -(2**63) - 1), ("INT", 1.5), ("STRING", b"x"), ("BYTES", "x"),
     ("ARRAY<INT>", [2**40]), ("ARRAY<INT>", [1.5]), ("FLOAT", 1e300), ("ARRAY<FLOAT>", 5.0),
     ("ARRAY<DOUBLE>", [[1.0]])],
)
def test_values_that_do_not_fit_name_the_field(ftype, value):
    codec = RowCodec(Schema([("ok", "INT"), ("bad", ftype)]))
    with pytest.raises(CodecError, match="'bad'"):
        codec.encode((1, value))


def test_wrong_width_and_unknown_type():
    with pytest.raises(CodecError, match="2 fields"):
        RowCodec(Schema([("x", "INT")])).encode((1, 2))
    with pytest.raises(ConfigError, match="unknown type"):
        Schema([("x", "DECIMAL")])


def test_flink_types_map_both_ways():
    from pyflink.common import Types

    flink = Types.ROW_NAMED(
        ["i", "l", "f", "d", "s", "b", "ai", "al", "af", "ad"],
        [Types.INT(), Types.LONG(), Types.FLOAT(), Types.DOUBLE(), Types.STRING(),
         Types.PRIMITIVE_ARRAY(Types.BYTE()), Types.PRIMITIVE_ARRAY(Types.INT()),
         Types.PRIMITIVE_ARRAY(Types.LONG()), Types.PRIMITIVE_ARRAY(Types.FLOAT()),
         Types.BASIC_ARRAY(Types.DOUBLE())],
    )
    schema = Schema.from_flink(flink)
    assert schema.types == list(FieldType)
    assert Schema.from_flink(schema.to_flink()) == schema
    with pytest.raises(ConfigError, match="not supported"):
        Schema.from_flink(Types.ROW([Types.BOOLEAN()]))
