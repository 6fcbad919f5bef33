"""The Parquet lake's layout on S3 and the few moves every asset makes on it.

Every daily output lives under ``<root>/dt=YYYY-MM-DD/``; a partition is replaced by
overwriting ``part-00000.parquet`` (one PUT, atomic per object) and then deleting any other
object under the prefix, so a re-run or a backfill never leaves a mix of old and new rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

# The layout itself is the contract's; the names are re-exported for the assets' convenience.
from feedstore.contract.lake import (  # noqa: F401
    ARCHIVE,
    CATALOG_ITEMS,
    EMBEDDINGS,
    EXPERIMENTS,
    LANDED,
    MANIFEST,
    MODELS,
    PART,
    TRAINING,
    day_prefix,
    feature_prefix,
)
from feedstore.s3 import arrow_fs, bucket_path, s3_client, s3_uri
from feedstore.settings import Settings, get_settings

COMPRESSION = "zstd"


def day_start(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=timezone.utc)


def day_end(day: date) -> datetime:
    """Exclusive end of the UTC day; also the ``event_timestamp`` of that day's feature rows,
    so a row describes everything strictly before it and nothing after."""
    return day_start(day + timedelta(days=1))


def days_back(day: date, n: int) -> list[date]:
    """``day`` and the ``n - 1`` days before it, oldest first."""
    return [day - timedelta(days=i) for i in range(n - 1, -1, -1)]


# ---- objects -----------------------------------------------------------------------------

def list_keys(prefix: str, settings: Settings | None = None) -> list[str]:
    s = settings or get_settings()
    keys: list[str] = []
    for page in s3_client(s).get_paginator("list_objects_v2").paginate(Bucket=s.s3.bucket, Prefix=prefix):
        keys.extend(o["Key"] for o in page.get("Contents", []))
    return sorted(keys)


def parquet_keys(prefix: str, settings: Settings | None = None) -> list[str]:
    return [k for k in list_keys(prefix, settings) if k.endswith(".parquet")]


def partition_days(root: str, settings: Settings | None = None) -> list[date]:
    """The days that have a ``dt=`` folder under ``root``."""
    s = settings or get_settings()
    days = []
    paginator = s3_client(s).get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=s.s3.bucket, Prefix=f"{root}/dt=", Delimiter="/"):
        for p in page.get("CommonPrefixes", []):
            try:
                days.append(date.fromisoformat(p["Prefix"].rstrip("/").rsplit("dt=", 1)[1]))
            except ValueError:
                continue
    return sorted(days)


def delete_keys(keys: Iterable[str], settings: Settings | None = None) -> None:
    s = settings or get_settings()
    keys = list(keys)
    client = s3_client(s)
    for i in range(0, len(keys), 1000):
        client.delete_objects(Bucket=s.s3.bucket, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]]})


def write_partition(table: pa.Table, prefix: str, settings: Settings | None = None,
                    row_group_size: int = 1_000_000) -> str:
    """Replace the partition under ``prefix`` with ``table``; returns the object's URI."""
    s = settings or get_settings()
    key = prefix + PART
    pq.write_table(table, bucket_path(key, s), filesystem=arrow_fs(s), compression=COMPRESSION,
                   row_group_size=row_group_size)
    delete_keys([k for k in list_keys(prefix, s) if k != key and not k.startswith(prefix + "_")], s)
    return s3_uri(key, s)


def put_json(key: str, value: dict[str, Any], settings: Settings | None = None) -> str:
    s = settings or get_settings()
    s3_client(s).put_object(Bucket=s.s3.bucket, Key=key, Body=json.dumps(value, indent=2, default=str).encode(),
                            ContentType="application/json")
    return s3_uri(key, s)


def get_json(key: str, settings: Settings | None = None) -> dict[str, Any] | None:
    s = settings or get_settings()
    client = s3_client(s)
    try:
        body = client.get_object(Bucket=s.s3.bucket, Key=key)["Body"].read()
    except client.exceptions.NoSuchKey:
        return None
    return json.loads(body)


def read_table(prefix: str, settings: Settings | None = None, columns: list[str] | None = None) -> pa.Table:
    """A whole partition as Arrow (small outputs and tests; assets scan with DuckDB)."""
    s = settings or get_settings()
    keys = parquet_keys(prefix, s)
    if not keys:
        raise FileNotFoundError(f"nothing under {s3_uri(prefix, s)}")
    fs = arrow_fs(s)
    return pa.concat_tables([pq.read_table(bucket_path(k, s), filesystem=fs, columns=columns) for k in keys])


# ---- DuckDB ------------------------------------------------------------------------------

def is_duckdb(con) -> bool:
    return isinstance(con, duckdb.DuckDBPyConnection)


def scan(con, name: str, keys: list[str], schema: pa.Schema, settings: Settings | None = None,
         filename: bool = False) -> None:
    """Register view ``name`` over the Parquet objects ``keys`` (an empty table with ``schema`` when
    there are none), through the relational API so no path is ever spliced into SQL text. With
    ``filename``, a ``filename`` column names each row's object. On DuckDB or on Spark
    (``orchestration.engines.SparkRelations``, over ``s3a://``)."""
    if not is_duckdb(con):
        from feedstore.spark import s3a_uri

        con.scan(name, [s3a_uri(k, settings) for k in keys], schema, filename=filename)
        return
    if keys:
        rel = con.read_parquet([s3_uri(k, settings) for k in keys], union_by_name=True, filename=filename)
    elif filename:
        rel = con.from_arrow(schema.append(pa.field("filename", pa.string())).empty_table())
    else:
        rel = con.from_arrow(schema.empty_table())
    rel.create_view(name, replace=True)


def view(con, name: str, query: str, params: dict[str, Any] | None = None) -> None:
    """View ``name`` over ``query`` (DuckDB dialect, ``$name`` parameters bound), on either engine."""
    if is_duckdb(con):
        con.sql(query, params=params or None).create_view(name, replace=True)
    else:
        con.view(name, query, params)


def fetch(con, query: str, params: dict[str, Any] | None = None) -> pa.Table:
    """``query`` on a DuckDB connection, or on Spark through ``orchestration.engines.SparkRelations``."""
    if is_duckdb(con):
        return con.execute(query, params or {}).arrow().read_all()
    return con.fetch(query, params)


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Columns in the contract's order and types (DuckDB's own types are close, not exact)."""
    return pa.table([table[f.name].cast(f.type) for f in schema], schema=schema)
