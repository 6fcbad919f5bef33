"""The one place where endpoints, credentials and tunables are read from the environment,
grouped by component.

Every other module asks ``get_settings()`` at call time; defaults point at the local stack that
``feedstore stack up`` runs on loopback. Each group reads its own ``FEED_<GROUP>_*`` variables
(a few keep the names they were documented under, given as aliases), so ``settings.kafka`` is
what the Kafka clients need and nothing else.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import AliasChoices, BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _group(prefix: str) -> SettingsConfigDict:
    return SettingsConfigDict(env_prefix=prefix, extra="ignore", populate_by_name=True)


def _env(*names: str) -> Any:
    """A field read from variables named otherwise than its group's prefix would give."""
    return AliasChoices(*names)


class PostgresSettings(BaseSettings):
    model_config = _group("FEED_POSTGRES_")

    dsn: str = "postgresql://feedstore:feedstore@127.0.0.1:5433/feedstore"

    @property
    def port(self) -> int:
        return urlsplit(self.dsn).port or 5432


class RedisSettings(BaseSettings):
    model_config = _group("FEED_REDIS_")

    url: str = "redis://127.0.0.1:6379/0"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 6379


class KafkaSettings(BaseSettings):
    model_config = _group("FEED_KAFKA_")

    bootstrap: str = "127.0.0.1:9092"
    topic_activity: str = Field("user-activity", validation_alias=_env("FEED_TOPIC_ACTIVITY"))
    topic_dlq: str = Field("user-activity-dlq", validation_alias=_env("FEED_TOPIC_DLQ"))
    topic_partitions: int = Field(4, validation_alias=_env("FEED_TOPIC_PARTITIONS"))
    consumer_group: str = Field("feedstore-ingest", validation_alias=_env("FEED_CONSUMER_GROUP"))
    # The broker accepts 16 MiB (devtools/stack/kafka.py); producers may send up to that.
    message_max_bytes: int = 16 * 1024 * 1024
    session_timeout_ms: int = 10_000

    @property
    def port(self) -> int:
        return int(self.bootstrap.split(",")[0].rsplit(":", 1)[1])


class S3Settings(BaseSettings):
    model_config = _group("FEED_S3_")

    endpoint: str = "http://127.0.0.1:8333"
    bucket: str = "feedstore"
    region: str = "us-east-1"
    access_key_id: str = Field("feedstore-key", validation_alias=_env(
        "AWS_ACCESS_KEY_ID", "FEED_AWS_ACCESS_KEY_ID"))
    secret_access_key: str = Field("feedstore-secret", validation_alias=_env(
        "AWS_SECRET_ACCESS_KEY", "FEED_AWS_SECRET_ACCESS_KEY"))

    @property
    def host_port(self) -> str:
        """``host:port`` of the endpoint, as DuckDB and Kafka-style configs want it."""
        return urlsplit(self.endpoint).netloc

    @property
    def use_ssl(self) -> bool:
        return urlsplit(self.endpoint).scheme == "https"

    @property
    def port(self) -> int:
        return urlsplit(self.endpoint).port or 80


class IngestSettings(BaseSettings):
    """The consumer; unset clock bounds fall back to ``feedstore.contract.rules``."""

    model_config = _group("FEED_INGEST_")

    batch_size: int = 5_000
    batch_timeout_ms: int = 500
    max_event_age_seconds: int | None = None
    max_future_skew_seconds: int | None = None
    feast_push: bool = False
    """Push realtime user features to Feast per batch (needs `feast apply` of feature_repo/ first)."""
    statement_timeout_ms: int = 30_000
    """The consumer's Postgres statements are cancelled past this (a stalled server shows as an outage)."""


class FeastSettings(BaseSettings):
    model_config = _group("FEED_FEAST_")

    repo_path: Path = PROJECT_ROOT / "feature_repo"
    duckdb_memory_limit: str = "2GB"
    """Feast's DuckDB connection (offline store: get_historical_features, materialization reads)."""


class ServeSettings(BaseSettings):
    model_config = _group("FEED_SERVE_")

    gc_threshold: int = 50_000


