"""The Feast batch source of a feature view: every day of its Parquet table in the lake, as the
configured offline engine reads it (``FEED_FEAST_OFFLINE_ENGINE``): a ``FileSource`` for DuckDB,
a ``SparkSource`` over the same objects (``s3a://``) for Spark. Same name, columns and timestamp."""

from __future__ import annotations

from feast import FileSource
from feast.data_format import ParquetFormat
from feast.data_source import DataSource

from feedstore.contract import lake
from feedstore.contract.features import EVENT_TIMESTAMP
from feedstore.s3 import s3_uri
from feedstore.settings import Settings, get_settings


def feature_glob(view: str, settings: Settings | None = None) -> str:
    return s3_uri(lake.feature_glob(view), settings)


def _description(view: str) -> str:
    return f"Parquet under {lake.feature_root(view)}/dt=*/ written by the daily pipeline"


def parquet_source(view: str, settings: Settings | None = None) -> FileSource:
    s = settings or get_settings()
    return FileSource(
        name=f"{view}_source",
        path=feature_glob(view, s),
        file_format=ParquetFormat(),
        s3_endpoint_override=s.s3.endpoint,
        timestamp_field=EVENT_TIMESTAMP,
        description=_description(view),
    )


def spark_source(view: str, settings: Settings | None = None) -> DataSource:
    import warnings

    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

    from feedstore import spark

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The spark data source API is an experimental", RuntimeWarning)
        return SparkSource(name=f"{view}_source", path=spark.feature_glob(view, settings), file_format="parquet",
                           timestamp_field=EVENT_TIMESTAMP, description=_description(view))


def batch_source(view: str, settings: Settings | None = None) -> DataSource:
    s = settings or get_settings()
    return spark_source(view, s) if s.feast.offline_engine == "spark" else parquet_source(view, s)
