"""Turns Arrow data into the frame GX validates: list columns become small derived columns
(length, non-finite count, distribution sum error, out-of-vocabulary count) and the event rules
that need outside knowledge (catalog membership, ingestion window) become nullable columns
that hold the offending value, so a failure's examples show the bad ids and timestamps.

Runs batch by batch, so a 10M-item catalog with 32-float embeddings never reaches pandas as
Python lists.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from expectations import suites
from feedstore.contract import rules

BATCH_ROWS = 262_144
PANDAS_TYPES = {pa.int64(): pd.Int64Dtype(), pa.int32(): pd.Int32Dtype()}


@dataclass(frozen=True)
class Window:
    """Allowed event time: ``[first ingestion - max age, last ingestion + max skew]``,
    or per row when the data carries its own ``ingested_at``."""

    start: datetime | None = None
    end: datetime | None = None

    @classmethod
    def from_param(cls, ingested_at: Any) -> Window:
        if ingested_at is None:
            return cls()
        if isinstance(ingested_at, (tuple, list)):
            first, last = (_utc(t) for t in ingested_at)
        else:
            first = last = _utc(ingested_at)
        return cls(first, last)


def _utc(value: Any) -> datetime:
    ts = pd.Timestamp(value)
    return (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).to_pydatetime()


def is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _per_row(parents: np.ndarray, weights: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(parents, weights=weights, minlength=n)


def _list_columns(name: str, arr: pa.Array, batch: pa.RecordBatch) -> dict[str, pa.Array]:
    """Derived columns of one list column; null lists keep a null length, so ``not_null`` sees them."""
    n = len(arr)
    lengths = pc.list_value_length(arr)
    out: dict[str, pa.Array] = {suites.length_column(name): lengths.cast(pa.int64())}
    flat = pc.list_flatten(arr)
    vocabulary = suites.LIST_VOCABULARIES.get(name)
    if vocabulary is not None:
        parents = pc.list_parent_indices(arr).to_numpy()
        bad = pc.invert(pc.fill_null(pc.is_in(flat, pa.array(vocabulary)), False)).to_numpy(zero_copy_only=False)
        out[suites.unknown_column(name)] = pa.array(_per_row(parents, bad, n).astype(np.int64))
        return out
    if not (pa.types.is_floating(flat.type) or pa.types.is_integer(flat.type)):
        return out
    values = flat.to_numpy(zero_copy_only=False)
    finite = np.isfinite(values)
    width = pc.min_max(lengths).as_py()
    if lengths.null_count == 0 and n and width["min"] == width["max"]:
        # Same length everywhere (embeddings): per-row sums over a 2-D view, no bincount.
        shape = (n, width["min"])
        finite, values = finite.reshape(shape), values.reshape(shape)
        nonfinite, negative = (~finite).sum(axis=1), (finite & (values < 0)).sum(axis=1)
        sums = np.where(finite, values, 0).sum(axis=1, dtype=np.float64)
    else:
        parents = pc.list_parent_indices(arr).to_numpy()
        nonfinite, negative = _per_row(parents, ~finite, n), _per_row(parents, finite & (values < 0), n)
        sums = _per_row(parents, np.where(finite, values, 0.0), n)
    out[suites.nonfinite_column(name)] = pa.array(nonfinite.astype(np.int64))
    out[suites.negative_column(name)] = pa.array(negative.astype(np.int64))
    if "interactions_30d" in batch.schema.names:
        expected = pc.fill_null(pc.greater(batch.column("interactions_30d"), 0), False).to_numpy(zero_copy_only=False)
    else:
        expected = sums > rules.DISTRIBUTION_SUM_TOLERANCE
    out[suites.sum_error_column(name)] = pa.array(sums - expected.astype(np.float64))
    return out


def _unknown(ids: pa.Array, missing: np.ndarray) -> pa.Array:
    """The id where it is unknown, null where it is known."""
    bad = pc.is_in(ids, pa.array(missing, pa.int64()))
    return pc.if_else(bad, ids, pa.scalar(None, ids.type))


def _outside_window(batch: pa.RecordBatch, window: Window) -> pa.Array:
    ts = batch.column("timestamp")
    age, skew = (timedelta(seconds=rules.MAX_EVENT_AGE_SECONDS), timedelta(seconds=rules.MAX_FUTURE_SKEW_SECONDS))
    if window.start is not None:
        lo, hi = pa.scalar(window.start - age, ts.type), pa.scalar(window.end + skew, ts.type)
    elif "ingested_at" in batch.schema.names:
        ingested = batch.column("ingested_at").cast(ts.type)
        lo = pc.subtract(ingested, pa.scalar(age, pa.duration("us")))
        hi = pc.add(ingested, pa.scalar(skew, pa.duration("us")))
    else:
        now = datetime.now(timezone.utc)
        lo, hi = pa.scalar(now - age, ts.type), pa.scalar(now + skew, ts.type)
    bad = pc.or_(pc.less(ts, lo), pc.greater(ts, hi))
    return pc.if_else(pc.fill_null(bad, False), ts, pa.scalar(None, ts.type))


def _offending(columns: dict[str, pa.Array], name: str, out: str, regex: str, matching: bool) -> None:
    """``out`` holds the value of ``name`` where it (mis)matches ``regex``, null elsewhere."""
    arr = columns.get(name)
    if arr is None or not pa.types.is_string(arr.type):
        return
    hit = pc.match_substring_regex(arr, regex)
    bad = pc.fill_null(hit if matching else pc.invert(hit), False)
    columns[out] = pc.if_else(bad, arr, pa.scalar(None, arr.type))


def _label_mismatch(batch: pa.RecordBatch) -> pa.Array:
    """``sample_type=label`` where the pair is not one the contract allows, null elsewhere (a row
    with both missing is left to ``not_null``, as GX's pair expectation ignores it)."""
    types, labels = batch.column("sample_type"), batch.column("label").cast(pa.int64())
    allowed = pc.is_in(pc.binary_join_element_wise(types, pc.cast(labels, pa.string()), "="),
                       pa.array([f"{t}={suites.label_of(t)}" for t in rules.SAMPLE_TYPES]))
    both_missing = pc.and_(pc.is_null(types), pc.is_null(labels))
    bad = pc.and_(pc.invert(both_missing), pc.invert(pc.fill_null(allowed, False)))
    shown = pc.binary_join_element_wise(pc.fill_null(types, "null"), pc.fill_null(pc.cast(labels, pa.string()), "null"),
                                        "=")
    return pc.if_else(bad, shown, pa.scalar(None, pa.string()))


def prepare_batch(suite: str, batch: pa.RecordBatch, *, unknown_users: np.ndarray | None = None,
                  unknown_items: np.ndarray | None = None, window: Window = Window()) -> pa.RecordBatch:
    columns: dict[str, pa.Array] = {}
    for name, arr in zip(batch.schema.names, batch.columns):
        if is_list(arr.type):
            columns.update(_list_columns(name, arr, batch))
        else:
            columns[name] = arr
    if suite == "activity_events":
        if "user_id" in columns and unknown_users is not None:
            columns[suites.UNKNOWN_USER] = _unknown(batch.column("user_id").cast(pa.int64()), unknown_users)
        if "item_id" in columns and unknown_items is not None:
            columns[suites.UNKNOWN_ITEM] = _unknown(batch.column("item_id").cast(pa.int64()), unknown_items)
        if "timestamp" in columns and pa.types.is_timestamp(batch.column("timestamp").type):
            columns[suites.OUTSIDE_WINDOW] = _outside_window(batch, window)
        _offending(columns, "event_id", suites.MALFORMED_EVENT_ID, suites.UUID_REGEX, matching=False)
        _offending(columns, "session_id", suites.NONPRINTABLE_SESSION, f"[{suites.NON_PRINTABLE}]", matching=True)
        if "session_id" in columns and pa.types.is_string(columns["session_id"].type):
            columns[suites.SESSION_LENGTH] = pc.utf8_length(columns["session_id"]).cast(pa.int64())
    if suite == "training_dataset" and {"sample_type", "label"} <= set(batch.schema.names) \
            and pa.types.is_string(batch.schema.field("sample_type").type) \
            and pa.types.is_integer(batch.schema.field("label").type):
        columns[suites.LABEL_MISMATCH] = _label_mismatch(batch)
    return pa.RecordBatch.from_pydict(columns)


def batches(data: pa.Table | Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    if isinstance(data, pa.Table):
        yield from data.to_batches(max_chunksize=BATCH_ROWS)
    else:
        yield from data


def to_pandas(prepared: list[pa.RecordBatch]) -> pd.DataFrame:
    """Arrow-backed strings and plain numpy ints keep GX on vectorised paths (object strings and
    nullable ints send its type and range checks through a Python call per value); only an
    integer column that really has nulls becomes a nullable pandas integer."""
    table = pa.Table.from_batches(prepared)
    nullable_ints = {f.name for f in table.schema if pa.types.is_integer(f.type) and table.column(f.name).null_count}

    def types(t: pa.DataType):
        return pd.StringDtype("pyarrow") if pa.types.is_string(t) or pa.types.is_large_string(t) else None

    frame = table.to_pandas(types_mapper=types)
    for name in nullable_ints:
        frame[name] = table.column(name).to_pandas(types_mapper=PANDAS_TYPES.get)
    return frame
