"""Feast's Spark offline store (``FEED_FEAST_OFFLINE_ENGINE=spark``) over the same lake as the DuckDB
store returns the same ``get_historical_features`` result on the same entity rows.

A sandbox of this module's own (bucket and registry database), and a second registry for the
Spark engine's ``SparkSource`` definitions: no other test sees either."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from feast import Field
from feast.infra.offline_stores.contrib.spark_offline_store.spark import SparkOfflineStore
from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
from feast.types import Int64

from devtools.synthetic import features as synthetic
from feedstore.contract import features as contract
from feedstore.feast.definitions import repository
from feedstore.feast.offline.digest import digest, rows
from feedstore.settings import Settings

DAY_US = 86_400_000_000
VIEWS = {"user_activity_features": "user_id", "user_profile_features": "user_id", "user_embedding": "user_id",
         "item_catalog_features": "item_id", "item_embedding": "item_id"}
FEATURES = ["user_activity_features:interactions_7d", "user_activity_features:like_rate_7d",
            "user_activity_features:category_dist_30d", "user_activity_features:top_category_30d",
            "user_profile_features:preferred_categories", "user_profile_features:account_age_days",
            "user_embedding:user_embedding", "item_catalog_features:tags", "item_catalog_features:item_age_days",
            "item_embedding:item_embedding"]


@pytest.fixture(scope="module")
def lake(stack: Settings) -> Iterator[Settings]:
    from devtools.sandbox import sandbox

    with sandbox("spark") as isolated:
        yield isolated


@pytest.fixture(scope="module")
def entity_rows(lake: Settings) -> pd.DataFrame:
    """Four days of rows for 12 users and 15 items; entity rows for ids without any (13-14, 16-18)
    and times before the first row, so the result holds nulls as well as every feature type."""
    from feast import FeatureView

    rng = np.random.default_rng(18)
    base = pd.Timestamp("2026-05-01", tz="UTC").value // 1000
    objects = repository(lake)
    for fv in objects.values():
        if isinstance(fv, FeatureView):  # as the registry completes them on apply
            fv.entity_columns = [Field(name=objects[e].join_key, dtype=Int64) for e in fv.entities]
    views = {name: objects[name] for name in VIEWS}
    for seed, (name, key) in enumerate(VIEWS.items()):
        ids = np.repeat(np.arange(1, 13) if key == "user_id" else np.arange(101, 116), 4)
        ts = base + rng.choice(4 * DAY_US, size=len(ids), replace=False)
        synthetic.write(name, synthetic.frame(views[name], ids, ts, seed=seed), lake)
    n = 120
    return pd.DataFrame({
        "row_id": np.arange(n),
        "user_id": rng.choice(np.arange(1, 15), n),
        "item_id": rng.choice(np.arange(101, 119), n),
        "event_timestamp": pd.to_datetime(base + rng.integers(-DAY_US // 2, 5 * DAY_US, n), unit="us", utc=True),
    })


def _historical(settings: Settings, entity: pd.DataFrame):
    from feedstore.feast.store import apply, close, store

    fs = store(settings)
    try:
        apply(fs, settings)
        offline = fs._get_provider().offline_store
        sources = {v.name: v.batch_source for v in fs.list_feature_views()}
        return offline, sources, fs.get_historical_features(entity_df=entity.copy(), features=FEATURES).to_df()
    finally:
        close(fs)


@pytest.fixture(scope="module")
def spark_settings(lake: Settings, tmp_path_factory) -> Settings:
    """The Spark engine on a registry of its own (SQLite, in a temporary directory), since one
    registry holds one kind of source."""
    registry = tmp_path_factory.mktemp("spark_registry") / "registry.db"
    return lake.replace(feast={"offline_engine": "spark", "registry": f"sqlite:///{registry}"})


@pytest.fixture(scope="module")
def both(lake: Settings, spark_settings: Settings, entity_rows: pd.DataFrame):
    """The DuckDB engine on the sandbox's registry; the Spark engine on its own."""
    duck = _historical(lake, entity_rows)
    spark = _historical(spark_settings, entity_rows)
    return duck, spark


def test_spark_engine_reads_spark_sources_of_the_contract(both, lake):
    (_, duck_sources, _), (offline, sources, _) = both
    assert isinstance(offline, SparkOfflineStore)
    batch = [v.name for v in contract.VIEWS.values() if not v.pushed]
    assert {name: type(sources[name]) for name in batch} == {name: SparkSource for name in batch}
    for name in batch:
        assert sources[name].path == f"s3a://{lake.s3.bucket}/{contract.VIEWS[name].prefix}/dt=*/*.parquet"
        assert sources[name].path.removeprefix("s3a") == duck_sources[name].path.removeprefix("s3")
        assert sources[name].name == duck_sources[name].name
        assert sources[name].timestamp_field == duck_sources[name].timestamp_field == contract.EVENT_TIMESTAMP


