"""Column-at-a-time encoding of Feast values and timestamps.

Feast's local materialization builds one ``ValueProto`` object per cell (~20K rows/s). The
bytes of a ``ValueProto`` are simple enough to produce for a whole Arrow column at once, and
the result must be byte-for-byte what ``ValueProto.SerializeToString()`` gives, so readers
that parse with protobuf see exactly what stock Feast would have written
(tests/feedstore/feast/online/test_codec.py checks this against Feast's own converter).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.value_type import ValueType

from feedstore.feast.online.wire import len_prefix, split, varint, varints


def _fixed_width(tag: bytes, data: np.ndarray, width: int) -> list[bytes]:
    """tag + fixed-width little-endian payload per row, built as one matrix."""
    data = np.ascontiguousarray(data)
    n = data.nbytes // width
    row = len(tag) + width
    mat = np.empty((n, row), dtype=np.uint8)
    mat[:, : len(tag)] = np.frombuffer(tag, dtype=np.uint8)
    mat[:, len(tag):] = data.view(np.uint8).reshape(n, width)
    buf = mat.tobytes()
    return [buf[i * row:(i + 1) * row] for i in range(n)]


def _with_nulls(arr: pa.Array, encode: Callable[[pa.Array], list[bytes]]) -> list[bytes]:
    """Feast writes an empty ``Value`` for a null cell."""
    if arr.null_count == 0:
        return encode(arr)
    valid = np.asarray(arr.is_valid())
    encoded = encode(arr.filter(pa.array(valid))) if valid.any() else []
    out: list[bytes] = [b""] * len(arr)
    for i, b in zip(np.flatnonzero(valid).tolist(), encoded):
        out[i] = b
    return out


def _scalar_int(tag: bytes) -> Callable[[pa.Array], list[bytes]]:
    def encode(arr: pa.Array) -> list[bytes]:
        buf, offsets = varints(arr.to_numpy(zero_copy_only=False).astype(np.int64))
        return [tag + v for v in split(buf, offsets)]
    return encode


def _scalar_fixed(tag: bytes, dtype: str) -> Callable[[pa.Array], list[bytes]]:
    def encode(arr: pa.Array) -> list[bytes]:
        data = arr.to_numpy(zero_copy_only=False).astype(dtype)
        return _fixed_width(tag, data, np.dtype(dtype).itemsize)
    return encode


def _bool(arr: pa.Array) -> list[bytes]:
    return [b"\x38\x01" if v else b"\x38\x00" for v in arr.to_pylist()]


def _string(tag: bytes) -> Callable[[pa.Array], list[bytes]]:
    def encode(arr: pa.Array) -> list[bytes]:
        values = arr.cast(pa.binary()) if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type) else arr
        return [tag + len_prefix(len(b)) + b for b in values.to_pylist()]
    return encode


def _packed_list(tag: bytes, dtype: str | None) -> Callable[[pa.Array], list[bytes]]:
    """A list of numbers: ``tag len( 0x0a len(packed) )``; a fixed length takes the matrix path."""
    def encode(arr: pa.Array) -> list[bytes]:
        arr = arr.cast(pa.list_(arr.type.value_type)) if pa.types.is_large_list(arr.type) else arr
        offsets = np.asarray(arr.offsets)
        flat = arr.values.slice(offsets[0], offsets[-1] - offsets[0]).to_numpy(zero_copy_only=False)
        offsets = offsets - offsets[0]
        lengths = np.diff(offsets)
        if dtype is None:  # varint-packed integers
            buf, voff = varints(flat.astype(np.int64))
            payload_offsets = voff[offsets]
        else:
            flat = flat.astype(dtype)
            buf = flat.tobytes()
            payload_offsets = offsets * np.dtype(dtype).itemsize
        sizes = np.diff(payload_offsets).tolist()
        if dtype is not None and len(lengths) and (lengths == lengths[0]).all() and lengths[0] > 0:
            inner = b"\x0a" + len_prefix(sizes[0])
            header = tag + len_prefix(len(inner) + sizes[0]) + inner
            return _fixed_width(header, flat, sizes[0])
        po = payload_offsets.tolist()
        out = []
        for i, size in enumerate(sizes):
            if size == 0:
                out.append(tag + b"\x00")
                continue
            inner = b"\x0a" + len_prefix(size) + buf[po[i]:po[i + 1]]
            out.append(tag + len_prefix(len(inner)) + inner)
        return out
    return encode


def _string_list(tag: bytes) -> Callable[[pa.Array], list[bytes]]:
    def encode(arr: pa.Array) -> list[bytes]:
        out = []
        for items in arr.to_pylist():
            inner = b"".join(b"\x0a" + len_prefix(len(b)) + b for b in (s.encode() if isinstance(s, str) else s for s in items))
            out.append(tag + len_prefix(len(inner)) + inner)
        return out
    return encode


_ENCODERS: dict[ValueType, Callable[[pa.Array], list[bytes]]] = {
    ValueType.BYTES: _string(b"\x0a"),
    ValueType.STRING: _string(b"\x12"),
    ValueType.INT32: _scalar_int(b"\x18"),
    ValueType.INT64: _scalar_int(b"\x20"),
    ValueType.DOUBLE: _scalar_fixed(b"\x29", "<f8"),
    ValueType.FLOAT: _scalar_fixed(b"\x35", "<f4"),
    ValueType.BOOL: _bool,
    ValueType.BYTES_LIST: _string_list(b"\x5a"),
    ValueType.STRING_LIST: _string_list(b"\x62"),
    ValueType.INT32_LIST: _packed_list(b"\x6a", None),
    ValueType.INT64_LIST: _packed_list(b"\x72", None),
    ValueType.DOUBLE_LIST: _packed_list(b"\x7a", "<f8"),
    ValueType.FLOAT_LIST: _packed_list(b"\x82\x01", "<f4"),
}


def encode_column(arr: pa.Array | pa.ChunkedArray, value_type: ValueType) -> list[bytes]:
    """Serialised ``ValueProto`` per row; types without a fast encoder go through Feast's converter."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    encoder = _ENCODERS.get(value_type)
    if encoder is None:
        from feast.type_map import python_values_to_proto_values

        protos = python_values_to_proto_values(arr.to_numpy(zero_copy_only=False), value_type)
        return [p.SerializeToString() for p in protos]
    return _with_nulls(arr, encoder)


