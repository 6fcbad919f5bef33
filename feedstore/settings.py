"""The one place where endpoints, credentials and tunables are read from the environment.

Every other module asks ``get_settings()``; defaults point at the local stack that
``feedstore stack up`` runs on loopback.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FEED_", extra="ignore")

    postgres_dsn: str = "postgresql://feedstore:feedstore@127.0.0.1:5433/feedstore"
    redis_url: str = "redis://127.0.0.1:6379/0"
    kafka_bootstrap: str = "127.0.0.1:9092"
    s3_endpoint: str = "http://127.0.0.1:8333"
    s3_bucket: str = "feedstore"
    s3_region: str = "us-east-1"
    aws_access_key_id: str = Field(
        "feedstore-key", validation_alias=AliasChoices("AWS_ACCESS_KEY_ID", "FEED_AWS_ACCESS_KEY_ID")
    )
    aws_secret_access_key: str = Field(
        "feedstore-secret",
        validation_alias=AliasChoices("AWS_SECRET_ACCESS_KEY", "FEED_AWS_SECRET_ACCESS_KEY"),
    )

    topic_activity: str = "user-activity"
    topic_dlq: str = "user-activity-dlq"
    topic_partitions: int = 4
    consumer_group: str = "feedstore-ingest"
    # The broker accepts 16 MiB (stack/kafka.py); producers may send up to that.
    kafka_message_max_bytes: int = 16 * 1024 * 1024
    kafka_session_timeout_ms: int = 10_000

    # Ingestion consumer; unset clock bounds fall back to feedstore.contract.rules.
    ingest_batch_size: int = 5_000
    ingest_batch_timeout_ms: int = 500
    ingest_max_event_age_seconds: int | None = None
    ingest_max_future_skew_seconds: int | None = None
    # Push realtime user features to Feast per batch (needs `feast apply` of feature_repo/ first).
    ingest_feast_push: bool = False

    stack_dir: Path = PROJECT_ROOT / ".stack"
    cache_dir: Path = Path.home() / ".cache" / "feedstore"
    kafka_version: str = "4.1.2"
    kafka_controller_port: int = 9093
    kafka_heap: str = "-Xmx512m"
    # weed mini's master, volume, filer and admin listen on base .. base+3 (gRPC on +10000).
    seaweedfs_port_base: int = 9333

    feast_repo_path: Path = PROJECT_ROOT / "feature_repo"
    feast_materialize_chunk_rows: int = 5_000
    feast_materialize_workers: int = 2
    serve_gc_threshold: int = 50_000
    # Feast's DuckDB connection (offline store: get_historical_features, materialization reads).
    feast_duckdb_memory_limit: str = "2GB"

    # Daily pipeline (orchestration/). Dagster keeps its own storage in Postgres when this DSN is
    # set, else in SQLite under $DAGSTER_HOME.
    dagster_storage_dsn: str | None = None
    pipeline_start_date: str = "2025-01-01"
    # Where the pre-computed content embeddings land (the generator's item snapshots).
    content_embeddings_prefix: str = "snapshots/items/"
    activity_retention_days: int = 30
    candidates_per_user: int = 100
    candidate_pool_size: int = 5_000
    # DuckDB's default is 80% of RAM; a bound makes the big joins spill to disk instead.
    pipeline_duckdb_memory_limit: str = "4GB"

    @property
    def s3_host_port(self) -> str:
        """``host:port`` of the S3 endpoint, as DuckDB and Kafka-style configs want it."""
        return urlsplit(self.s3_endpoint).netloc

    @property
    def s3_use_ssl(self) -> bool:
        return urlsplit(self.s3_endpoint).scheme == "https"

    @property
    def kafka_port(self) -> int:
        return int(self.kafka_bootstrap.split(",")[0].rsplit(":", 1)[1])

    @property
    def redis_port(self) -> int:
        return urlsplit(self.redis_url).port or 6379

    @property
    def s3_port(self) -> int:
        return urlsplit(self.s3_endpoint).port or 80

    @property
    def feast_registry_url(self) -> str:
        """The SQLAlchemy URL Feast's SQL registry wants (psycopg 3 driver) for the same database."""
        dsn = urlsplit(self.postgres_dsn)
        return dsn._replace(scheme="postgresql+psycopg").geturl()

    @property
    def feast_redis_connection(self) -> str:
        """Feast's Redis connection string, ``host:port,db=N[,password=...]``, from ``redis_url``."""
        url = urlsplit(self.redis_url)
        parts = [f"{url.hostname or '127.0.0.1'}:{url.port or 6379}", f"db={int(url.path.lstrip('/') or 0)}"]
        if url.username:
            parts.append(f"username={url.username}")
        if url.password:
            parts.append(f"password={url.password}")
        if url.scheme == "rediss":
            parts.append("ssl=true")
        return ",".join(parts)

    def feast_env(self) -> dict[str, str]:
        """What the ``feast`` CLI needs besides FEED_*: the names ``feature_store.yaml`` substitutes,
        and the S3 endpoint and credentials for the pyarrow checks ``feast apply`` runs on sources."""
        return {
            "FEED_FEAST_REGISTRY_URL": self.feast_registry_url,
            "FEED_FEAST_REDIS": self.feast_redis_connection,
            "AWS_ACCESS_KEY_ID": self.aws_access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.aws_secret_access_key,
            "AWS_ENDPOINT_URL_S3": self.s3_endpoint,
            "AWS_DEFAULT_REGION": self.s3_region,
        }

    @property
    def postgres_port(self) -> int:
        return urlsplit(self.postgres_dsn).port or 5432


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reset_settings_cache() -> None:
    """Tests change the environment; this makes the next ``get_settings()`` see it."""
    get_settings.cache_clear()
