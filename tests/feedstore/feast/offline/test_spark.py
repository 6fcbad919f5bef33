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
def both(lake: Settings, entity_rows: pd.DataFrame, tmp_path_factory):
    """The DuckDB engine on the sandbox's registry; the Spark engine on a registry of its own
    (SQLite, in a temporary directory), since one registry holds one kind of source."""
    registry = tmp_path_factory.mktemp("spark_registry") / "registry.db"
    duck = _historical(lake, entity_rows)
    spark = _historical(lake.replace(feast={"offline_engine": "spark", "registry": f"sqlite:///{registry}"}),
                        entity_rows)
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