# ---- timestamps --------------------------------------------------------------------------

def to_micros(ts: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Epoch microseconds of a timestamp column (naive timestamps are UTC, as in Feast)."""
    if isinstance(ts, pa.ChunkedArray):
        ts = ts.combine_chunks()
    if not pa.types.is_timestamp(ts.type):
        raise TypeError(f"expected a timestamp column, got {ts.type}")
    return pc.cast(ts, pa.timestamp("us", tz=ts.type.tz)).cast(pa.int64()).to_numpy(zero_copy_only=False)


def datetime_to_micros(dt: datetime) -> int:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    delta = dt - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def micros_to_datetime(us: int) -> datetime:
    return datetime.fromtimestamp(us // 1_000_000, tz=timezone.utc).replace(microsecond=us % 1_000_000)


def timestamp_cells(us: list[int]) -> list[bytes]:
    """``FeatureVector.event_timestamps`` entries (tag, length, ``Timestamp``) for epoch µs,
    the varints computed for the whole list at once."""
    if len(us) < 64:  # numpy's per-call overhead beats the per-value loop below this
        out = []
        for t in us:
            s, m = divmod(t, 1_000_000)
            body = (b"\x08" + varint(s) if s else b"") + (b"\x10" + varint(m * 1000) if m else b"")
            out.append(b"\x1a" + len_prefix(len(body)) + body)
        return out
    seconds, micros = np.divmod(np.asarray(us, dtype=np.int64), 1_000_000)
    sec_buf, sec_off = varints(seconds)
    ns_buf, ns_off = varints(micros * 1000)
    so, no = sec_off.tolist(), ns_off.tolist()
    out = []
    for i, (s, m) in enumerate(zip(seconds.tolist(), micros.tolist())):
        body = (b"\x08" + sec_buf[so[i]:so[i + 1]] if s else b"") + (b"\x10" + ns_buf[no[i]:no[i + 1]] if m else b"")
        out.append(b"\x1a" + len_prefix(len(body)) + body)
    return out


def parse_value(data: bytes | None) -> ValueProto:
    v = ValueProto()
    if data:
        v.ParseFromString(data)
    return v
