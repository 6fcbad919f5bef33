"""``feast materialize`` from the CLI goes through our engine, S3 setup and TTL store."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from devtools.synthetic import features as synthetic
from feedstore.feast.online import codec
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


def test_latest_rows_query_equals_feasts_pull_latest(fs, settings):
    """Our one-query read keeps the same rows as Feast's ``pull_latest_from_table_or_query``:
    inside [start, end], the newest per entity, equal event times broken by created time."""
    import pyarrow as pa
    from feast import FeatureView, Field, FileSource
    from feast.data_format import ParquetFormat
    from feast.infra.offline_stores.duckdb import DuckDBOfflineStore
    from feast.types import Int64

    from feedstore.feast.engine import LatestRowsNode
    from feedstore.feast.sources import feature_glob

    hour = 3_600_000_000
    base = 1_790_000_000_000_000
    rng = np.random.default_rng(3)
    ids = np.repeat(np.arange(1, 41), 6)
    ts = base + rng.integers(0, 48, len(ids)) * hour            # whole hours: ties
    table = pa.table({"item_id": pa.array(ids, pa.int64()),
                      "event_timestamp": pa.array(ts).cast(pa.timestamp("us", tz="UTC")),
                      "created": pa.array(base + rng.permutation(len(ids)) * 1_000_000).cast(pa.timestamp("us", tz="UTC")),
                      "v": pa.array(np.arange(len(ids)), pa.int64())})
    synthetic.write("latest_rows", table, settings, part="x")
    source = FileSource(name="latest_rows_src", path=feature_glob("latest_rows", settings), file_format=ParquetFormat(),
                        timestamp_field="event_timestamp", created_timestamp_column="created")
    view = FeatureView(name="latest_rows", entities=[fs.get_entity("item")], ttl=timedelta(days=1), source=source,
                       schema=[Field(name="item_id", dtype=Int64), Field(name="v", dtype=Int64)])
    start = datetime.fromtimestamp((base + 5 * hour) / 1e6, timezone.utc)
    end = datetime.fromtimestamp((base + 40 * hour) / 1e6, timezone.utc)

    class Info:
        join_keys, feature_cols, ts_col, created_ts_col, field_mapping = ["item_id"], ["v"], "event_timestamp", "created", {}

    ours = LatestRowsNode("source", view, Info, start, end, latest_only=True)
    import ibis

    got = ibis.get_backend().con.cursor().execute(
        ours.sql(), {"path": source.path, "start": start, "end": end}).to_arrow_table()
    stock = DuckDBOfflineStore.pull_latest_from_table_or_query(
        fs.config, source, ["item_id"], ["v"], "event_timestamp", "created", start, end).to_arrow()
    key = [("item_id", "ascending")]
    assert got.num_rows == stock.num_rows > 30
    assert got.select(["item_id", "v"]).sort_by(key).equals(stock.select(["item_id", "v"]).sort_by(key))


def test_materialize_writes_column_wise_through_our_output_node(fs, settings, redis_client):
    """``FastComputeEngine`` runs Feast's materialization with ``ArrowFeatureBuilder``: the rows go
    through ``ArrowOnlineOutputNode`` (counted), not Feast's row-of-protos write."""
    from prometheus_client import REGISTRY

    from feedstore.feast.engine import materialize

    def written() -> float:
        return REGISTRY.get_sample_value("feedstore_feast_materialized_rows_total", {"view": view.name}) or 0.0

    now = time.time_ns() // 1000
    view = fs.get_feature_view("item_engagement_features")
    ids = np.arange(8001, 8006)
    synthetic.write(view.name, synthetic.frame(view, ids, np.full(len(ids), now - 60_000_000), seed=9), settings,
                    part="engine")
    before = written()
    end = datetime.now(timezone.utc)
    materialize(fs, [view.name], end - timedelta(minutes=5), end)
    assert written() - before == len(ids)
    assert all(redis_client.exists(f"feed_ranking:{{item_id={i}}}:{view.name}") for i in ids)


def test_feature_store_yaml_selects_the_fast_engine(fs):
    from feedstore.feast.engine import FastComputeEngine, FastComputeEngineConfig

    assert isinstance(fs.config.batch_engine, FastComputeEngineConfig)
    assert fs.config.batch_engine.type == f"{FastComputeEngine.__module__}.{FastComputeEngine.__name__}"
    assert isinstance(fs._get_provider().batch_engine, FastComputeEngine)


@pytest.mark.pure
def test_latest_rows_of_wide_rows_stream_within_a_small_memory_limit(tmp_path):
    """2M rows of a 32-float embedding (about 280 MB) under a 320 MB limit: a window over whole
    rows ran out of memory here (as 10M items did under 2 GB); the narrow grouping and the
    streaming semi-join return every row."""
    import duckdb

    from feedstore.feast.engine import LatestRowsNode

    path = str(tmp_path / "wide.parquet")
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.sql("SELECT i AS item_id, TIMESTAMPTZ '2026-12-03 00:00:00+00' + to_seconds(i % 86400) AS ts,"
            " list_transform(range(32), x -> random()::FLOAT) AS embedding FROM range(2000000) t(i)").write_parquet(path)
    con.execute("SET memory_limit = '320MB'")

    class Info:
        join_keys, feature_cols, ts_col, created_ts_col, field_mapping = ["item_id"], ["embedding"], "ts", None, {}

    class View:
        batch_source = None

    start, end = datetime(2026, 12, 3, tzinfo=timezone.utc), datetime(2026, 12, 4, tzinfo=timezone.utc)
    node = LatestRowsNode("source", View, Info, start, end, latest_only=True)
    reader = con.execute(node.sql(), {"path": path, "start": start, "end": end}).to_arrow_reader(100_000)
    rows = sum(batch.num_rows for batch in reader)
    assert rows == 2_000_000
