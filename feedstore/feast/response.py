"""``OnlineResponse`` whose Python conversion starts from the raw cells read from Redis.

Feast's ``to_dict`` runs its generic converter on every cell of the response proto: for one
user × 500 items that is ~21K calls, more than the read itself, and 500 of every user value.
The online store keeps, per output feature, the serialised value of each distinct entity and
the row → entity mapping; this converts each distinct value once and repeats the result (a
list value is copied per row, so rows never share a mutable object). The proto is untouched
and is what every other consumer (the HTTP server, ``to_proto``) reads. Features the store did
not read (entity columns, on-demand features) and types with special Python forms (UUIDs, sets,
maps, JSON, timestamps...) go through Feast's converter, so the result is the same.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from feast.online_response import TIMESTAMP_POSTFIX, OnlineResponse
from feast.protos.feast.types.Value_pb2 import BoolList, BytesList, Int32List, Int64List, StringList
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import feast_value_type_to_python_type
from feast.value_type import ValueType

_SCALARS = frozenset({"bytes_val", "string_val", "int32_val", "int64_val", "double_val", "float_val", "bool_val"})
_LISTS = frozenset({"bytes_list_val", "string_list_val", "int32_list_val", "int64_list_val", "double_list_val",
                    "float_list_val", "bool_list_val"})
# string values Feast turns into uuid.UUID when the declared type says so
_HINTED = frozenset({ValueType.UUID, ValueType.TIME_UUID, ValueType.UUID_LIST, ValueType.TIME_UUID_LIST})

Cells = tuple[list[bytes | None], list[int] | None]


def python_value(v: ValueProto, feature_type: ValueType | None) -> Any:
    """``feast_value_type_to_python_type`` with the plain scalar and list kinds inlined."""
    kind = v.WhichOneof("val")
    if kind is None:
        return None
    if feature_type not in _HINTED:
        if kind in _SCALARS:
            return getattr(v, kind)
        if kind in _LISTS:
            return list(getattr(v, kind).val)
    return feast_value_type_to_python_type(v, feature_type)


def _len_varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = data[pos]
        value |= (b & 0x7F) << shift
        pos += 1
        if b < 0x80:
            return value, pos
        shift += 7


def _packed(tag: int, message) -> Callable[[list[bytes]], list | None]:
    """Scalars whose cells are ``tag + varint``: the payloads concatenated are a packed list."""
    def decode(cells: list[bytes]) -> list | None:
        if any(c[0] != tag for c in cells):
            return None
        body = b"".join([c[1:] for c in cells])
        return list(message.FromString(b"\x0a" + _len_varint(len(body)) + body).val)
    return decode


def _fixed(tag: int, dtype: str) -> Callable[[list[bytes]], list | None]:
    """Scalars whose cells are ``tag + fixed-width little-endian``."""
    size = 1 + np.dtype(dtype).itemsize

    def decode(cells: list[bytes]) -> list | None:
        if any(len(c) != size or c[0] != tag for c in cells):
            return None
        return np.frombuffer(b"".join([c[1:] for c in cells]), dtype).tolist()
    return decode


def _length_delimited(tag: int, message) -> Callable[[list[bytes]], list | None]:
    """Strings/bytes: ``tag + len + payload`` re-tagged as field 1 of a ``StringList``/``BytesList``."""
    def decode(cells: list[bytes]) -> list | None:
        if any(c[0] != tag for c in cells):
            return None
        return list(message.FromString(b"".join([b"\x0a" + c[1:] for c in cells])).val)
    return decode


def _numeric_list(tag: bytes, dtype: str) -> Callable[[list[bytes]], list | None]:
    """Float/double lists of one length (embeddings): one matrix; other shapes: per cell."""
    width = np.dtype(dtype).itemsize

    def decode(cells: list[bytes]) -> list | None:
        first = cells[0]
        if not first.startswith(tag):
            return None
        _, pos = _read_varint(first, len(tag))
        if pos < len(first):
            _, pos = _read_varint(first, pos + 1)  # FloatList/DoubleList field 1 (packed)
        header, size = first[:pos], len(first)
        if (size - pos) % width or any(len(c) != size or not c.startswith(header) for c in cells):
            return None
        flat = np.frombuffer(b"".join([c[pos:] for c in cells]), dtype)
        return flat.reshape(len(cells), (size - pos) // width).tolist()
    return decode


_BULK: dict[ValueType, Callable[[list[bytes]], list | None]] = {
    ValueType.INT64: _packed(0x20, Int64List),
    ValueType.INT32: _packed(0x18, Int32List),
    ValueType.BOOL: _packed(0x38, BoolList),
    ValueType.DOUBLE: _fixed(0x29, "<f8"),
    ValueType.FLOAT: _fixed(0x35, "<f4"),
    ValueType.STRING: _length_delimited(0x12, StringList),
    ValueType.BYTES: _length_delimited(0x0A, BytesList),
    ValueType.FLOAT_LIST: _numeric_list(b"\x82\x01", "<f4"),
    ValueType.DOUBLE_LIST: _numeric_list(b"\x7a", "<f8"),
}


def decode_cells(column: list[bytes | None], feature_type: ValueType | None) -> list:
    """Python values of serialised ``Value`` cells (``None`` for a missing one), converted in bulk
    when every cell has the declared type's exact shape, else one by one as Feast does."""
    present = [c for c in column if c is not None]
    bulk = _BULK.get(feature_type) if present else None
    values = bulk(present) if bulk is not None else None
    if values is None:
        parse = ValueProto.FromString
        return [None if c is None else python_value(parse(c), feature_type) for c in column]
    if len(present) == len(column):
        return values
    it = iter(values)
    return [None if c is None else next(it) for c in column]


def _expand(values: list, order: list[int] | None) -> list:
    if order is None:
        return values
    if any(isinstance(v, list) for v in values):
        return [list(v) if isinstance(v, list) else v for v in map(values.__getitem__, order)]
    return list(map(values.__getitem__, order))


class CellOnlineResponse(OnlineResponse):
    def __init__(self, proto, feature_types: dict[str, ValueType] | None, cells: dict[str, Cells]) -> None:
        super().__init__(proto, feature_types=feature_types)
        self._cells = cells

    def to_dict(self, include_event_timestamps: bool = False) -> dict[str, Any]:
        out: dict[str, list[Any]] = {}
        for name, vector in zip(self.proto.metadata.feature_names.val, self.proto.results):
            feature_type = self._feature_types.get(name)
            cells = self._cells.get(name)
            if cells is None:
                out[name] = [python_value(v, feature_type) for v in vector.values]
            else:
                column, order = cells
                out[name] = _expand(decode_cells(column, feature_type), order)
            if include_event_timestamps:
                out[name + TIMESTAMP_POSTFIX] = [ts.seconds for ts in vector.event_timestamps]
        return out
