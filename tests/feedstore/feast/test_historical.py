"""Point-in-time correctness of ``get_historical_features`` against an ASOF join written here."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from feedstore.feast import synthetic

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
