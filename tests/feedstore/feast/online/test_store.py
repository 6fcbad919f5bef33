"""Online reads after materialization, per-view TTL, push, and the Redis key layout."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from feast.data_source import PushMode
from redis.crc import key_slot

from feedstore.feast import private, synthetic
from feedstore.feast.engine import materialize
from feedstore.feast.online import codec

HOUR_US = 3_600_000_000
USER_IDS = np.arange(1, 41)
ITEM_IDS = np.arange(1001, 1081)
USER_VIEWS = ["user_activity_features", "user_profile_features", "user_embedding", "user_candidates",
              "user_realtime_features"]
ITEM_VIEWS = ["item_catalog_features", "item_embedding", "item_engagement_features"]


def _now_us() -> int:
    return time.time_ns() // 1000


def _latest(table: pa.Table, key: str) -> dict[int, dict]:
    rows = table.sort_by([(key, "ascending"), ("event_timestamp", "ascending")]).to_pylist()
    return {r[key]: r for r in rows}  # the last row per id is the newest


@pytest.fixture(scope="module")
def online_tables(fs, settings):
    """Two versions per entity (older one written later, as a late file) then materialized."""
    now = _now_us()
    tables = {}
    for seed, name in enumerate(USER_VIEWS + ITEM_VIEWS):
        view = fs.get_feature_view(name)
        ids = USER_IDS if name in USER_VIEWS else ITEM_IDS
        newest = now - (10 + seed) * 60_000_000  # within every TTL (realtime: 1h)
        new = synthetic.frame(view, ids, np.full(len(ids), newest), seed=seed)
        old = synthetic.frame(view, ids, np.full(len(ids), newest - 20 * 60_000_000), seed=100 + seed)
        synthetic.write(name, new, settings, part="a-new")
        synthetic.write(name, old, settings, part="b-late")
        tables[name] = new
    end = datetime.now(timezone.utc)
    materialize(fs, None, end - timedelta(days=8), end)
    return tables


def _expected(tables, ids_user, ids_item):
    rows = []
    for u, i in zip(ids_user, ids_item):
        row = {"user_id": u, "item_id": i}
        for name, table in tables.items():
            key = "user_id" if name in USER_VIEWS else "item_id"
            latest = _latest(table, key).get(u if key == "user_id" else i)
            for col in table.column_names:
                if col not in ("user_id", "item_id", "event_timestamp"):
                    row[col] = latest[col] if latest else None
        rows.append(row)
    return rows


def test_online_values_equal_the_newest_source_rows(fs, online_tables):
    users = [1, 2, 40, 999]  # 999 has no features at all
    items = [1001, 1080, 1050, 5]
    got = fs.get_online_features(features=fs.get_feature_service("ranking"),
                                 entity_rows=[{"user_id": u, "item_id": i} for u, i in zip(users, items)]).to_dict()
    expected = _expected(online_tables, users, items)
    assert len(got) == len(expected[0])
    for col in expected[0]:
        assert got[col] == [row[col] for row in expected], col


def test_one_user_500_items_reads_every_row(fs, online_tables):
    items = list(ITEM_IDS) * 6 + [7] * 20
    got = fs.get_online_features(features=fs.get_feature_service("ranking"),
                                 entity_rows=[{"user_id": 3, "item_id": int(i)} for i in items]).to_dict()
    assert len(got["item_embedding"]) == 500
    embeddings = {r["item_id"]: r["item_embedding"] for r in online_tables["item_embedding"].to_pylist()}
    assert got["item_embedding"] == [embeddings.get(i) for i in items]
    user_emb = _latest(online_tables["user_embedding"], "user_id")[3]["user_embedding"]
    assert got["user_embedding"] == [user_emb] * 500


def test_keys_are_per_view_and_shard_by_entity(fs, online_tables, redis_client):
    keys = sorted(k.decode() for k in redis_client.scan_iter(match="feed_ranking:{user_id=7}:*"))
    assert keys == sorted(f"feed_ranking:{{user_id=7}}:{v}" for v in USER_VIEWS)
    # Redis Cluster hashes only the {...} part: every view of a user lands in one slot,
    # and different users spread over slots
    assert len({key_slot(k.encode()) for k in keys}) == 1
    assert len({key_slot(f"feed_ranking:{{user_id={u}}}:user_embedding".encode()) for u in range(1, 41)}) > 30
    key = "feed_ranking:{item_id=1001}:item_embedding"
    stored = redis_client.hget(key, "item_embedding")
    latest = _latest(online_tables["item_embedding"], "item_id")[1001]
    assert list(codec.parse_value(stored).float_list_val.val) == latest["item_embedding"]


def test_keys_expire_at_event_time_plus_the_view_ttl(fs, online_tables, redis_client):
    for name, ttl_h in [("user_embedding", 24), ("item_embedding", 7 * 24), ("user_realtime_features", 1),
                        ("user_candidates", 12), ("item_catalog_features", 30 * 24)]:
        key = f"feed_ranking:{{{'user_id=5' if name in USER_VIEWS else 'item_id=1005'}}}:{name}"
        event_us = int(redis_client.hget(key, "_ts"))
        expire_ms = redis_client.pexpiretime(key)
        assert expire_ms == (event_us + ttl_h * HOUR_US) // 1000, name


def _write_at(fs, name: str, ids, ts_us: int, seed: int):
    view = fs.get_feature_view(name)
    table = synthetic.frame(view, ids, np.full(len(ids), ts_us), seed=seed)
    store = fs._get_provider().online_store
    store.write_arrow(fs.config, view, table)
    return table


def test_values_older_than_their_view_ttl_come_back_missing(fs, online_tables, redis_client):
    now = _now_us()
    age = 25 * HOUR_US
    _write_at(fs, "item_embedding", [2001], now - age, 1)
    _write_at(fs, "user_embedding", [201], now - age, 2)          # 24h TTL: not even written
    fs.push("user_realtime_push", pd.DataFrame({
        "user_id": [202], "event_timestamp": [pd.Timestamp(now - 2 * HOUR_US, unit="us", tz="UTC")],
        "rt_interactions_1h": [3], "rt_dwell_ms_1h": [100], "rt_last_item_id": [7], "rt_last_event_type": ["like"],
    }), to=PushMode.ONLINE)
    got = fs.get_online_features(
        features=["user_embedding:user_embedding", "user_realtime_features:rt_interactions_1h",
                  "item_embedding:item_embedding"],
        entity_rows=[{"user_id": 201, "item_id": 2001}, {"user_id": 202, "item_id": 2001}]).to_dict()
    assert got["user_embedding"] == [None, None]
    assert got["rt_interactions_1h"] == [None, None]
    assert all(e is not None and len(e) == 32 for e in got["item_embedding"])
    assert not redis_client.exists("feed_ranking:{user_id=201}:user_embedding")
    assert redis_client.pttl("feed_ranking:{item_id=2001}:item_embedding") > (7 * 24 - 25 - 1) * 3_600_000


def test_a_value_past_its_ttl_is_not_served_even_if_the_key_survives(fs, online_tables, redis_client):
    """E.g. a TTL shortened after the write: the read itself enforces the view's TTL."""
    key = "feed_ranking:{user_id=9}:user_embedding"
    before = fs.get_online_features(features=["user_embedding:user_embedding"],
                                    entity_rows=[{"user_id": 9}]).to_dict()["user_embedding"]
    assert before[0] is not None
    redis_client.hset(key, "_ts", str(_now_us() - 25 * HOUR_US))
    resp = fs.get_online_features(features=["user_embedding:user_embedding"], entity_rows=[{"user_id": 9}])
    assert resp.to_dict()["user_embedding"] == [None]
    assert redis_client.exists(key)


