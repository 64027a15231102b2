"""Typed row codec: the bytes that rows travel in between a Flink operator and a node's child process.

dl-on-flink coded rows as CSV text, which broke on commas, newlines and binary data. Here a row is a tuple
whose fields follow a :class:`Schema`, and the encoding is length-exact binary, so every value of every
supported type comes back identical — strings with commas, newlines and even lone surrogates, bytes, NaNs,
the extremes of each integer width.

Encoding of one row (little-endian)::

    null bitmap (ceil(n/8) bytes, bit i set = field i is None)
    then, per non-null field:
      INT i32 | BIGINT i64 | FLOAT f32 | DOUBLE f64
      STRING / BYTES: u32 length + bytes (UTF-8 with surrogatepass for STRING)
      ARRAY<...>: u32 count + count packed numbers (no nulls inside arrays)

FLOAT is 32-bit (Flink's FLOAT): a Python float is rounded to float32 once, then round-trips exactly.
Arrays decode to numpy arrays in the child (what PyTorch's collate and tf.data want) and to lists in the
operator (what Flink's coders want); see ``arrays_as``.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dl_on_flink.errors import CodecError, ConfigError


class FieldType(enum.Enum):
    INT = "INT"
    BIGINT = "BIGINT"
    FLOAT = "FLOAT"
    DOUBLE = "DOUBLE"
    STRING = "STRING"
    BYTES = "BYTES"
    ARRAY_INT = "ARRAY<INT>"
    ARRAY_BIGINT = "ARRAY<BIGINT>"
    ARRAY_FLOAT = "ARRAY<FLOAT>"
    ARRAY_DOUBLE = "ARRAY<DOUBLE>"

    @property
    def is_array(self) -> bool:
        return self.name.startswith("ARRAY_")


@dataclass(frozen=True)
class Field:
    name: str
    type: FieldType


class Schema:
    """The names and types of a row's fields.

    Build one from pairs (``Schema([("x", "BIGINT"), ("v", "ARRAY<FLOAT>")])``) or from a PyFlink type
    (``Schema.from_flink(Types.ROW_NAMED([...], [...]))``); ``to_flink()`` gives the PyFlink type back.
    """

    def __init__(self, fields: Iterable[tuple[str, FieldType | str] | Field]) -> None:
        parsed = []
        for item in fields:
            if isinstance(item, Field):
                parsed.append(item)
                continue
            name, ftype = item
            if not isinstance(ftype, FieldType):
                try:
                    ftype = FieldType(str(ftype).upper().replace(" ", ""))
                except ValueError:
                    valid = ", ".join(t.value for t in FieldType)
                    raise ConfigError(f"field {name!r}: unknown type {ftype!r} (valid: {valid})") from None
            parsed.append(Field(str(name), ftype))
        if not parsed:
            raise ConfigError("a schema needs at least one field")
        self.fields: tuple[Field, ...] = tuple(parsed)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    @property
    def types(self) -> list[FieldType]:
        return [f.type for f in self.fields]

    def __len__(self) -> int:
        return len(self.fields)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Schema) and self.fields == other.fields

    def __hash__(self) -> int:
        return hash(self.fields)

    def __repr__(self) -> str:
        return "Schema(" + ", ".join(f"{f.name} {f.type.value}" for f in self.fields) + ")"

    @staticmethod
    def of(schema_like: Any) -> Schema:
        """A Schema from a Schema, a PyFlink TypeInformation, a ``pyflink.table.Schema`` (what
        dl-on-flink's ``inference`` takes), or a list of (name, type) pairs."""
        if isinstance(schema_like, Schema):
            return schema_like
        if _is_flink_type(schema_like):
            return Schema.from_flink(schema_like)
        if _is_table_schema(schema_like):
            return Schema.from_table_schema(schema_like)
        return Schema(schema_like)

    @staticmethod
    def from_table_schema(table_schema: Any) -> Schema:
        """Map a ``pyflink.table.Schema`` of physical columns (``INT``, ``BIGINT``, ``FLOAT``, ``DOUBLE``,
        ``STRING``, ``BYTES``, ``ARRAY<INT|BIGINT|FLOAT|DOUBLE>``; nullability is ignored)."""
        return Schema(
            (str(column.getName()), _field_type_of_sql(str(column.getName()), str(column.getDataType().toString())))
            for column in table_schema._j_schema.getColumns()
        )

    @staticmethod
    def from_table(table: Any) -> Schema:
        """The columns of a ``pyflink.table.Table`` (types as in :meth:`from_table_schema`)."""
        return Schema(
            (str(column.getName()), _field_type_of_sql(str(column.getName()), str(column.getDataType().toString())))
            for column in table._j_table.getResolvedSchema().getColumns()
        )

    @staticmethod
    def from_flink(type_info: Any) -> Schema:
        """Map a PyFlink TypeInformation (a ROW, or one supported type taken as a one-field row)."""
        from pyflink.common.typeinfo import ExternalTypeInfo, RowTypeInfo

        while isinstance(type_info, ExternalTypeInfo):  # what table_env.to_data_stream(table) gives
            type_info = type_info._type_info
        if isinstance(type_info, RowTypeInfo):
            return Schema(
                (name, _field_type_of(name, t))
                for name, t in zip(type_info.get_field_names(), type_info.get_field_types(), strict=True)
            )
        return Schema([("f0", _field_type_of("f0", type_info))])

    def to_flink(self) -> Any:
        """The PyFlink ``Types.ROW_NAMED`` for rows of this schema."""
        from pyflink.common import Types

        return Types.ROW_NAMED(self.names, [_flink_type_of(t) for t in self.types])


class RowCodec:
    """Encodes rows of one schema to bytes and back.

    ``arrays_as`` picks how ARRAY fields decode: ``"numpy"`` (child side) or ``"list"`` (operator side).
    """

    def __init__(self, schema: Schema | Any, arrays_as: str = "numpy") -> None:
        if arrays_as not in ("numpy", "list"):
            raise ConfigError(f"arrays_as must be 'numpy' or 'list', not {arrays_as!r}")
        self.schema = Schema.of(schema)
        self._nbytes_bitmap = (len(self.schema) + 7) // 8
        self._no_nulls = bytes(self._nbytes_bitmap)
        self._encoders = [_ENCODERS[f.type] for f in self.schema.fields]
        self._decoders = [_make_decoder(f.type, arrays_as) for f in self.schema.fields]
        self._names = self.schema.names

    def encode(self, row: Sequence[Any]) -> bytes:
        """One row (a tuple, list or pyflink Row) as bytes; CodecError names the field that does not fit."""
        # fast path: no None and every value fits (any exception falls through to the careful path)
        try:
            if len(row) == len(self._encoders):
                return self._no_nulls + b"".join([enc(v) for enc, v in zip(self._encoders, row, strict=True)])
        except Exception:  # noqa: BLE001 - the careful path below reports it properly
            pass
        return self._encode_checked(row)

    def _encode_checked(self, row: Sequence[Any]) -> bytes:
        n = len(self._encoders)
        try:
            width = len(row)
        except TypeError:
            raise CodecError(f"a row must be a sequence of {n} fields, got {type(row).__name__}") from None
        if width != n:
            raise CodecError(f"row has {width} fields, schema {self.schema} has {n}: {row!r}")
        bitmap = bytearray(self._nbytes_bitmap)
        out = [b""]
        for i, (encode, value) in enumerate(zip(self._encoders, row, strict=True)):
            if value is None:
                bitmap[i >> 3] |= 1 << (i & 7)
                continue
            try:
                out.append(encode(value))
            except (struct.error, OverflowError, TypeError, ValueError, UnicodeError) as exc:
                field = self.schema.fields[i]
                raise CodecError(
                    f"field {field.name!r} ({field.type.value}) cannot hold {value!r}: {exc}"
                ) from None
        out[0] = bytes(bitmap)
        return b"".join(out)

    def decode(self, data: bytes | memoryview) -> tuple:
        """The row encoded in ``data`` (exactly one row)."""
        row, end = self.decode_from(memoryview(data), 0)
        if end != len(data):
            raise CodecError(f"{len(data) - end} stray bytes after a row of {self.schema}")
        return row

    def decode_from(self, view: memoryview, offset: int) -> tuple[tuple, int]:
        """Decode the row starting at ``offset``; return it and the offset after it."""
        nb = self._nbytes_bitmap
        bitmap = bytes(view[offset : offset + nb])
        offset += nb
        values = []
        append = values.append
        try:
            if bitmap == self._no_nulls:
                for decode in self._decoders:
                    value, offset = decode(view, offset)
                    append(value)
            else:
                for i, decode in enumerate(self._decoders):
                    if bitmap[i >> 3] & (1 << (i & 7)):
                        append(None)
                        continue
                    value, offset = decode(view, offset)
                    append(value)
        except (struct.error, ValueError, IndexError) as exc:
            raise CodecError(f"truncated or corrupt row for {self.schema}: {exc}") from None
        return tuple(values), offset


# --- per-type encoders and decoders ------------------------------------------------------------------

_I32, _I64, _F32, _F64, _U32 = (struct.Struct(f) for f in ("<i", "<q", "<f", "<d", "<I"))
_DTYPES = {
    FieldType.ARRAY_INT: np.dtype("<i4"),
    FieldType.ARRAY_BIGINT: np.dtype("<i8"),
    FieldType.ARRAY_FLOAT: np.dtype("<f4"),
    FieldType.ARRAY_DOUBLE: np.dtype("<f8"),
}


def _strict_int(value: Any) -> int:
    if isinstance(value, bool | float) or not isinstance(value, int | np.integer):
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    return int(value)


def _encode_str(value: str) -> bytes:
    if not isinstance(value, str):
        raise TypeError(f"expected str, got {type(value).__name__}")
    raw = value.encode("utf-8", "surrogatepass")
    return _U32.pack(len(raw)) + raw


def _encode_bytes(value: bytes | bytearray | memoryview) -> bytes:
    if type(value) is bytes:
        return _U32.pack(len(value)) + value
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"expected bytes, got {type(value).__name__}")
    raw = bytes(value)
    return _U32.pack(len(raw)) + raw


