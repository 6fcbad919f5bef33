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

import functools
import math
import time
from itertools import chain
from operator import attrgetter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from feast.online_response import TIMESTAMP_POSTFIX, OnlineResponse
from feast.protos.feast.serving.ServingService_pb2 import FieldStatus, GetOnlineFeaturesResponse
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import feast_value_type_to_python_type, python_values_to_proto_values
from feast.value_type import ValueType
from google.protobuf.timestamp_pb2 import Timestamp

from feedstore.feast import private
from feedstore.feast.online import codec
from feedstore.feast.online.wire import len_prefix, read_varint

PRESENT = FieldStatus.PRESENT

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


def _value_column_class():
    """A message with every ``Value`` field, repeated and outside the oneof: the concatenation of
    a column's serialised ``Value`` cells parses as one of these in a single call, each cell
    adding one element to the field of its kind (a parse per column instead of per cell)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    name = "feedstore.online.ValueColumn"
    pool = descriptor_pool.Default()
    try:
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(name))
    except KeyError:
        pass
    message = descriptor_pb2.DescriptorProto()
    ValueProto.DESCRIPTOR.CopyToProto(message)
    message.name = "ValueColumn"
    message.ClearField("oneof_decl")
    for field in message.field:
        field.label = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
        field.ClearField("oneof_index")
        field.ClearField("proto3_optional")
    pool.Add(descriptor_pb2.FileDescriptorProto(
        name="feedstore/online/value_column.proto", package="feedstore.online", syntax="proto3",
        dependency=[ValueProto.DESCRIPTOR.file.name], message_type=[message]))
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(name))


ValueColumn = _value_column_class()


_VAL = attrgetter("val")


def _column_of(kind: str, lists: bool = False) -> Callable[[list[bytes]], list | None]:
    """Cells of one ``Value`` kind, parsed as one ``ValueColumn``; ``None`` (so each cell is
    converted as Feast does) unless every cell added exactly one element of that kind."""
    def decode(cells: list[bytes]) -> list | None:
        values = getattr(ValueColumn.FromString(b"".join(cells)), kind)
        if len(values) != len(cells):
            return None
        return list(map(list, map(_VAL, values))) if lists else list(values)
    return decode


def _numeric_list(tag: bytes, dtype: str, kind: str) -> Callable[[list[bytes]], list | None]:
    """Float/double lists of one length (embeddings): one matrix; other shapes: one column parse."""
    width = np.dtype(dtype).itemsize
    fallback = _column_of(kind, lists=True)

    def decode(cells: list[bytes]) -> list | None:
        first = cells[0]
        if not first.startswith(tag):
            return fallback(cells)
        _, pos = read_varint(first, len(tag))
        if pos < len(first):
            _, pos = read_varint(first, pos + 1)  # FloatList/DoubleList field 1 (packed)
        header, size = first[:pos], len(first)
        if (size - pos) % width or set(map(len, cells)) != {size}:
            return fallback(cells)
        rows = np.frombuffer(b"".join(cells), np.uint8).reshape(len(cells), size)
        if not (rows[:, :pos] == np.frombuffer(header, np.uint8)).all():
            return fallback(cells)
        return np.ascontiguousarray(rows[:, pos:]).view(dtype).tolist()
    return decode


_BULK: dict[ValueType, Callable[[list[bytes]], list | None]] = {
    ValueType.INT64: _column_of("int64_val"),
    ValueType.INT32: _column_of("int32_val"),
    ValueType.BOOL: _column_of("bool_val"),
    ValueType.DOUBLE: _column_of("double_val"),
    ValueType.FLOAT: _column_of("float_val"),
    ValueType.STRING: _column_of("string_val"),
    ValueType.BYTES: _column_of("bytes_val"),
    ValueType.FLOAT_LIST: _numeric_list(b"\x82\x01", "<f4", "float_list_val"),
    ValueType.DOUBLE_LIST: _numeric_list(b"\x7a", "<f8", "double_list_val"),
    ValueType.STRING_LIST: _column_of("string_list_val", lists=True),
    ValueType.BYTES_LIST: _column_of("bytes_list_val", lists=True),
    ValueType.INT64_LIST: _column_of("int64_list_val", lists=True),
    ValueType.INT32_LIST: _column_of("int32_list_val", lists=True),
    ValueType.BOOL_LIST: _column_of("bool_list_val", lists=True),
}


def decode_cells(column: Sequence[bytes | None], feature_type: ValueType | None) -> list:
    """Python values of serialised ``Value`` cells (``None`` or empty for a missing one), converted
    in bulk when every cell has the declared type's exact shape, else one by one as Feast does."""
    present = list(filter(None, column))
    bulk = _BULK.get(feature_type) if present else None
    values = bulk(present) if bulk is not None else None
    if values is None:
        parse = ValueProto.FromString
        return [python_value(parse(c), feature_type) if c else None for c in column]
    if len(present) == len(column):
        return values
    it = iter(values)
    return [next(it) if c else None for c in column]


