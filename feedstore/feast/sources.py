"""Where the feature tables live on S3 (the feature contract), for Feast sources and writers."""

from __future__ import annotations

from datetime import date

from feedstore.s3 import s3_uri
from feedstore.settings import Settings


def feature_prefix(view: str) -> str:
    return f"features/{view}"


def partition_key(view: str, day: date, name: str = "part-0.parquet") -> str:
    return f"{feature_prefix(view)}/dt={day.isoformat()}/{name}"


def feature_glob(view: str, settings: Settings | None = None) -> str:
    """DuckDB needs a glob, not a bare prefix (DESIGN.md)."""
    return s3_uri(f"{feature_prefix(view)}/dt=*/*.parquet", settings)
