"""Point-in-time correctness of ``get_historical_features`` against an ASOF join written here."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from devtools.synthetic import features as synthetic

DAY_US = 86_400_000_000
VIEWS = {"user_activity_features": "user_id", "user_embedding": "user_id", "item_embedding": "item_id"}
FEATURES = ["user_activity_features:interactions_7d", "user_activity_features:like_rate_7d",
            "user_activity_features:category_dist_30d", "user_activity_features:top_category_30d",
            "user_embedding:user_embedding", "item_embedding:item_embedding"]


@pytest.fixture(scope="module")
def history(fs, settings):
    rng = np.random.default_rng(7)
    base = (pd.Timestamp("2026-03-01", tz="UTC").value // 1000)
    users, items = np.arange(5001, 5021), np.arange(9001, 9031)
    tables = {}
    for seed, (name, key) in enumerate(VIEWS.items()):
        ids = users if key == "user_id" else items
        ids_rep = np.repeat(ids, 6)
        # distinct per-entity timestamps over 6 days; the first file holds the later half,
        # the "late" file the earlier half (arrives after, must still be used for old entity rows)
        ts = base + rng.choice(6 * DAY_US, size=len(ids_rep), replace=False)
        table = synthetic.frame(fs.get_feature_view(name), ids_rep, ts, seed=seed)
        median = np.median(ts)
        late = pa.array(ts < median)
        synthetic.write(name, table.filter(pa.compute.invert(late)), settings, part="hist-main")
        synthetic.write(name, table.filter(late), settings, part="hist-late")
        tables[name] = table
    n = 400
    entity = pd.DataFrame({
        "row_id": np.arange(n),
        "user_id": rng.choice(np.arange(5001, 5026), n),   # 5021..5025 have no features
        "item_id": rng.choice(np.arange(9001, 9036), n),   # 9031..9035 neither
        "event_timestamp": pd.to_datetime(base + rng.integers(-DAY_US, 8 * DAY_US, n), unit="us", utc=True),
    })
    # entity rows exactly at a feature row's timestamp: that row is visible (<=)
    exact = tables["user_activity_features"].slice(0, 20)
    entity.loc[:19, "user_id"] = exact["user_id"].to_numpy()
    entity.loc[:19, "event_timestamp"] = exact["event_timestamp"].to_pandas().to_numpy()
    return tables, entity


ASOF_SQL = """
SELECT e.*,
  CASE WHEN a.event_timestamp >= e.event_timestamp - to_microseconds($ttl_a) THEN a.interactions_7d END AS interactions_7d,
  CASE WHEN a.event_timestamp >= e.event_timestamp - to_microseconds($ttl_a) THEN a.like_rate_7d END AS like_rate_7d,
  CASE WHEN a.event_timestamp >= e.event_timestamp - to_microseconds($ttl_a) THEN a.category_dist_30d END AS category_dist_30d,
  CASE WHEN a.event_timestamp >= e.event_timestamp - to_microseconds($ttl_a) THEN a.top_category_30d END AS top_category_30d,
  CASE WHEN u.event_timestamp >= e.event_timestamp - to_microseconds($ttl_u) THEN u.user_embedding END AS user_embedding,
  CASE WHEN i.event_timestamp >= e.event_timestamp - to_microseconds($ttl_i) THEN i.item_embedding END AS item_embedding