class PipelineSettings(BaseSettings):
    """The daily Dagster pipeline (orchestration/)."""

    model_config = _group("FEED_PIPELINE_")

    start_date: str | None = None
    """The first daily partition, YYYY-MM-DD; unset: ``history_days`` before today."""
    history_days: int = 90
    """Partitions shown when no start date is set: the 30 days Postgres holds and the archived
    quarter before them (retention runs on days past the window)."""
    duckdb_memory_limit: str = "4GB"
    """DuckDB's default is 80% of RAM; a bound makes the big joins spill to disk instead."""
    dagster_storage_dsn: str | None = Field(None, validation_alias=_env("FEED_DAGSTER_STORAGE_DSN"))
    """Dagster keeps its runs in Postgres when set, else in SQLite under $DAGSTER_HOME."""
    content_embeddings_prefix: str = Field("snapshots/items/", validation_alias=_env(
        "FEED_CONTENT_EMBEDDINGS_PREFIX"))
    """Where the pre-computed content embeddings land (the generator's item snapshots)."""
    activity_retention_days: int = Field(30, validation_alias=_env("FEED_ACTIVITY_RETENTION_DAYS"))
    data_docs_dir: Path | None = None
    """Every check writes its Data Docs site under this directory and links it in its metadata
    (``feedstore dagster`` defaults it to ``$DAGSTER_HOME/data_docs``); unset: no Data Docs."""
    shutdown_grace_seconds: float = 10.0
    """``feedstore dagster`` on SIGTERM/SIGINT: how long ``dagster dev`` may shut down cleanly before
    its processes are killed (its own wait is a minute per process)."""
    candidates_per_user: int = Field(100, validation_alias=_env("FEED_CANDIDATES_PER_USER"))
    candidate_pool_size: int = Field(5_000, validation_alias=_env("FEED_CANDIDATE_POOL_SIZE"))

    def first_partition(self, today: date | None = None) -> str:
        if self.start_date:
            return date.fromisoformat(self.start_date).isoformat()
        today = today or datetime.now(timezone.utc).date()
        return (today - timedelta(days=self.history_days)).isoformat()


class StackSettings(BaseSettings):
    """The local stack (devtools/stack); nothing in production reads it."""

    model_config = _group("FEED_STACK_")

    dir: Path = PROJECT_ROOT / ".stack"
    cache_dir: Path = Field(Path.home() / ".cache" / "feedstore", validation_alias=_env("FEED_CACHE_DIR"))
    kafka_version: str = Field("4.1.2", validation_alias=_env("FEED_KAFKA_VERSION"))
    kafka_controller_port: int = Field(9093, validation_alias=_env("FEED_KAFKA_CONTROLLER_PORT"))
    kafka_heap: str = Field("-Xmx512m", validation_alias=_env("FEED_KAFKA_HEAP"))
    seaweedfs_port_base: int = Field(9333, validation_alias=_env("FEED_SEAWEEDFS_PORT_BASE"))
    """weed mini's master, volume, filer and admin listen on base .. base+3 (gRPC on +10000)."""
    prometheus_port: int = 9190
    """``stack up --monitoring``'s Prometheus (not 9090: Debian's package runs its own there under systemd)."""
    scrape_ingest: str = "127.0.0.1:9108"
    """Comma-separated ``host:port`` of ``feedstore ingest --metrics-port`` processes to scrape."""
    scrape_serve: str = "127.0.0.1:6566"
    """``feedstore serve`` processes (GET /metrics on the serving port)."""
    scrape_pipeline: str = "127.0.0.1:9109"
    """``feedstore exporter`` (the pipeline's metrics)."""


class Settings(BaseModel):
    postgres: PostgresSettings = Field(default_factory=PostgresSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    s3: S3Settings = Field(default_factory=S3Settings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    feast: FeastSettings = Field(default_factory=FeastSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)
    pipeline: PipelineSettings = Field(default_factory=PipelineSettings)
    stack: StackSettings = Field(default_factory=StackSettings)

    @classmethod
    def defaults(cls) -> Settings:
        """The built-in defaults, whatever the environment says."""
        return cls.model_construct(**{name: field.default_factory.model_construct()
                                      for name, field in cls.model_fields.items()})

    def replace(self, **groups: dict[str, Any]) -> Settings:
        """A copy with some fields of some groups changed: ``s.replace(kafka={"topic_activity": "t"})``."""
        return self.model_copy(update={name: getattr(self, name).model_copy(update=fields)
                                       for name, fields in groups.items() if fields})

    @property
    def feast_registry_url(self) -> str:
        """The SQLAlchemy URL Feast's SQL registry wants (psycopg 3 driver) for the same database."""
        return urlsplit(self.postgres.dsn)._replace(scheme="postgresql+psycopg").geturl()

    @property
    def feast_redis_connection(self) -> str:
        """Feast's Redis connection string, ``host:port,db=N[,password=...]``, from the Redis URL."""
        url = urlsplit(self.redis.url)
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
            "AWS_ACCESS_KEY_ID": self.s3.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.s3.secret_access_key,
            "AWS_ENDPOINT_URL_S3": self.s3.endpoint,
            "AWS_DEFAULT_REGION": self.s3.region,
        }


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reset_settings_cache() -> None:
    """Tests change the environment; this makes the next ``get_settings()`` see it."""
    get_settings.cache_clear()