def _array_encoder(dtype: np.dtype) -> Callable[[Any], bytes]:
    integral = dtype.kind == "i"

    def encode(value: Any) -> bytes:
        if value is None or isinstance(value, str | bytes):
            raise TypeError(f"expected an array of numbers, got {type(value).__name__}")
        arr = np.asarray(value)
        if arr.ndim != 1:
            raise ValueError(f"expected a one-dimensional array, got shape {arr.shape}")
        if integral and arr.size:
            if arr.dtype.kind not in "iu":
                raise TypeError(f"expected integers, got dtype {arr.dtype}")
            if arr.min() < np.iinfo(dtype).min or arr.max() > np.iinfo(dtype).max:
                raise OverflowError(f"values outside {dtype.name}")
        arr = np.ascontiguousarray(arr, dtype=dtype)
        return _U32.pack(arr.shape[0]) + arr.tobytes()

    return encode


_ENCODERS: dict[FieldType, Callable[[Any], bytes]] = {
    FieldType.INT: lambda v: _I32.pack(_strict_int(v)),
    FieldType.BIGINT: lambda v: _I64.pack(_strict_int(v)),
    FieldType.FLOAT: lambda v: _F32.pack(float(v)),
    FieldType.DOUBLE: lambda v: _F64.pack(float(v)),
    FieldType.STRING: _encode_str,
    FieldType.BYTES: _encode_bytes,
    **{t: _array_encoder(d) for t, d in _DTYPES.items()},
}