def test_historical_features_have_the_same_digest_on_duckdb_and_spark(both, entity_rows):
    (_, _, duck), (_, _, spark) = both
    assert len(duck) == len(spark) == len(entity_rows)
    assert sorted(duck.columns) == sorted(spark.columns)
    assert rows(duck) == rows(spark)
    assert digest(duck) == digest(spark)


def test_the_compared_result_holds_values_and_nulls(both):
    (_, _, duck), _ = both
    for ref in FEATURES:
        column = duck[ref.split(":")[1]]
        assert column.notna().any(), ref
        assert column.isna().any(), ref


# ---- the feast CLI on either engine ---------------------------------------------------------

def _feast_cli(settings: Settings, *args: str):
    """The plain ``feast`` CLI on feature_repo/, configured only by the environment settings give."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from feedstore.settings import PROJECT_ROOT

    feast = str(Path(sys.executable).parent / "feast")
    env = {**os.environ, **settings.feast_env()}
    return subprocess.run([feast, "-c", str(PROJECT_ROOT / "feature_repo"), *args], env=env, capture_output=True,
                          text=True, timeout=900, check=False)


def _online(settings: Settings) -> dict[str, dict]:
    from feedstore.feast.store import close, store

    fs = store(settings)
    try:
        out = {}
        for key, ids in (("user_id", range(1, 15)), ("item_id", range(101, 119))):
            refs = [f for f in FEATURES if VIEWS[f.split(":")[0]] == key]
            out[key] = fs.get_online_features(features=refs, entity_rows=[{key: i} for i in ids]).to_dict()
        return out
    finally:
        close(fs)


def test_feast_cli_materializes_the_same_online_values_from_spark(both, lake, spark_settings, redis_client_of_lake):
    """``feast materialize`` with ``FEED_FEAST_OFFLINE_ENGINE=spark`` (feature_store.yaml names the
    store through ``feedstore.feast.offline.engine``) writes to Redis what the DuckDB store's
    materialisation writes: two recent rows per entity (the later must win), ids without rows."""
    from datetime import datetime, timedelta, timezone

    from feast import FeatureView

    now = datetime.now(timezone.utc).replace(microsecond=0)
    objects = repository(lake)
    rng = np.random.default_rng(1818)
    recent = pd.Timestamp(now - timedelta(hours=3)).value // 1000
    for seed, (name, key) in enumerate(VIEWS.items()):
        view = objects[name]
        assert isinstance(view, FeatureView)
        view.entity_columns = [Field(name=objects[e].join_key, dtype=Int64) for e in view.entities]
        ids = np.repeat(np.arange(1, 13) if key == "user_id" else np.arange(101, 116), 2)
        ts = recent + rng.choice(2 * 3_600_000_000, size=len(ids), replace=False)
        synthetic.write(name, synthetic.frame(view, ids, ts, seed=100 + seed), lake, part="recent")
    window = [(now - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S"), now.strftime("%Y-%m-%dT%H:%M:%S")]
    views = [a for name in VIEWS for a in ("--views", name)]

    values = {}
    for engine, settings in (("duckdb", lake), ("spark", spark_settings)):
        redis_client_of_lake.flushdb()
        done = _feast_cli(settings, "materialize", *window, *views)
        assert done.returncode == 0, (engine, done.stderr[-3000:])
        assert ("spark offline store is an experimental" in done.stderr) == (engine == "spark"), done.stderr[-3000:]
        for name in VIEWS:
            assert name in done.stdout, (engine, name, done.stdout[-2000:])
        values[engine] = _online(lake)
    duck, spark = values["duckdb"], values["spark"]
    for key in ("user_id", "item_id"):
        assert duck[key].keys() == spark[key].keys()
        for column, got in duck[key].items():
            assert spark[key][column] == got, (key, column)
    embeddings = duck["user_id"]["user_embedding"]
    assert sum(v is not None for v in embeddings) == 12 and embeddings[12:] == [None, None]


def test_feature_store_yaml_names_the_offline_store_of_the_engine(lake, spark_settings):
    from feedstore.feast.offline.spark import SettingsSparkOfflineStoreConfig
    from feedstore.feast.offline.store import S3DuckDBOfflineStore

    assert lake.feast_offline_store.endswith(S3DuckDBOfflineStore.__name__)
    assert spark_settings.feast_env()["FEED_FEAST_OFFLINE_ENGINE"] == "spark"
    assert spark_settings.feast_offline_store == SettingsSparkOfflineStoreConfig().type
    assert SettingsSparkOfflineStoreConfig().spark_conf["spark.sql.session.timeZone"] == "UTC"


@pytest.fixture()
def redis_client_of_lake(lake: Settings):
    import redis

    return redis.Redis.from_url(lake.redis.url)