def repeated_rows(order: list[int] | None) -> list[int]:
    """The output rows whose entity an earlier row already has: the only rows whose list values
    need a copy of their own (the first row of an entity takes the decoded list itself)."""
    if order is None:
        return []
    seen: set[int] = set()
    add = seen.add
    return [r for r, u in enumerate(order) if u in seen or add(u)]


def _expand(values: list, order: list[int] | None, repeats: list[int] | None = None) -> list:
    """One value per output row; rows never share a list (callers may mutate one row's).
    ``repeats``: ``repeated_rows(order)``, computed once per view by callers expanding many."""
    if order is None:
        return values
    if repeats is None:
        repeats = repeated_rows(order)
    out = list(map(values.__getitem__, order))
    first = next((v for v in values if v is not None), None)
    if isinstance(first, list):
        for r in repeats:
            v = out[r]
            if v is not None:
                out[r] = list(v)
    return out


@dataclass(slots=True)
class ViewCells:
    """One feature view's read: per distinct entity, the serialised ``Value`` of each feature
    (``None`` or empty when missing), its ``FieldStatus`` and event time (epoch µs, 0 when not
    present); ``order`` maps output rows to distinct entities (``None``: one to one)."""

    names: list[str]
    columns: list[Sequence[bytes | None]]
    status: list[int]
    ts: list[int]
    order: list[int] | None
    output_len: int
    meta_name: str
    version: int
    decoded: list[list] | None = None
    """Per feature, its Python value per distinct entity (``decode``), once converted."""

    def decode(self, feature_types: dict[str, ValueType]) -> None:
        """Converts the cells now: the direct read calls this for each view while Redis is still
        answering the next one's commands, so ``to_dict`` only expands rows."""
        self.decoded = [decode_cells(column, feature_types.get(name)) for name, column in zip(self.names, self.columns)]

    def take_values(self, feature_types: dict[str, ValueType]) -> list[list]:
        """Per feature, the Python value of each distinct entity: the values ``decode`` made,
        handed over once (the caller's result owns them), else converted afresh."""
        decoded, self.decoded = self.decoded, None
        if decoded is None:
            return [decode_cells(column, feature_types.get(name)) for name, column in zip(self.names, self.columns)]
        return decoded


def append_view(response: GetOnlineFeaturesResponse, view: ViewCells, include_version: bool) -> None:
    """Appends the view's ``FeatureVector`` s as protobuf bytes, one parse per feature instead of a
    ``Value`` object per cell."""
    order, status = view.order, view.status
    present_at = [u for u, s in enumerate(status) if s == PRESENT]
    ts_cells = [b"\x1a\x00"] * len(status)
    for u, cell in zip(present_at, codec.timestamp_cells([view.ts[u] for u in present_at])):
        ts_cells[u] = cell
    if order is None:
        ts_part = b"".join(ts_cells)
        status_part = b"\x12" + len_prefix(view.output_len) + bytes(status)
    else:
        ts_part = b"".join([ts_cells[u] for u in order])
        status_part = b"\x12" + len_prefix(view.output_len) + bytes([status[u] for u in order])
    response.metadata.feature_names.val.extend(view.names)
    if include_version and view.meta_name not in [m.name for m in response.metadata.feature_view_metadata]:
        meta = response.metadata.feature_view_metadata.add()
        meta.name = view.meta_name
        meta.version = view.version
    for column in view.columns:
        cells = [b"\x0a" + len_prefix(len(v)) + v if v else b"\x0a\x00" for v in column]
        body = b"".join(cells) if order is None else b"".join([cells[u] for u in order])
        response.results.add().MergeFromString(body + status_part + ts_part)


