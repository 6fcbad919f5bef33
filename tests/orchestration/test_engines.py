"""The daily feature SQL, one definition, on DuckDB and on Spark (local mode): the same rows on the
same inputs, the edge cases of ``assets/test_definitions.py`` and a few hundred random events; then
the catalog features, embeddings and candidates read from objects on S3 by each engine, as the
assets read them (``engines.connect``)."""

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
from orchestration.sources import CATALOG_SCHEMA, EMBEDDINGS_SCHEMA, EMBEDDING_VERSION_SCHEMA
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
        elif pa.types.is_list(field.type) and pa.types.is_floating(field.type.value_type):
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


# ---- through the lake: the catalog, embeddings and candidates, read from S3 by each engine ----
#
# Written to a namespace of its own: the catalog as a base and daily deltas (items updated, one
# twice, one changed in two objects at the same instant, one created at the day's end, a delta
# after the day), the content embeddings as two drops and versions (an item with several versions
# in the day, a version tied with a drop, two versions at one instant in two objects, one valid at
# the very end of the day, one after it, one of an item not in the catalog, an item with none),
# the archive of the events above plus two hot items with the same embedding and views (tied
# candidate scores), a user who engaged with both (they are seen, never his candidates), and users
# with activity but no embedding (short views only, an item without one, a like just too old).

DIM = 32
HOT = (70, 71)
LATE, EDGE, NO_EMBEDDING, STRANGER = 80, 82, 81, 90
FAN = 150  # liked both hot items
UNKNOWN_TASTE, LAPSED = 151, 152  # liked only an item with no embedding; liked something 30 days ago
LAKE_VIEWS = ("item_catalog_features", "item_engagement_features", "item_embedding", "user_embedding",
              "user_candidates")


def _vector(rng) -> list[float]:
    return rng.normal(size=DIM).astype(np.float32).tolist()


def _write(table: pa.Table, key: str, settings) -> None:
    import pyarrow.parquet as pq

    from feedstore.s3 import arrow_fs, bucket_path

    pq.write_table(table, bucket_path(key, settings), filesystem=arrow_fs(settings))


def _hot_events() -> pd.DataFrame:
    rows = [(u, i, "view", END - timedelta(hours=2 + (u - 100) / 10), 1_000) for u in range(100, 150) for i in HOT]
    rows += [(FAN, i, "like", END - timedelta(hours=30), None) for i in HOT]
    rows += [(UNKNOWN_TASTE, NO_EMBEDDING, "like", END - timedelta(hours=3), None),
             (LAPSED, 10, "like", END - timedelta(days=30, microseconds=1), None)]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "timestamp", "dwell_time_ms"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True).astype("datetime64[us, UTC]")
    frame["dwell_time_ms"] = frame["dwell_time_ms"].astype("Int32")
    frame["event_id"] = [f"h{i}" for i in range(len(frame))]
    for c in ("device", "platform", "session_id"):
        frame[c] = None
    return frame


