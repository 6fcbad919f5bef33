"""Feast's Spark offline store configured from settings, for the ``feast`` CLI.

``feature_store.yaml`` names ``feedstore.feast.offline.engine``, which with
``FEED_FEAST_OFFLINE_ENGINE=spark`` (``Settings.feast_env()``: ``feedstore feast``, ``feedstore
stack env``) answers with this class. Its config's ``spark_conf`` defaults to
``feedstore.spark.spark_conf`` of the process's settings (master, driver memory, the s3a jars and
the component's bucket keys), so a plain ``feast materialize`` starts the very session the SDK
(``feedstore.feast.store``) and the pipeline use, with nothing Spark-specific in the YAML.
"""

from __future__ import annotations

from feast.infra.offline_stores.contrib.spark_offline_store.spark import SparkOfflineStore, SparkOfflineStoreConfig
from pydantic import Field, StrictStr, field_validator

TYPE = "feedstore.feast.offline.spark.SettingsSparkOfflineStore"


def _spark_conf() -> dict[str, str]:
    from feedstore.spark import spark_conf

    return spark_conf()


class SettingsSparkOfflineStoreConfig(SparkOfflineStoreConfig):
    type: StrictStr = TYPE
    spark_conf: dict[str, str] | None = Field(default_factory=_spark_conf)

    @field_validator("type")
    @classmethod
    def _own_type(cls, value: str) -> str:
        """Selected through ``feedstore.feast.offline.engine``, it still names the store it is."""
        return TYPE


class SettingsSparkOfflineStore(SparkOfflineStore):
    """Feast's Spark store as it is; only its configuration comes from settings."""