def test_redis_drops_the_key_when_the_ttl_runs_out(fs, online_tables, redis_client):
    now = _now_us()
    fs.push("user_realtime_push", pd.DataFrame({
        "user_id": [203], "event_timestamp": [pd.Timestamp(now - HOUR_US + 1_500_000, unit="us", tz="UTC")],
        "rt_interactions_1h": [1], "rt_dwell_ms_1h": [10], "rt_last_item_id": [8], "rt_last_event_type": ["view"],
    }), to=PushMode.ONLINE)
    key = "feed_ranking:{user_id=203}:user_realtime_features"
    assert 0 < redis_client.pttl(key) <= 1_500
    got = fs.get_online_features(features=["user_realtime_features:rt_interactions_1h"],
                                 entity_rows=[{"user_id": 203}]).to_dict()
    assert got["rt_interactions_1h"] == [1]
    time.sleep(1.6)
    assert not redis_client.exists(key)


def test_push_newer_wins_and_older_is_ignored(fs, online_tables):
    now = _now_us()

    def push(ts_us: int, n: int) -> None:
        fs.push("user_realtime_push", pd.DataFrame({
            "user_id": [204], "event_timestamp": [pd.Timestamp(ts_us, unit="us", tz="UTC")],
            "rt_interactions_1h": [n], "rt_dwell_ms_1h": [n], "rt_last_item_id": [n], "rt_last_event_type": ["view"],
        }), to=PushMode.ONLINE)

    def read() -> int:
        return fs.get_online_features(features=["user_realtime_features:rt_interactions_1h"],
                                      entity_rows=[{"user_id": 204}]).to_dict()["rt_interactions_1h"][0]

    push(now - 60_000_000, 5)
    assert read() == 5
    push(now - 120_000_000, 4)  # older: ignored
    assert read() == 5
    push(now - 1_000_000, 6)
    assert read() == 6