class CellOnlineResponse(OnlineResponse):
    """Feast's ``OnlineResponse`` over the cells read. Given the entity columns, the proto is
    built the first time ``.proto`` is read (``to_dict``/``to_df`` never need it); given Feast's
    proto (on-demand views, request data...), ``to_dict`` follows that proto and takes the cells
    of the features it finds in the views."""

    def __init__(self, feature_types: dict[str, ValueType] | None, views: list[ViewCells], *,
                 entities: dict[str, tuple[list, ValueType]] | None = None, proto=None,
                 include_version: bool = False) -> None:
        if proto is None and entities is None:
            raise ValueError("a CellOnlineResponse needs Feast's proto or the entity columns")
        private.set_response_feature_types(self, feature_types or {})  # as OnlineResponse.__init__ would
        self._views = views
        self._entities = entities
        self._include_version = include_version
        self._proto = proto

    @property
    def proto(self) -> GetOnlineFeaturesResponse:
        if self._proto is None:
            self._proto = self._build_proto()
        return self._proto

    @proto.setter
    def proto(self, value: GetOnlineFeaturesResponse) -> None:
        self._proto = value

    def _build_proto(self) -> GetOnlineFeaturesResponse:
        """What Feast's ``_populate_result_rows_from_columnar`` + the view reads produce."""
        response = GetOnlineFeaturesResponse(results=[])
        for name, (values, value_type) in (self._entities or {}).items():
            response.metadata.feature_names.val.append(name)
            response.results.append(GetOnlineFeaturesResponse.FeatureVector(
                values=python_values_to_proto_values(values, value_type),
                statuses=[PRESENT] * len(values), event_timestamps=[Timestamp()] * len(values)))
        for view in self._views:
            append_view(response, view, self._include_version)
        return response

    def to_dict(self, include_event_timestamps: bool = False) -> dict[str, Any]:
        if self._entities is None:
            return self._to_dict_along_proto(include_event_timestamps)
        feature_types = private.response_feature_types(self)
        out: dict[str, list[Any]] = {}
        for name, (values, _) in self._entities.items():
            out[name] = list(values)
            if include_event_timestamps:
                out[name + TIMESTAMP_POSTFIX] = [0] * len(values)
        for view in self._views:
            seconds = [t // 1_000_000 for t in view.ts] if include_event_timestamps else None
            repeats = repeated_rows(view.order)
            for name, values in zip(view.names, view.take_values(feature_types)):
                out[name] = _expand(values, view.order, repeats)
                if seconds is not None:
                    out[name + TIMESTAMP_POSTFIX] = _expand(seconds, view.order, repeats)
        return out

    def _to_dict_along_proto(self, include_event_timestamps: bool) -> dict[str, Any]:
        cells = {name: (column, view.order, repeated_rows(view.order))
                 for view in self._views for name, column in zip(view.names, view.columns)}
        feature_types = private.response_feature_types(self)
        out: dict[str, list[Any]] = {}
        for name, vector in zip(self.proto.metadata.feature_names.val, self.proto.results):
            feature_type = feature_types.get(name)
            found = cells.get(name)
            if found is None:
                out[name] = [python_value(v, feature_type) for v in vector.values]
            else:
                out[name] = _expand(decode_cells(found[0], feature_type), found[1], found[2])
            if include_event_timestamps:
                out[name + TIMESTAMP_POSTFIX] = [ts.seconds for ts in vector.event_timestamps]
        return out


# ---- the feature server's JSON ------------------------------------------------------------

_STATUS_NAMES = {0: "INVALID", 1: "PRESENT", 2: "NULL_VALUE", 3: "NOT_FOUND", 4: "OUTSIDE_MAX_AGE"}
_EPOCH = "1970-01-01T00:00:00Z"
_JSON_PLAIN = frozenset({ValueType.INT64, ValueType.INT32, ValueType.BOOL, ValueType.DOUBLE, ValueType.FLOAT,
                         ValueType.STRING, ValueType.INT64_LIST, ValueType.INT32_LIST, ValueType.BOOL_LIST,
                         ValueType.DOUBLE_LIST, ValueType.FLOAT_LIST, ValueType.STRING_LIST})
"""Types whose Python values are already what Feast's JSON conversion gives (bar non-finite floats)."""


def response_dict(response: OnlineResponse) -> dict[str, Any]:
    """``feast.feature_server_utils.convert_response_to_dict(response.proto)``, what the feature
    server answers. For the direct path's response it is built from the cells: each distinct
    entity's value and timestamp converted once, not a ``Value`` per cell (for 1 user × 500 items,
    ~60 ms of the ~70 ms the conversion of the proto takes); anything else converts the proto."""
    from feast.feature_server_utils import convert_response_to_dict

    if isinstance(response, CellOnlineResponse) and response._entities is not None:
        found = _cells_json(response)
        if found is not None:
            return found
    return convert_response_to_dict(response.proto)


@functools.lru_cache(maxsize=4096)
def _timestamp_text(us: int) -> str:
    """``_timestamp_to_str`` of the ``Timestamp`` built from epoch µs (adaptive precision).
    Cached: a batch view's rows mostly share one event time, and formatting costs ~2 µs."""
    if us == 0:
        return _EPOCH
    seconds, micros = divmod(us, 1_000_000)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if micros == 0:
        return base + "Z"
    if micros % 1000 == 0:
        return base + ".%03dZ" % (micros // 1000)
    return base + ".%06dZ" % micros


def _json_safe(values: list) -> list | None:
    """The values as Feast's JSON conversion gives them: non-finite floats as protobuf JSON's
    strings ("NaN", "Infinity"); ``None`` when a value is bytes (base64 there: Feast's to do)."""
    from feast.feature_server_utils import _float_to_native

    kinds = set(map(type, values))
    if bytes in kinds:
        return None
    numbers = kinds <= {float, int, bool, type(None)}  # then checked in C (None and 0 dropped: finite)
    if float in kinds and not (all(map(math.isfinite, filter(None, values))) if numbers
                               else all(math.isfinite(v) for v in values if type(v) is float)):
        values = [_float_to_native(v) if type(v) is float else v for v in values]
    if list in kinds:
        lists = [v for v in values if type(v) is list]
        inner = set(map(type, chain.from_iterable(lists)))
        if bytes in inner:
            return None
        finite = all(map(math.isfinite, chain.from_iterable(lists))) if inner == {float} else \
            all(math.isfinite(x) for v in lists for x in v if type(x) is float)
        if not finite:
            values = [[_float_to_native(x) if type(x) is float else x for x in v] if type(v) is list else v
                      for v in values]
    return values


def _json_vectors(view: ViewCells, feature_types: dict[str, ValueType]) -> list[dict[str, Any]] | None:
    """One view's ``results`` entries, or ``None`` when a type needs Feast's converter."""
    types = [feature_types.get(name) for name in view.names]
    if any(t not in _JSON_PLAIN for t in types):
        return None
    repeats = repeated_rows(view.order)
    statuses = _expand([_STATUS_NAMES.get(s, "INVALID") for s in view.status], view.order, repeats)
    stamps = _expand([_timestamp_text(t) if s == PRESENT else _EPOCH for s, t in zip(view.status, view.ts)],
                     view.order, repeats)
    vectors = []
    for values in view.take_values(feature_types):
        safe = _json_safe(values)
        if safe is None:
            return None
        vectors.append({"values": _expand(safe, view.order, repeats), "statuses": list(statuses),
                        "event_timestamps": list(stamps)})
    return vectors


def _json_metadata(names: list[str], views: list[ViewCells], include_version: bool) -> dict[str, Any]:
    meta: dict[str, Any] = {"feature_names": names}
    if include_version:
        entries = {}
        for view in views:
            entry = {"name": view.meta_name} if view.meta_name else {}
            if view.version:
                entry["version"] = view.version
            entries.setdefault(view.meta_name, entry)
        if entries:
            meta["feature_view_metadata"] = list(entries.values())
    return meta


def _cells_json(self: CellOnlineResponse) -> dict[str, Any] | None:
    """``response_dict`` from the cells (entity columns given), or ``None`` to convert the proto.
    Rows of one entity share its status and timestamp strings (immutable), never a list."""
    feature_types = private.response_feature_types(self)
    results: list[dict[str, Any]] = []
    names: list[str] = []
    for name, (values, value_type) in (self._entities or {}).items():
        if value_type not in (ValueType.INT64, ValueType.STRING):
            return None
        names.append(name)
        results.append({"values": list(values), "statuses": ["PRESENT"] * len(values),
                        "event_timestamps": [_EPOCH] * len(values)})
    for view in self._views:
        vectors = _json_vectors(view, feature_types)
        if vectors is None:
            return None
        names.extend(view.names)
        results.extend(vectors)
    return {"results": results, "metadata": _json_metadata(names, self._views, self._include_version)}

