"""The Feast batch source of a feature view: every day of its Parquet table in the lake."""

from __future__ import annotations

from feast import FileSource
from feast.data_format import ParquetFormat

from feedstore.contract import lake
from feedstore.contract.features import EVENT_TIMESTAMP
from feedstore.s3 import s3_uri
from feedstore.settings import Settings, get_settings


def feature_glob(view: str, settings: Settings | None = None) -> str:
    return s3_uri(lake.feature_glob(view), settings)


def parquet_source(view: str, settings: Settings | None = None) -> FileSource:
    s = settings or get_settings()
    return FileSource(
        name=f"{view}_source",
        path=feature_glob(view, s),
        file_format=ParquetFormat(),
        s3_endpoint_override=s.s3.endpoint,
        timestamp_field=EVENT_TIMESTAMP,
        description=f"Parquet under {lake.feature_root(view)}/dt=*/ written by the daily pipeline",
    )