FROM entity e
ASOF LEFT JOIN activity a ON e.user_id = a.user_id AND e.event_timestamp >= a.event_timestamp
ASOF LEFT JOIN uemb u ON e.user_id = u.user_id AND e.event_timestamp >= u.event_timestamp
ASOF LEFT JOIN iemb i ON e.item_id = i.item_id AND e.event_timestamp >= i.event_timestamp
ORDER BY e.row_id
"""


def _asof_expected(tables, entity: pd.DataFrame, ttls: dict[str, int]) -> pa.Table:
    con = duckdb.connect()
    con.register("entity", entity)
    con.register("activity", tables["user_activity_features"])
    con.register("uemb", tables["user_embedding"])
    con.register("iemb", tables["item_embedding"])
    return con.execute(ASOF_SQL, {"ttl_a": ttls["user_activity_features"], "ttl_u": ttls["user_embedding"],
                                  "ttl_i": ttls["item_embedding"]}).fetch_arrow_table()


def _norm(values: list) -> list:
    return [None if isinstance(v, float) and np.isnan(v) else v for v in values]


def test_historical_features_equal_an_independent_asof_join(fs, history):
    tables, entity = history
    ttls = {name: int(fs.get_feature_view(name).ttl.total_seconds() * 1_000_000) for name in VIEWS}
    got = fs.get_historical_features(entity_df=entity, features=FEATURES).to_arrow()
    got = got.sort_by("row_id")
    expected = _asof_expected(tables, entity, ttls)
    assert got.num_rows == len(entity)                      # no entity row dropped
    assert got["row_id"].to_pylist() == list(range(len(entity)))
    for col in [f.split(":")[1] for f in FEATURES]:
        assert _norm(got[col].to_pylist()) == _norm(expected[col].to_pylist()), col
    # the data exercise what they claim to
    emb = got["user_embedding"].to_pylist()
    assert sum(e is None for e in emb) > 20 and sum(e is not None for e in emb) > 100
    assert got["interactions_7d"].to_pylist()[:20] == tables["user_activity_features"].slice(0, 20)["interactions_7d"].to_pylist()


def test_no_value_comes_from_the_future(fs, history):
    tables, entity = history
    got = fs.get_historical_features(entity_df=entity, features=["user_embedding:user_embedding"],
                                     full_feature_names=True).to_df().sort_values("row_id")
    source = tables["user_embedding"].to_pandas()
    by_value = {tuple(np.round(v, 6)): ts for v, ts in zip(source["user_embedding"], source["event_timestamp"])}
    checked = 0
    for _, row in got.iterrows():
        value = row["user_embedding__user_embedding"]
        if value is None or (isinstance(value, float) and np.isnan(value)):
            continue
        assert by_value[tuple(np.round(value, 6))] <= row["event_timestamp"]
        checked += 1
    assert checked > 50



def test_every_view_is_planned_as_an_asof_join(fs, history, settings):
    """Not a nested-loop join: DuckDB picks one when it underestimates the entity side."""
    from feedstore.feast.offline import asof
    from feedstore.s3 import configure_duckdb

    _, entity = history
    query = asof.plan([fs.get_feature_view(n) for n in VIEWS], FEATURES, entity, False, False)
    con = duckdb.connect()
    configure_duckdb(con, settings)
    sql = query.sql()
    query.prepare(con)
    plan = "\n".join(row[1] for row in con.execute("EXPLAIN " + sql, query.params).fetchall())
    assert plan.count("ASOF_JOIN") == len(VIEWS), plan
    assert "NESTED_LOOP_JOIN" not in plan, plan

# ---- Feast's semantics, ours beside stock on the same inputs ---------------------------------

HOUR_US = 3_600_000_000


@pytest.fixture(scope="module")
def tie_view(fs, settings):
    """A view whose source has a created column: two rows per timestamp, the later-created wins."""
    from datetime import timedelta

    from feast import FeatureView, Field, FileSource
    from feast.data_format import ParquetFormat
    from feast.types import Float64, Int64

    from feedstore.feast.sources import feature_glob

    base = pd.Timestamp("2026-04-01", tz="UTC").value // 1000
    rng = np.random.default_rng(11)
    ids = np.repeat(np.arange(1, 31), 8)
    ts = base + rng.integers(0, 3 * 24, len(ids)) * HOUR_US      # on the hour: many exact ties
    created = base + rng.permutation(len(ids)) * 1_000_000        # distinct
    table = pa.table({
        "uid": pa.array(ids, pa.int64()),
        "ts": pa.array(ts).cast(pa.timestamp("us", tz="UTC")),
        "created": pa.array(created).cast(pa.timestamp("us", tz="UTC")),
        "x": pa.array(np.arange(len(ids)), pa.int64()),
        "score": pa.array(rng.random(len(ids))),
    })
    synthetic.write("tie_view", table, settings, part="ties", ts_column="ts")
    source = FileSource(name="tie_source", path=feature_glob("tie_view", settings), file_format=ParquetFormat(),
                        timestamp_field="ts", created_timestamp_column="created", field_mapping={"uid": "user_id"})
    view = FeatureView(name="tie_view", entities=[fs.get_entity("user")], ttl=timedelta(hours=5), source=source,
                       schema=[Field(name="user_id", dtype=Int64), Field(name="x", dtype=Int64),
                               Field(name="score", dtype=Float64)])
    return view, table, base


def _both(fs, views, refs, entity, full_feature_names=False):
    from feast.infra.offline_stores.duckdb import DuckDBOfflineStore

    from feedstore.feast.offline.asof import AsofRetrievalJob
    from feedstore.feast.offline.store import S3DuckDBOfflineStore

    args = (fs.config, views, refs, entity.copy(), fs.registry, fs.project, full_feature_names)
    ours = S3DuckDBOfflineStore.get_historical_features(*args)
    assert isinstance(ours, AsofRetrievalJob)  # not the stock fallback
    stock = DuckDBOfflineStore.get_historical_features(*args)
    return ours.to_arrow(), stock.to_arrow().sort_by("row_id")


def _entity_rows(table, base, n=300, seed=5):
    rng = np.random.default_rng(seed)
    ts = table["ts"].to_numpy().astype("datetime64[us]").astype(np.int64)
    last = pd.DataFrame({"uid": table["uid"].to_numpy(), "ts": ts}).groupby("uid")["ts"].idxmax()
    pick = last.to_numpy()   # each user's latest row: past its TTL edge nothing else can match
    # exactly at a row, exactly at its TTL edge (still visible), one µs past it (expired), random
    edges = np.concatenate([ts[pick], ts[pick] + 5 * HOUR_US, ts[pick] + 5 * HOUR_US + 1])
    ids = np.concatenate([table["uid"].to_numpy()[pick]] * 3)
    extra = n - len(edges)
    return pd.DataFrame({
        "row_id": np.arange(n),
        "user_id": np.concatenate([ids, rng.integers(1, 35, extra)]),      # 31..34 have no rows
        "event_timestamp": pd.to_datetime(np.concatenate([edges, base + rng.integers(-HOUR_US, 80 * HOUR_US, extra)]),
                                          unit="us", utc=True),
    })


def test_ties_and_ttl_edges_match_stock_feast(fs, tie_view):
    view, table, base = tie_view
    entity = _entity_rows(table, base)
    ours, stock = _both(fs, [view], ["tie_view:x", "tie_view:score"], entity)
    assert ours["row_id"].to_pylist() == list(range(len(entity)))   # input order, nothing dropped
    assert ours.select(["row_id", "x", "score"]).equals(stock.select(["row_id", "x", "score"]))
    x = ours["x"].to_pylist()
    k = len(table["uid"].unique())
    assert all(v is not None for v in x[:2 * k])          # at the row, and exactly at its TTL edge
    assert all(v is None for v in x[2 * k:3 * k])         # one µs past the edge
    assert x[:k] == x[k:2 * k]
    # ties: the row with the latest created timestamp wins
    rows = table.to_pandas()
    at = entity.iloc[:k]
    for (_, e), got in zip(at.iterrows(), x[:k]):
        same = rows[(rows.uid == e.user_id) & (rows.ts <= e.event_timestamp)]
        best = same[same.ts == same.ts.max()].sort_values("created").iloc[-1]
        assert got == best.x


def test_full_feature_names_alias_and_join_key_map_match_stock(fs, tie_view):
    view, table, base = tie_view
    entity = _entity_rows(table, base, seed=6).rename(columns={"user_id": "viewer"})
    aliased = view.with_name("viewer_ties").with_join_key_map({"user_id": "viewer"})
    # (a feature whose full name ends in "_y" would make stock Feast fail: its join drops "*_y" columns)
    ours, stock = _both(fs, [aliased], ["viewer_ties:x", "viewer_ties:score"], entity, full_feature_names=True)
    assert ours.column_names == ["row_id", "viewer", "event_timestamp", "viewer_ties__x", "viewer_ties__score"]
    assert ours.select(["row_id", "viewer_ties__x", "viewer_ties__score"]).equals(
        stock.select(["row_id", "viewer_ties__x", "viewer_ties__score"]))
    assert ours["viewer_ties__x"].null_count < len(entity)


def test_feature_service_and_naive_timestamps(fs, history):
    tables, entity = history
    from feast import FeatureService

    service = FeatureService(name="pit", features=[
        fs.get_feature_view("user_activity_features")[["interactions_7d", "like_rate_7d"]],
        fs.get_feature_view("item_embedding")])
    naive = entity.assign(event_timestamp=entity["event_timestamp"].dt.tz_localize(None))
    fs.apply([service])
    fs.refresh_registry()
    try:
        got = fs.get_historical_features(entity_df=naive, features=fs.get_feature_service("pit")).to_df()
    finally:
        fs.delete_feature_service("pit")
    reference = fs.get_historical_features(entity_df=entity, features=FEATURES).to_df()
    assert list(got.columns) == ["row_id", "user_id", "item_id", "event_timestamp", "interactions_7d",
                                 "like_rate_7d", "item_embedding"]
    assert list(got["row_id"]) == list(range(len(entity)))
    for col in ("interactions_7d", "like_rate_7d"):
        assert _norm(got[col].tolist()) == _norm(reference[col].tolist())
