"""Feast's Spark offline store configured from settings, for the ``feast`` CLI.

``feature_store.yaml`` names its offline store through ``${FEED_FEAST_OFFLINE_STORE}``, which
``Settings.feast_env()`` (``feedstore feast``, ``feedstore stack env``) sets from
``FEED_FEAST_OFFLINE_ENGINE``: with ``spark``, this class. Its config's ``spark_conf`` defaults to
``feedstore.spark.spark_conf`` of the process's settings (master, driver memory, the s3a jars and
the component's bucket keys), so a plain ``feast materialize`` starts the very session the SDK
(``feedstore.feast.store``) and the pipeline use, with nothing Spark-specific in the YAML.
"""

from __future__ import annotations

from feast.infra.offline_stores.contrib.spark_offline_store.spark import SparkOfflineStore, SparkOfflineStoreConfig
from pydantic import Field, StrictStr

TYPE = "feedstore.feast.offline.spark.SettingsSparkOfflineStore"


def _spark_conf() -> dict[str, str]:
    from feedstore.spark import spark_conf

    return spark_conf()


class SettingsSparkOfflineStoreConfig(SparkOfflineStoreConfig):
    type: StrictStr = TYPE
    spark_conf: dict[str, str] | None = Field(default_factory=_spark_conf)


class SettingsSparkOfflineStore(SparkOfflineStore):
    """Feast's Spark store as it is; only its configuration comes from settings."""
