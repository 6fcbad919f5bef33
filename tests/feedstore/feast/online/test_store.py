"""Writes: the Redis key layout, expiry at event time + the view's TTL, push, newer wins,
and the config's one-line error for an unset endpoint."""

from __future__ import annotations

import time

import pandas as pd
import pytest
from feast.data_source import PushMode
from redis.crc import key_slot

from feedstore.feast.online import codec
from feedstore.feast.online.store import TTLRedisOnlineStore, TTLRedisOnlineStoreConfig
from tests.feedstore.feast.online.conftest import HOUR_US, USER_VIEWS, latest, now_us, write_at


def test_keys_are_per_view_and_shard_by_entity(fs, online_tables, redis_client):
    keys = sorted(k.decode() for k in redis_client.scan_iter(match="feed_ranking:{user_id=7}:*"))
    assert keys == sorted(f"feed_ranking:{{user_id=7}}:{v}" for v in USER_VIEWS)
    # Redis Cluster hashes only the {...} part: every view of a user lands in one slot,
    # and different users spread over slots
    assert len({key_slot(k.encode()) for k in keys}) == 1
    assert len({key_slot(f"feed_ranking:{{user_id={u}}}:user_embedding".encode()) for u in range(1, 41)}) > 30
    key = "feed_ranking:{item_id=1001}:item_embedding"
    stored = redis_client.hget(key, "item_embedding")
    newest = latest(online_tables["item_embedding"], "item_id")[1001]
    assert list(codec.parse_value(stored).float_list_val.val) == newest["item_embedding"]


def test_keys_expire_at_event_time_plus_the_view_ttl(fs, online_tables, redis_client):
    for name, ttl_h in [("user_embedding", 30), ("item_embedding", 7 * 24), ("user_realtime_features", 1),
                        ("user_candidates", 16), ("item_catalog_features", 30 * 24)]:
        key = f"feed_ranking:{{{'user_id=5' if name in USER_VIEWS else 'item_id=1005'}}}:{name}"
        event_us = int(redis_client.hget(key, "_ts"))
        expire_ms = redis_client.pexpiretime(key)
        assert expire_ms == (event_us + ttl_h * HOUR_US) // 1000, name


def test_values_older_than_their_view_ttl_come_back_missing(fs, online_tables, redis_client):
    now = now_us()
    age = 31 * HOUR_US
    write_at(fs, "item_embedding", [2001], now - age, 1)
    write_at(fs, "user_embedding", [201], now - age, 2)          # 30h TTL: not even written
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
    assert redis_client.pttl("feed_ranking:{item_id=2001}:item_embedding") > (7 * 24 - 31 - 1) * 3_600_000


def test_redis_drops_the_key_when_the_ttl_runs_out(fs, online_tables, redis_client):
    now = now_us()
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
    now = now_us()

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


def test_an_unexpanded_endpoint_fails_in_one_line_naming_the_variable():
    with pytest.raises(ValueError, match=r"FEED_FEAST_REDIS is not set: feature_store.yaml takes its endpoints"):
        TTLRedisOnlineStoreConfig(connection_string="${FEED_FEAST_REDIS}")
    assert TTLRedisOnlineStoreConfig(connection_string="localhost:6379").type == \
        "feedstore.feast.online.store.TTLRedisOnlineStore"


def test_feature_store_yaml_selects_the_ttl_store(fs):
    """Feast imports ``<type>Config`` from the type's module; its ``type`` must be that same path."""
    assert isinstance(fs.config.online_store, TTLRedisOnlineStoreConfig)
    assert fs.config.online_store.type == f"{TTLRedisOnlineStore.__module__}.{TTLRedisOnlineStore.__name__}"
    assert isinstance(fs._get_provider().online_store, TTLRedisOnlineStore)


def test_the_store_records_each_views_newest_value_for_the_freshness_metric(fs, online_tables, redis_client):
    """Materialisation and push both raise a view's newest event time; an older write never
    lowers it. The figures reach Prometheus and ``feedstore freshness``."""
    from prometheus_client import CollectorRegistry, generate_latest

    from feedstore.feast import freshness

    newest = freshness.newest_online(redis_client, fs.project)
    for name, table in online_tables.items():
        want = pd.Timestamp(table.column("event_timestamp").to_pandas().max())
        assert newest[name] >= want.to_pydatetime(), name
    before = newest["user_realtime_features"]
    row = {"user_id": [205], "rt_interactions_1h": [1], "rt_dwell_ms_1h": [1], "rt_last_item_id": [1],
           "rt_last_event_type": ["view"]}
    fs.push("user_realtime_push", pd.DataFrame({**row, "event_timestamp": [pd.Timestamp(before) - pd.Timedelta(
        minutes=5)]}), to=PushMode.ONLINE)
    assert freshness.newest_online(redis_client, fs.project)["user_realtime_features"] == before
    pushed = pd.Timestamp(now_us() - 1_000_000, unit="us", tz="UTC")
    fs.push("user_realtime_push", pd.DataFrame({**row, "event_timestamp": [pushed]}), to=PushMode.ONLINE)
    assert freshness.newest_online(redis_client, fs.project)["user_realtime_features"] == pushed.to_pydatetime()
    registry = CollectorRegistry()
    registry.register(freshness.FreshnessCollector(redis_client, fs.project))
    text = generate_latest(registry).decode()
    line = next(x for x in text.splitlines()
                if x.startswith(freshness.AGE_METRIC + '{view="user_realtime_features"}'))
    assert 0 < float(line.split()[-1]) < 60
    assert f'{freshness.TTL_METRIC}{{view="user_embedding"}} 108000.0' in text