def seed_lake(settings) -> dict:
    """The inputs above, on S3; returns what the assertions need to know of them."""
    from orchestration import lake

    rng = np.random.default_rng(1818)
    events = pd.concat([_inputs()["activity"].to_pandas(), _hot_events()], ignore_index=True)
    for day, part in events.groupby(events.timestamp.dt.date):
        table = pa.Table.from_pandas(part[EVENT_SCHEMA.names], schema=EVENT_SCHEMA, preserve_index=False)
        _write(table, lake.day_prefix(lake.ARCHIVE, day) + lake.PART, settings)

    items = sorted(set(events.item_id) | {LATE, EDGE, NO_EMBEDDING})
    created = {i: END - timedelta(days=6 + int(i) % 40, hours=int(i) % 7) for i in items}
    created[LATE], created[EDGE] = END, END - timedelta(microseconds=1)

    def catalog(rows: list[tuple]) -> pa.Table:
        return pa.table({"item_id": [r[0] for r in rows], "creator_id": [r[0] % 5 for r in rows],
                         "category": [r[1] for r in rows], "tags": [[f"t{r[0] % 3}"] * (r[0] % 3) for r in rows],
                         "media_type": [r[2] for r in rows], "created_at": [created[r[0]] for r in rows],
                         "updated_at": [r[3] for r in rows]}, schema=CATALOG_SCHEMA)

    base = [(i, CATEGORIES[i % len(CATEGORIES)], "video", None) for i in items if i != EDGE]
    same_instant = END - timedelta(hours=12)
    deltas = {
        DAY - timedelta(days=5): base,
        DAY - timedelta(days=2): [(12, "music", "video", END - timedelta(days=2, hours=6)),
                                  (14, "news", "image", same_instant)],
        DAY: [(12, "sports", "text", END - timedelta(hours=3)), (14, "news", "text", same_instant),
              (EDGE, "tech", "video", None)],
        DAY + timedelta(days=1): [(13, "gaming", "video", END + timedelta(hours=1))],
    }
    for day, rows in deltas.items():
        _write(catalog(rows), lake.day_prefix(lake.CATALOG_ITEMS, day) + lake.PART, settings)

    vectors = {i: _vector(rng) for i in items if i != NO_EMBEDDING}
    vectors[HOT[1]] = vectors[HOT[0]]
    drops_root = settings.pipeline.content_embeddings_prefix.rstrip("/")

    def drop(ids) -> pa.Table:
        return pa.table({"item_id": list(ids), "content_embedding": [vectors[i] for i in ids],
                         "created_at": [created[i] for i in ids]}, schema=EMBEDDINGS_SCHEMA)

    _write(drop(sorted(vectors)), lake.day_prefix(drops_root, DAY - timedelta(days=6)) + lake.PART, settings)
    for i in (15, 16):
        vectors[i] = _vector(rng)
    _write(drop([15, 16]), lake.day_prefix(drops_root, DAY - timedelta(days=3)) + lake.PART, settings)

    def versions(rows: list[tuple]) -> pa.Table:
        return pa.table({"item_id": [r[0] for r in rows], "content_embedding": [_vector(rng) for _ in rows],
                         "valid_from": [r[1] for r in rows]}, schema=EMBEDDING_VERSION_SCHEMA)

    start = END - timedelta(days=1)
    _write(versions([(20, start - timedelta(hours=14)), (15, created[15])]),
           lake.day_prefix(lake.EMBEDDINGS, DAY - timedelta(days=1)) + "a.parquet", settings)
    _write(versions([(20, start + timedelta(hours=6)), (20, start + timedelta(hours=18)),
                     (21, start + timedelta(hours=9)), (STRANGER, start + timedelta(hours=1))]),
           lake.day_prefix(lake.EMBEDDINGS, DAY) + "a.parquet", settings)
    _write(versions([(21, start + timedelta(hours=9))]), lake.day_prefix(lake.EMBEDDINGS, DAY) + "b.parquet", settings)
    _write(versions([(22, END), (23, END + timedelta(hours=1))]),
           lake.day_prefix(lake.EMBEDDINGS, DAY + timedelta(days=1)) + "a.parquet", settings)
    return {"items": items, "events": events}


@pytest.fixture(scope="module")
def lake_computed(stack):
    """Each of ``LAKE_VIEWS`` on DuckDB, written where the next reads it, then on Spark from the same
    objects; the engines come from ``engines.connect`` as the assets get them."""
    from devtools.sandbox import sandbox
    from orchestration import lake
    from orchestration.engines import connect

    with sandbox("engines") as own:
        facts = seed_lake(own)
        s = own.replace(pipeline={"candidate_pool_size": 8, "candidates_per_user": 5})
        duck, spark = {}, {}
        for view in LAKE_VIEWS:
            with connect(s, engine="duckdb") as con:
                duck[view] = _lake_tables_one(con, view, s)
            lake.write_partition(duck[view], lake.feature_prefix(view, DAY), s)
            with connect(s, engine="spark") as relations:
                assert isinstance(relations, SparkRelations)
                spark[view] = _lake_tables_one(relations, view, s)
        yield {view: (duck[view], spark[view]) for view in LAKE_VIEWS}, facts