def _make_decoder(ftype: FieldType, arrays_as: str) -> Callable[[memoryview, int], tuple[Any, int]]:
    fixed = {FieldType.INT: _I32, FieldType.BIGINT: _I64, FieldType.FLOAT: _F32, FieldType.DOUBLE: _F64}
    if ftype in fixed:
        st = fixed[ftype]
        size = st.size
        unpack = st.unpack_from

        def decode_fixed(view: memoryview, offset: int) -> tuple[Any, int]:
            return unpack(view, offset)[0], offset + size

        return decode_fixed
    if ftype in (FieldType.STRING, FieldType.BYTES):
        as_str = ftype is FieldType.STRING

        def decode_var(view: memoryview, offset: int) -> tuple[Any, int]:
            (length,) = _U32.unpack_from(view, offset)
            start, end = offset + 4, offset + 4 + length
            if end > len(view):
                raise ValueError("length beyond the end of the buffer")
            raw = bytes(view[start:end])
            return (raw.decode("utf-8", "surrogatepass") if as_str else raw), end

        return decode_var
    dtype = _DTYPES[ftype]
    to_list = arrays_as == "list"

    def decode_array(view: memoryview, offset: int) -> tuple[Any, int]:
        (count,) = _U32.unpack_from(view, offset)
        start, end = offset + 4, offset + 4 + count * dtype.itemsize
        if end > len(view):
            raise ValueError("array beyond the end of the buffer")
        arr = np.frombuffer(view[start:end], dtype=dtype)
        return (arr.tolist() if to_list else arr.astype(dtype.newbyteorder("="), copy=True)), end

    return decode_array


