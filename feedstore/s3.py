"""One home for reaching the object store: boto3 for objects, pyarrow for Parquet, DuckDB for SQL."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from pyarrow import fs as pafs

from feedstore.settings import Settings, get_settings

if TYPE_CHECKING:
    import duckdb


def s3_client(settings: Settings | None = None, timeout: float = 10):
    s = settings or get_settings()
    return boto3.client(
        "s3",
        endpoint_url=s.s3.endpoint,
        aws_access_key_id=s.s3.access_key_id,
        aws_secret_access_key=s.s3.secret_access_key,
        region_name=s.s3.region,
        config=Config(connect_timeout=timeout, read_timeout=max(timeout, 30),
                      retries={"max_attempts": 2}, s3={"addressing_style": "path"}),
    )


def arrow_fs(settings: Settings | None = None, connect_timeout: float = 10, request_timeout: float = 60,
             attempts: int = 3) -> pafs.S3FileSystem:
    """The consumer passes short timeouts and one attempt (it retries whole stages itself), so that
    a stalled store shows as an outage in seconds."""
    s = settings or get_settings()
    return pafs.S3FileSystem(
        access_key=s.s3.access_key_id,
        secret_key=s.s3.secret_access_key,
        endpoint_override=s.s3.host_port,
        scheme="https" if s.s3.use_ssl else "http",
        region=s.s3.region,
        connect_timeout=connect_timeout,
        request_timeout=request_timeout,
        retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=attempts),
    )


def s3_uri(key: str, settings: Settings | None = None) -> str:
    s = settings or get_settings()
    return f"s3://{s.s3.bucket}/{key.lstrip('/')}"


def bucket_path(key: str, settings: Settings | None = None) -> str:
    """``bucket/key`` as pyarrow's filesystem wants it."""
    s = settings or get_settings()
    return f"{s.s3.bucket}/{key.lstrip('/')}"


@lru_cache(maxsize=1)
def httpfs_extension_path() -> Path:
    """DuckDB cannot download extensions here; the httpfs wheel ships the file."""
    import duckdb
    import duckdb_extension_httpfs

    root = Path(duckdb_extension_httpfs.__file__).parent / "extensions"
    version = duckdb.__version__
    candidates = sorted(root.glob(f"v{version}/**/httpfs.duckdb_extension")) or sorted(
        root.glob("**/httpfs.duckdb_extension")
    )
    if not candidates:
        raise RuntimeError(f"httpfs.duckdb_extension not found under {root}")
    return candidates[0]


def configure_duckdb(con, settings: Settings | None = None) -> None:
    """Load httpfs from the wheel and create the S3 secret on a DuckDB connection."""
    s = settings or get_settings()
    con.install_extension(str(httpfs_extension_path()))
    con.load_extension("httpfs")
    con.execute(
        "CREATE OR REPLACE SECRET feedstore_s3 (TYPE s3, KEY_ID $key, SECRET $secret, "
        "ENDPOINT $endpoint, URL_STYLE 'path', USE_SSL $ssl, REGION $region)",
        {"key": s.s3.access_key_id, "secret": s.s3.secret_access_key, "endpoint": s.s3.host_port,
         "ssl": s.s3.use_ssl, "region": s.s3.region},
    )


def duckdb_connection(settings: Settings | None = None, memory_limit: str | None = None) -> duckdb.DuckDBPyConnection:
    """In-memory DuckDB with S3 configured and UTC as the session time zone (day arithmetic);
    imported here, not at the top, so the consumer that only uploads never loads DuckDB."""
    import duckdb

    limit = memory_limit or (settings or get_settings()).pipeline.duckdb_memory_limit
    con = duckdb.connect(config={"memory_limit": limit})
    configure_duckdb(con, settings)
    con.execute("SET TimeZone = 'UTC'")
    return con
