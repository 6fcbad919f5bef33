"""``feature_store.yaml`` selects this store and its config by their dotted paths."""

from __future__ import annotations

from feedstore.feast.offline.store import S3DuckDBOfflineStore, S3DuckDBOfflineStoreConfig


def test_feature_store_yaml_selects_the_s3_duckdb_store(fs):
    assert isinstance(fs.config.offline_store, S3DuckDBOfflineStoreConfig)
    assert fs.config.offline_store.type == f"{S3DuckDBOfflineStore.__module__}.{S3DuckDBOfflineStore.__name__}"
    assert isinstance(fs._get_provider().offline_store, S3DuckDBOfflineStore)
