"""What a ``get_online_features`` request must get right, checked before anything is read.

Feast answers a malformed request through the SDK with whatever its code trips on: an
``IndexError`` for empty ``entity_rows``, "pop from an empty set" for no columns, "All entity
rows must have the same columns" for columns of different lengths, "Missing join key values for
keys: [every key of the project]" for a wrong join key, "Value out of range" for 2^70, and
``True`` or ``1.5`` read as user 1. Here each of those is one line naming what is wrong, raised
as a ``RequestError``: a ``FeastError`` (Feast's feature server answers it with its 4xx status)
and a ``ValueError`` or ``KeyError`` as Feast's own error for the same request was, so callers
that caught those still do. The HTTP server checks its JSON body first with the same words
(``feedstore.feast.serving``); these checks are the SDK's, where values are Python objects.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from operator import itemgetter
from typing import Any

import numpy as np
from feast.errors import FeastError, FeatureViewNotFoundException, OnDemandFeatureViewNotFoundException
from feast.protos.feast.types.Value_pb2 import RepeatedValue
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.value_type import ValueType

from feedstore.feast import private

INT64 = (-(2**63), 2**63 - 1)
DECIMAL = re.compile(r"-?[0-9]{1,30}")
INTEGER_TYPES = {ValueType.INT64, ValueType.INT32}
GroupedRefs = list[tuple[Any, list[str]]]


class RequestError(FeastError, ValueError):
    """A request the caller got wrong: one line, 400 from Feast's feature server."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.__overridden_message__ = message

    def http_status_code(self) -> int:
        return self.status


class JoinKeyError(RequestError, KeyError):
    """A request's join keys are not those its features are keyed by. A ``KeyError`` as Feast's own
    ("Missing join key values for keys: ..." names every key of the project, not the wrong one)."""


class UnknownFeatureError(RequestError, KeyError):
    """A feature its view does not have (Feast: "Feature x not found in projection v", a bare ``KeyError``)."""

    status = 404


def entity_columns(entity_rows: Any) -> dict[str, list]:
    """``entity_rows`` in either of Feast's shapes (rows of join key -> value, or join key ->
    values) as columns, or a ``RequestError`` saying what is wrong with its shape."""
    if isinstance(entity_rows, list):
        return _rows_as_columns(entity_rows)
    if not isinstance(entity_rows, Mapping):
        raise RequestError(f"entity_rows must be a list of rows or a dict of columns, got {type(entity_rows).__name__}")
    if not entity_rows:
        raise RequestError("entity_rows has no join keys: give join key -> list of values")
    columns = {}
    for key, values in entity_rows.items():
        if isinstance(values, RepeatedValue):
            values = values.val
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):  # Feast takes no arrays
            raise RequestError(f"entity_rows[{key!r}] must be a list of values, got {type(values).__name__}")
        columns[key] = list(values)
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        raise RequestError("every entity_rows column must have the same length, got "
                           + ", ".join(f"{k}: {len(v)}" for k, v in columns.items()))
    if lengths == {0}:
        raise RequestError("entity_rows has no rows: every column is empty")
    return columns


def _rows_as_columns(rows: list) -> dict[str, list]:
    if not rows:
        raise RequestError("entity_rows is empty: give at least one row of join key -> value")
    if set(map(type, rows)) == {dict} and rows[0]:
        first = rows[0].keys()
        if all(map(first.__eq__, map(dict.keys, rows))):  # plain dicts of one key set: checked in C
            return {k: list(map(itemgetter(k), rows)) for k in first}
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise RequestError(f"entity_rows[{i}] must be a dict of join key -> value, got {type(row).__name__}")
    names = list(rows[0])
    if not names:
        raise RequestError("entity_rows[0] has no join keys")
    for i, row in enumerate(rows):
        if row.keys() != rows[0].keys():
            raise RequestError(f"every entity row must have the same keys: row 0 has {', '.join(sorted(rows[0]))}, "
                               f"row {i} has {', '.join(sorted(row)) or 'none'}")
    return {k: [r[k] for r in rows] for k in names}