def _lake_tables_one(con, view: str, settings) -> pa.Table:
    from orchestration.assets import features, snapshots

    compute = {"item_catalog_features": snapshots.item_catalog_features,
               "item_engagement_features": features.item_engagement_features,
               "item_embedding": features.item_embeddings, "user_embedding": features.user_embeddings,
               "user_candidates": features.user_candidates}[view]
    return compute(con, DAY, settings)


@pytest.mark.parametrize("view", LAKE_VIEWS)
def test_lake_tables_are_the_same_on_both_engines(lake_computed, view):
    computed, _ = lake_computed
    duck, spark = computed[view]
    assert duck.num_rows > 5
    _assert_equal(duck, spark, view)


def test_the_lake_edge_cases_are_in_the_compared_rows(lake_computed):
    computed, _ = lake_computed
    catalog = {r["item_id"]: r for r in computed["item_catalog_features"][0].to_pylist()}
    assert LATE not in catalog and EDGE in catalog, "created at the day's end is after the day"
    assert (catalog[12]["category"], catalog[12]["media_type"]) == ("sports", "text"), "the latest change wins"
    assert catalog[14]["media_type"] == "text", "at the same instant, the later object wins"
    assert catalog[13]["category"] == CATEGORIES[13 % len(CATEGORIES)], "a change after the day is not read"

    end = pd.Timestamp(END)
    embedding = computed["item_embedding"][0].to_pandas()
    stamps = embedding.groupby("item_id").event_timestamp.apply(sorted).to_dict()
    assert stamps[20] == [end - pd.Timedelta(hours=18), end - pd.Timedelta(hours=6), end], "each version of the day"
    assert stamps[21] == [end - pd.Timedelta(hours=15), end], "two objects at one instant: one row"
    assert stamps[22] == [end] and NO_EMBEDDING not in stamps and STRANGER not in stamps
    at_end = embedding[embedding.event_timestamp == end].set_index("item_id").item_embedding
    assert np.allclose(at_end[HOT[0]], at_end[HOT[1]])

    users = set(computed["user_embedding"][0]["user_id"].to_pylist())
    assert not users & set(range(100, 150)), "views too short to count: no embedding"
    assert UNKNOWN_TASTE not in users and LAPSED not in users, "nothing with an embedding in 30 days"
    assert {1, 2, 3, FAN} <= users

    candidates = computed["user_candidates"][0].to_pandas().set_index("user_id")
    assert not set(HOT) & set(candidates.candidate_item_ids[FAN]), "seen items are never candidates"
    tied = [u for u, ids in candidates.candidate_item_ids.items() if set(HOT) <= set(ids)]
    assert tied, "the two hot items are candidates together somewhere"
    for u in tied:
        ids, scores = list(candidates.candidate_item_ids[u]), candidates.candidate_scores[u]
        assert scores[ids.index(HOT[0])] == scores[ids.index(HOT[1])], "a tie in the ranking"


def test_the_engine_switch_reads_settings(stack, monkeypatch):
    from feedstore.settings import reset_settings_cache
    from orchestration.resources import S3Resource

    monkeypatch.setenv("FEED_PIPELINE_ENGINE", "spark")
    reset_settings_cache()
    try:
        with S3Resource().engine() as con:
            assert isinstance(con, SparkRelations)
            assert lake_fetch_one(con) == 1
        monkeypatch.setenv("FEED_PIPELINE_ENGINE", "duckdb")
        reset_settings_cache()
        with S3Resource().engine() as con:
            assert isinstance(con, duckdb.DuckDBPyConnection)
            assert lake_fetch_one(con) == 1
    finally:
        monkeypatch.undo()
        reset_settings_cache()


def lake_fetch_one(con) -> int:
    from orchestration import lake

    return lake.fetch(con, "SELECT $one AS one", {"one": 1})["one"][0].as_py()
