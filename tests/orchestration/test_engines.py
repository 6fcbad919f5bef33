"""The daily feature SQL, one definition, on DuckDB and on Spark (local mode): the same rows on the
same inputs, the edge cases of ``assets/test_definitions.py`` and a few hundred random events."""

from __future__ import annotations

from datetime import timedelta

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from feedstore.contract.events import EVENT_SCHEMA
from feedstore.contract.rules import CATEGORIES, EVENT_TYPES
from orchestration.assets.features import item_engagement_table, user_activity_table, user_realtime_table
from orchestration.engines import SparkRelations, spark_sql
from orchestration.sources import CATALOG_SCHEMA
from tests.orchestration.assets.test_definitions import DAY, END, PROFILES, _events

TABLES = {"user_activity_features": user_activity_table, "item_engagement_features": item_engagement_table,
          "user_realtime_features": user_realtime_table}


def _inputs() -> dict[str, pa.Table]:
    rng = np.random.default_rng(18)
    n = 400
    edge = _events()
    extra = pd.DataFrame({
        "user_id": rng.integers(1, 30, n), "item_id": rng.integers(10, 60, n),
        "event_type": np.asarray(EVENT_TYPES, dtype=object)[rng.integers(0, len(EVENT_TYPES), n)],
        "timestamp": pd.to_datetime(END, utc=True) - pd.to_timedelta(rng.integers(0, 35 * 86_400_000, n), unit="ms"),
        "dwell_time_ms": pd.array(np.where(rng.random(n) < 0.3, None, rng.integers(0, 60_000, n)), dtype="Int32"),
    })
    extra["event_id"] = [f"x{i}" for i in range(n)]
    for c in ("device", "platform", "session_id"):
        extra[c] = None
    events = pd.concat([edge, extra], ignore_index=True)
    items = sorted(events.item_id.unique())
    catalog = pa.table({
        "item_id": items, "creator_id": [1] * len(items),
        "category": [CATEGORIES[i % len(CATEGORIES)] for i in range(len(items))],
        "tags": [[]] * len(items), "media_type": ["video"] * len(items),
        "created_at": [END - timedelta(days=int(i) % 50, hours=int(i) % 7) for i in items],
        "updated_at": [None] * len(items)}, schema=CATALOG_SCHEMA)
    return {
        "activity": pa.Table.from_pandas(events[EVENT_SCHEMA.names], schema=EVENT_SCHEMA, preserve_index=False),
        "catalog": catalog,
        "items": catalog.select(["item_id", "created_at"]),
        "profiles": pa.table({"user_id": pa.array(sorted(set(PROFILES) | set(range(1, 35))), pa.int64())}),
    }


@pytest.fixture(scope="module")
def computed(stack):
    """Every table function on both engines (one Spark session for the module)."""
    from feedstore import spark

    inputs = _inputs()
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    relations = SparkRelations(spark.session(stack))
    for name, table in inputs.items():
        con.register(name, table)  # a view of that name over the Arrow table, no SQL to compose
        relations.register(name, table)
    try:
        return {view: (compute(con, DAY), compute(relations, DAY)) for view, compute in TABLES.items()}
    finally:
        con.close()


def _assert_equal(duck: pa.Table, spark: pa.Table, view: str) -> None:
    assert duck.schema == spark.schema, view
    key = [c for c in duck.column_names if c in ("user_id", "item_id", "event_timestamp")]
    left, right = (t.sort_by([(k, "ascending") for k in key]).to_pydict() for t in (duck, spark))
    for column in duck.column_names:
        field = duck.schema.field(column)
        a, b = left[column], right[column]
        if pa.types.is_floating(field.type):
            assert b == pytest.approx(a, rel=1e-12, abs=1e-12), (view, column)
        elif pa.types.is_list(field.type):
            assert [None if x is None else pytest.approx(x, rel=1e-6) for x in b] == a, (view, column)
        else:
            assert a == b, (view, column)


@pytest.mark.parametrize("view", list(TABLES))
def test_duckdb_and_spark_compute_the_same_rows(computed, view):
    duck, spark = computed[view]
    assert duck.num_rows > 10
    _assert_equal(duck, spark, view)


def test_the_compared_rows_are_not_trivial(computed):
    activity, _ = computed["user_activity_features"]
    rows = activity.to_pandas()
    assert (rows.interactions_30d > 0).sum() > 10 and (rows.interactions_30d == 0).any()
    assert (rows.like_rate_7d > 0).any() and rows.top_category_30d.isna().any()
    engagement, _ = computed["item_engagement_features"]
    assert (engagement.to_pandas().engagement_rate_7d > 0).any()


def test_queries_are_compiled_to_spark_with_bound_parameters():
    compiled = spark_sql("SELECT count(*) FILTER (WHERE list_contains($engaged, event_type)) AS n, "
                         "date_diff('microsecond', created_at, $end) AS age FROM activity")
    assert ":engaged" in compiled and ":end" in compiled and "$" not in compiled
    assert "ARRAY_CONTAINS" in compiled.upper()