def check_ids(columns: dict[str, list], entity_type_map: Mapping[str, ValueType]) -> None:
    """Every value of a join-key column is an id of its entity's type: an integer (not a bool, in
    64 bits; or its decimal string, which Feast converts) for integer keys, a string for string
    keys, never null or NaN. Columns that are not join keys (request data of on-demand views)
    are Feast's to check."""
    for key, values in columns.items():
        value_type = entity_type_map.get(key)
        if value_type is None or _plain_ids(values, value_type):
            continue
        for row, value in enumerate(values):
            problem = id_problem(value, value_type)
            if problem is not None:
                raise RequestError(f"entity_rows {key} (row {row}): {problem}")


def _plain_ids(values: list, value_type: ValueType) -> bool:
    """Whether every value is an id with no need for a closer look: Python ``int`` s (not bools,
    which are their own type) within 64 bits for integer keys, ``str`` s for string keys. The
    common case, checked in C over the column (a 500-row call's per-value check was ~0.5 ms);
    any other column is checked value by value for the message."""
    kinds = set(map(type, values))
    if value_type in INTEGER_TYPES:
        return kinds == {int} and INT64[0] <= min(values) and max(values) <= INT64[1]
    return value_type == ValueType.STRING and kinds == {str}


def id_problem(value: Any, value_type: ValueType) -> str | None:
    """Why ``value`` is not an id of ``value_type``, or None."""
    if isinstance(value, ValueProto):
        return "an empty Value proto is not an id" if value.WhichOneof("val") is None else None
    if value is None or (isinstance(value, (float, np.floating)) and math.isnan(value)):
        return f"{_shown(value)} is not an id"
    if value_type in INTEGER_TYPES:
        if isinstance(value, str) and DECIMAL.fullmatch(value):
            value = int(value)  # as Feast converts it: JSON clients may send ids as strings
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            return f"{_shown(value)} is not an integer id"
        if not INT64[0] <= int(value) <= INT64[1]:
            return f"{_shown(value)} does not fit in 64 bits"
        return None
    if value_type == ValueType.STRING and not isinstance(value, str):
        return f"{_shown(value)} is not a string id"
    return None


def _shown(value: Any) -> str:
    if value is None or (isinstance(value, (float, np.floating)) and math.isnan(value)):
        return "null" if value is None else "NaN"
    text = repr(value.item() if isinstance(value, np.generic) else value)
    return text if len(text) <= 40 else text[:37] + "..."


def needed_join_keys(grouped_refs: GroupedRefs) -> set[str]:
    """The join keys (as the request names them, through each view's projection) the views read by."""
    return {view.projection.join_key_map.get(c.name, c.name) for view, _ in grouped_refs
            for c in view.entity_columns} - {"__dummy_id"}


def join_key_problem(given: set[str], needed: set[str]) -> str | None:
    """The one-line message for keys that are not the ones needed, or None; the HTTP and SDK paths share it."""
    unknown, missing = sorted(given - needed), sorted(needed - given)
    if unknown:
        return (f"unknown join key {', '.join(unknown)}: the requested features are keyed by "
                f"{', '.join(sorted(needed))}")
    if missing:
        return f"missing join key {', '.join(missing)} for the requested features"
    return None


def check_join_keys(ctx: private.RequestContext, columns: dict[str, list]) -> None:
    """Raises ``JoinKeyError`` for a request of feature views only whose entity columns are not
    exactly the join keys of its views (on-demand views take request data beside them: Feast checks those)."""
    if ctx.on_demand_views or ctx.request_data or ctx.entityless:
        return
    problem = join_key_problem(set(columns), needed_join_keys(ctx.grouped_refs))
    if problem is not None:
        raise JoinKeyError(problem)


def unresolved_features(registry, project: str, features) -> RequestError | None:
    """For a list of feature references Feast could not resolve: the error naming the reference
    that is not one, or the feature its view does not have (in the HTTP server's words); None
    for anything else (an unknown view is Feast's ``FeatureViewNotFoundException``, already one
    line and a 404)."""
    if not isinstance(features, list):
        return None
    for ref in features:
        view_name, sep, feature = str(ref).partition(":")
        if not sep or not feature:
            return RequestError(f"{ref!r} is not a feature reference (view:feature)")
        try:
            view = registry.get_feature_view(view_name.split("@", 1)[0], project, allow_cache=True)
        except FeatureViewNotFoundException:
            try:
                view = registry.get_on_demand_feature_view(view_name.split("@", 1)[0], project, allow_cache=True)
            except OnDemandFeatureViewNotFoundException:
                return None
        if feature not in {f.name for f in view.features}:
            return UnknownFeatureError(f"feature view {view.name!r} has no feature {feature!r}")
    return None
