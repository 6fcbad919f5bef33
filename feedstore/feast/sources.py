"""Where the feature tables live on S3 (the feature contract), for Feast sources and writers."""

from __future__ import annotations

from datetime import date

from feast import FileSource
from feast.data_format import ParquetFormat

from feedstore.s3 import s3_uri
from feedstore.settings import Settings, get_settings

FEATURES = "features"


def feature_prefix(view: str) -> str:
    return f"{FEATURES}/{view}"


def partition_key(view: str, day: date, name: str = "part-0.parquet") -> str:
    return f"{feature_prefix(view)}/dt={day.isoformat()}/{name}"


def feature_glob(view: str, settings: Settings | None = None) -> str:
    """DuckDB needs a glob, not a bare prefix (DESIGN.md)."""
    return s3_uri(f"{feature_prefix(view)}/dt=*/*.parquet", settings)


def parquet_source(view: str) -> FileSource:
    """The batch source of a daily feature view: every day of its Parquet table."""
    return FileSource(
        name=f"{view}_source",
        path=feature_glob(view),
        file_format=ParquetFormat(),
        s3_endpoint_override=get_settings().s3_endpoint,
        timestamp_field="event_timestamp",
        description=f"Parquet under {feature_prefix(view)}/dt=*/ written by the daily pipeline",
    )