# --- PyFlink type mapping ----------------------------------------------------------------------------


def _is_flink_type(obj: Any) -> bool:
    try:
        from pyflink.common.typeinfo import TypeInformation
    except ImportError:  # the child process may run without PyFlink importable; schemas arrive ready-made
        return False
    return isinstance(obj, TypeInformation)


def _is_table_schema(obj: Any) -> bool:
    try:
        from pyflink.table import Schema as TableSchema
    except ImportError:
        return False
    return isinstance(obj, TableSchema)


_SQL_NAMES = {
    "INT": FieldType.INT, "INTEGER": FieldType.INT, "BIGINT": FieldType.BIGINT, "FLOAT": FieldType.FLOAT,
    "REAL": FieldType.FLOAT, "DOUBLE": FieldType.DOUBLE, "STRING": FieldType.STRING, "VARCHAR": FieldType.STRING,
    "CHAR": FieldType.STRING, "BYTES": FieldType.BYTES, "VARBINARY": FieldType.BYTES, "BINARY": FieldType.BYTES,
}


def _field_type_of_sql(name: str, sql_type: str) -> FieldType:
    """``INT``, ``[INT]`` (unresolved), ``DOUBLE NOT NULL``, ``VARCHAR(10)``, ``ARRAY<FLOAT>`` → a FieldType."""
    text = sql_type.strip().strip("[]").upper().replace(" NOT NULL", "").strip()
    base = text.split("(", 1)[0].strip()
    if base.startswith("ARRAY<") and base.endswith(">"):
        element = _SQL_NAMES.get(base[6:-1].strip())
        array = {FieldType.INT: FieldType.ARRAY_INT, FieldType.BIGINT: FieldType.ARRAY_BIGINT,
                 FieldType.FLOAT: FieldType.ARRAY_FLOAT, FieldType.DOUBLE: FieldType.ARRAY_DOUBLE}.get(element)
        if array is not None:
            return array
    elif base in _SQL_NAMES:
        return _SQL_NAMES[base]
    valid = "INT, BIGINT, FLOAT, DOUBLE, STRING, BYTES and ARRAY of INT/BIGINT/FLOAT/DOUBLE"
    raise ConfigError(f"column {name!r}: type {sql_type} is not supported by the row codec (supported: {valid})")


def _flink_pairs() -> list[tuple[Any, FieldType]]:
    from pyflink.common import Types

    scalars = [
        (Types.INT(), FieldType.INT),
        (Types.LONG(), FieldType.BIGINT),
        (Types.FLOAT(), FieldType.FLOAT),
        (Types.DOUBLE(), FieldType.DOUBLE),
        (Types.STRING(), FieldType.STRING),
        (Types.PRIMITIVE_ARRAY(Types.BYTE()), FieldType.BYTES),
    ]
    arrays = [
        (Types.INT(), FieldType.ARRAY_INT),
        (Types.LONG(), FieldType.ARRAY_BIGINT),
        (Types.FLOAT(), FieldType.ARRAY_FLOAT),
        (Types.DOUBLE(), FieldType.ARRAY_DOUBLE),
    ]
    return (
        scalars
        + [(Types.PRIMITIVE_ARRAY(e), t) for e, t in arrays]
        + [(Types.BASIC_ARRAY(e), t) for e, t in arrays]
    )


def _field_type_of(name: str, type_info: Any) -> FieldType:
    for flink_type, ftype in _flink_pairs():
        if type(flink_type) is type(type_info) and flink_type == type_info:
            return ftype
    valid = "INT, LONG, FLOAT, DOUBLE, STRING, PRIMITIVE_ARRAY(BYTE) and (PRIMITIVE|BASIC)_ARRAY of INT/LONG/FLOAT/DOUBLE"
    raise ConfigError(
        f"field {name!r}: Flink type {type_info} is not supported by the row codec (supported: {valid}); "
        "give the upstream operator an output_type with supported types"
    )


def _flink_type_of(ftype: FieldType) -> Any:
    for flink_type, candidate in _flink_pairs():
        if candidate is ftype:
            return flink_type
    raise AssertionError(ftype)  # every FieldType has a PyFlink type above
