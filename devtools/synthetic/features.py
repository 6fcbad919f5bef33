"""Feature tables shaped like the contract, for tests and benchmarks until the pipeline fills S3.

Values are random but typed from the view's own schema, so a change to a definition changes
the data with it; embeddings have ``EMBEDDING_DIM`` entries and ``category_dist_30d`` one per
category, summing to 1.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from feast import FeatureView
from feast.types import Array, Float32, Float64, Int64, String

from feedstore.contract import lake
from feedstore.contract.features import all_features
from feedstore.contract.rules import CATEGORIES, EMBEDDING_DIM
from feedstore.s3 import arrow_fs, bucket_path
from feedstore.settings import Settings, get_settings

_VOCAB = {f.name: f.vocabulary.values for f in all_features() if f.vocabulary is not None}


def _float_lists(rng: np.random.Generator, n: int, width: int, normalise: bool) -> pa.Array:
    values = rng.random((n, width), dtype=np.float32)
    if normalise:
        values /= values.sum(axis=1, keepdims=True)
    offsets = pa.array(np.arange(0, n * width + 1, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(values.ravel()))


def _column(name: str, dtype, n: int, rng: np.random.Generator) -> pa.Array:
    if dtype == Int64:
        return pa.array(rng.integers(0, 10_000, n), pa.int64())
    if dtype == Float64:
        return pa.array(rng.random(n), pa.float64())
    if dtype == String:
        vocab = _VOCAB.get(name, ("alpha", "beta", "gamma"))
        return pa.array(np.asarray(vocab, dtype=object)[rng.integers(0, len(vocab), n)], pa.string())
    if dtype == Array(Float32):
        width = len(CATEGORIES) if name == "category_dist_30d" else EMBEDDING_DIM
        return _float_lists(rng, n, width, normalise=name == "category_dist_30d")
    if dtype == Array(String):
        vocab = np.asarray(CATEGORIES, dtype=object)
        return pa.array([list(vocab[rng.integers(0, len(vocab), k)]) for k in rng.integers(0, 4, n)],
                        pa.list_(pa.string()))
    if dtype == Array(Int64):
        return pa.array([rng.integers(1, 1_000_000, k).tolist() for k in rng.integers(0, 20, n)],
                        pa.list_(pa.int64()))
    raise TypeError(f"no generator for {name}: {dtype}")


def frame(view: FeatureView, ids: np.ndarray, timestamps_us: np.ndarray, seed: int = 0) -> pa.Table:
    """One row per (id, timestamp) pair with the view's join key, ``event_timestamp`` and features."""
    rng = np.random.default_rng(seed)
    n = len(ids)
    columns = {
        view.entity_columns[0].name: pa.array(np.asarray(ids, dtype=np.int64)),
        "event_timestamp": pa.array(np.asarray(timestamps_us, dtype=np.int64)).cast(pa.timestamp("us", tz="UTC")),
    }
    for field in view.features:
        columns[field.name] = _column(field.name, field.dtype, n, rng)
    return pa.table(columns)


def write(view_name: str, table: pa.Table, settings: Settings | None = None, part: str = "part-0",
          ts_column: str = "event_timestamp") -> list[str]:
    """Writes one file per day under the contract's ``dt=`` partitions; returns the keys."""
    s = settings or get_settings()
    fs = arrow_fs(s)
    days = pc.strftime(table[ts_column], format="%Y-%m-%d", locale="C")
    keys = []
    for day in pc.unique(days).to_pylist():
        key = lake.feature_prefix(view_name, date.fromisoformat(day)) + f"{part}.parquet"
        pq.write_table(table.filter(pc.equal(days, day)), bucket_path(key, s), filesystem=fs,
                       row_group_size=256_000)
        keys.append(key)
    return keys


def concat(tables: Iterable[pa.Table]) -> pa.Table:
    return pa.concat_tables(list(tables))
