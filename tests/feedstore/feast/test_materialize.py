"""``feast materialize`` from the CLI goes through our engine, S3 setup and TTL store."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import numpy as np

from feedstore.feast import codec, synthetic
from tests.feedstore.feast.conftest import feast_cli


def test_cli_materialize_and_incremental(fs, settings, redis_client):
    now = time.time_ns() // 1000
    view = fs.get_feature_view("item_catalog_features")
    ids = np.arange(7001, 7011)
    table = synthetic.frame(view, ids, now - np.arange(10) * 60_000_000, seed=3)
    synthetic.write("item_catalog_features", table, settings, part="cli")
    end = datetime.now(timezone.utc)
    start = end - timedelta(days=1)
    result = feast_cli(settings, "materialize", start.isoformat(), end.isoformat(), "--views", "item_catalog_features")
    assert result.returncode == 0, result.stderr[-3000:]
    for row in table.to_pylist():
        key = f"feed_ranking:{{item_id={row['item_id']}}}:item_catalog_features"
        assert codec.parse_value(redis_client.hget(key, "category")).string_val == row["category"]
        assert int(redis_client.hget(key, "_ts")) == codec.datetime_to_micros(row["event_timestamp"])

    newer = synthetic.frame(view, ids[:3], np.full(3, now + 1_000_000), seed=4)
    synthetic.write("item_catalog_features", newer, settings, part="cli-newer")
    later = (datetime.now(timezone.utc) + timedelta(seconds=5)).isoformat()
    result = feast_cli(settings, "materialize-incremental", later, "--views", "item_catalog_features")
    assert result.returncode == 0, result.stderr[-3000:]
    fs.refresh_registry()
    got = fs.get_online_features(features=["item_catalog_features:creator_id"],
                                 entity_rows=[{"item_id": int(i)} for i in ids[:4]]).to_dict()
    assert got["creator_id"] == newer["creator_id"].to_pylist() + [table["creator_id"][3].as_py()]