def test_online_read_api_applies_the_ttl(fs, online_tables):
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    store = fs._get_provider().online_store
    view = fs.get_feature_view("item_embedding")
    rows = store.online_read(fs.config, view, [EntityKey(join_keys=["item_id"], entity_values=[Value(int64_val=i)])
                                               for i in (1001, 424242)])
    ts, values = rows[0]
    assert ts is not None and list(values["item_embedding"].float_list_val.val) == \
        _latest(online_tables["item_embedding"], "item_id")[1001]["item_embedding"]
    assert rows[1] == (None, None)


@pytest.mark.parametrize("full_names", [False, True])
def test_direct_path_answers_exactly_as_feasts_path(fs, online_tables, redis_client, full_names):
    """Plain int keys take the direct path (proto built lazily); numpy ints take Feast's path
    (entity protos, ``_read_features_per_fv``). Both, and Feast's own converter, must agree."""
    from feast.online_response import OnlineResponse

    redis_client.hset("feed_ranking:{user_id=12}:user_embedding", "_ts", str(_now_us() - 25 * HOUR_US))
    users, items = [12, 12, 999, 4], [1001, 1001, 1002, 77777]  # expired, repeated, unknown user, unknown item
    kwargs = {"features": fs.get_feature_service("ranking"), "full_feature_names": full_names,
              "include_feature_view_version_metadata": full_names}
    direct = fs.get_online_features(entity_rows=[{"user_id": u, "item_id": i} for u, i in zip(users, items)],
                                    **kwargs)
    feasts = fs.get_online_features(entity_rows={"user_id": [np.int64(u) for u in users],
                                                 "item_id": [np.int64(i) for i in items]}, **kwargs)
    assert direct._entities is not None and feasts._entities is None  # each took the path meant
    assert direct.to_dict() == feasts.to_dict() == OnlineResponse(feasts.proto, private.response_feature_types(feasts)).to_dict()
    assert direct.to_dict(True) == feasts.to_dict(True)
    assert direct.proto == feasts.proto
    assert direct.to_df().equals(feasts.to_df())
    got = direct.to_dict()
    emb = "user_embedding__user_embedding" if full_names else "user_embedding"
    assert got[emb][:3] == [None, None, None] and got[emb][3] is not None
    statuses = direct.proto.results[list(direct.proto.metadata.feature_names.val).index(emb)].statuses
    assert list(statuses) == [4, 4, 3, 1]  # OUTSIDE_MAX_AGE, OUTSIDE_MAX_AGE, NOT_FOUND, PRESENT
