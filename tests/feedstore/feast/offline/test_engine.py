"""``feature_store.yaml``'s one offline store type resolves, through Feast's own lookup, to the store
of the engine the environment selects (stack-free)."""

from __future__ import annotations

import pytest
from feast.infra.offline_stores.offline_utils import get_offline_store_from_config
from feast.repo_config import get_offline_config_from_type

from feedstore.feast.offline import engine
from feedstore.feast.offline.spark import SettingsSparkOfflineStore
from feedstore.feast.offline.store import S3DuckDBOfflineStore


@pytest.mark.parametrize(("selected", "store"), [(None, S3DuckDBOfflineStore), ("duckdb", S3DuckDBOfflineStore),
                                                 ("spark", SettingsSparkOfflineStore)])
def test_the_yaml_type_becomes_the_selected_engines_store(monkeypatch, selected, store):
    monkeypatch.delenv("FEED_FEAST_OFFLINE_ENGINE", raising=False)
    if selected:
        monkeypatch.setenv("FEED_FEAST_OFFLINE_ENGINE", selected)
    config = get_offline_config_from_type(engine.TYPE)(type=engine.TYPE)
    assert config.type == f"{store.__module__}.{store.__name__}"
    assert type(get_offline_store_from_config(config)) is store


def test_an_unknown_engine_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("FEED_FEAST_OFFLINE_ENGINE", "sparky")
    with pytest.raises(ValueError, match="FEED_FEAST_OFFLINE_ENGINE"):
        get_offline_config_from_type(engine.TYPE)(type=engine.TYPE)
