"""The offline store ``feature_store.yaml`` names for the plain ``feast`` CLI: the one of the engine
``FEED_FEAST_OFFLINE_ENGINE`` selects (``duckdb`` when unset, ``spark``).

Feast resolves ``offline_store.type`` by importing ``<module>.<Name>Config`` and then builds the
store from the config object's own class and module. ``EngineOfflineStoreConfig`` constructs the
selected engine's config instead of itself, so the YAML names one fixed type, an unset environment
still reaches the online store's one-line "not set" message, and Feast instantiates the engine's
store. ``feedstore.feast.store.repo_config`` names the concrete store of its settings instead.
"""

from __future__ import annotations

from typing import Any

TYPE = "feedstore.feast.offline.engine.EngineOfflineStore"


def selected_config() -> type:
    """The config class of ``FEED_FEAST_OFFLINE_ENGINE``, read now."""
    from pydantic import ValidationError

    from feedstore.feast.online.store import cli_error
    from feedstore.settings import FeastSettings

    try:
        engine = FeastSettings().offline_engine
    except ValidationError as e:
        cli_error(f"FEED_FEAST_OFFLINE_ENGINE: {e.errors()[0]['msg']}")
    if engine == "spark":
        from feedstore.feast.offline.spark import SettingsSparkOfflineStoreConfig

        return SettingsSparkOfflineStoreConfig
    from feedstore.feast.offline.store import S3DuckDBOfflineStoreConfig

    return S3DuckDBOfflineStoreConfig


class EngineOfflineStoreConfig:
    """Never an instance of itself: ``EngineOfflineStoreConfig(**yaml)`` is the selected config."""

    def __new__(cls, **values: Any) -> Any:
        return selected_config()(**values)
