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
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from pydantic import AliasChoices, BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _group(prefix: str) -> SettingsConfigDict:
    return SettingsConfigDict(env_prefix=prefix, extra="ignore", populate_by_name=True)


def _env(*names: str) -> Any:
    """A field read from variables named otherwise than its group's prefix would give."""
    return AliasChoices(*names)


Component = Literal["owner", "ingest", "pipeline", "serve", "reader"]
RUNTIME_COMPONENTS: tuple[Component, ...] = ("ingest", "pipeline", "serve", "reader")
"""Each runs under its own Postgres login, Redis ACL user and S3 identity; ``owner`` migrates."""
DAGSTER_LOGIN = "feedstore_dagster_app"
"""Dagster's own storage (runs, event log, schedules) when it is in Postgres: a login of its own,
which may create tables in schema ``dagster`` (sql/015) and touch nothing else."""


def local_secret(component: str) -> str:
    """The local stack's password for a component (``stack up`` and ``migrate`` set them)."""
    return f"feedstore-{component}-local"


def _with_user(url: str, user: str, password: str, **query: str) -> str:
    """``url`` logged in as ``user``, with ``query`` parameters set."""
    parts = urlsplit(url)
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{parts.hostname or '127.0.0.1'}"
    if parts.port:
        netloc += f":{parts.port}"
    return parts._replace(netloc=netloc, query=urlencode({**dict(parse_qsl(parts.query)), **query})).geturl()


def _with_query(url: str, **query: str) -> str:
    parts = urlsplit(url)
    params = dict(parse_qsl(parts.query))
    for key, value in query.items():
        params.setdefault(key, value)
    return parts._replace(query=urlencode(params)).geturl()


class PostgresSettings(BaseSettings):
    """``dsn`` is the owner's (migrations, dev tooling); each runtime component logs in with its
    own DSN, by default the owner's server and database as ``feedstore_<component>_app``."""

    model_config = _group("FEED_POSTGRES_")

    dsn: str = "postgresql://feedstore_owner:feedstore-owner-local@127.0.0.1:5433/feedstore"
    ingest_dsn: str | None = None
    pipeline_dsn: str | None = None
    serve_dsn: str | None = None
    reader_dsn: str | None = None
    partition_days_back: int = 60
    """Runtime roles may create activity partitions this many days back (a replay) ..."""
    partition_days_ahead: int = 8
    """... and this many ahead; ``migrate`` writes both into the database."""
    partition_days_kept: int = 2
    """The bounded drop never reaches the last this-many days."""

    @property
    def port(self) -> int:
        return urlsplit(self.dsn).port or 5432

    @property
    def user(self) -> str:
        return urlsplit(self.dsn).username or ""

    def dsn_for(self, component: Component) -> str:
        """The component's DSN, tagged with ``application_name=feedstore-<component>``."""
        explicit = self.dsn if component == "owner" else getattr(self, f"{component}_dsn")
        if explicit:
            return _with_query(explicit, application_name=f"feedstore-{component}")
        return _with_user(self.dsn, f"feedstore_{component}_app", local_secret(component),
                          application_name=f"feedstore-{component}")


class RedisSettings(BaseSettings):
    """``url`` is the administrator's (the stack, dev tooling, tests' set-up); each runtime
    component has its own ACL user, by default ``feedstore-<component>`` on the same server."""

    model_config = _group("FEED_REDIS_")

    url: str = "redis://feedstore-admin:feedstore-admin-local@127.0.0.1:6379/0"
    cluster: bool = False
    """``url`` names a node of a Redis Cluster: clients follow the slots (keys are hash-tagged per entity)."""
    ingest_url: str | None = None
    pipeline_url: str | None = None
    serve_url: str | None = None
    reader_url: str | None = None

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 6379

    def url_for(self, component: Component) -> str:
        """The component's URL; redis-py names the connection (``CLIENT SETNAME``) from it."""
        explicit = self.url if component == "owner" else getattr(self, f"{component}_url")
        if explicit:
            return _with_query(explicit, client_name=f"feedstore-{component}")
        return _with_user(self.url, f"feedstore-{component}", local_secret(component),
                          client_name=f"feedstore-{component}")


class KafkaSettings(BaseSettings):
    model_config = _group("FEED_KAFKA_")

    bootstrap: str = "127.0.0.1:9092"
    topic_activity: str = Field("user-activity", validation_alias=_env("FEED_TOPIC_ACTIVITY"))
    topic_dlq: str = Field("user-activity-dlq", validation_alias=_env("FEED_TOPIC_DLQ"))
    topic_items: str = Field("item-catalog", validation_alias=_env("FEED_TOPIC_ITEMS"))
    topic_users: str = Field("user-profiles", validation_alias=_env("FEED_TOPIC_USERS"))
    topic_retry: str = Field("user-activity-retry", validation_alias=_env("FEED_TOPIC_RETRY"))
    """Events for a user or item not seen yet wait here (CreateTime: each keeps its first arrival)."""
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
    """The administrator's (buckets, dev tooling); runtime components use their own below."""
    ingest_access_key_id: str | None = None
    ingest_secret_access_key: str | None = None
    pipeline_access_key_id: str | None = None
    pipeline_secret_access_key: str | None = None
    serve_access_key_id: str | None = None
    serve_secret_access_key: str | None = None
    reader_access_key_id: str | None = None
    reader_secret_access_key: str | None = None

    def credentials_for(self, component: Component) -> tuple[str, str]:
        """(access key, secret) of the component's identity; the local stack's by default."""
        if component == "owner":
            return self.access_key_id, self.secret_access_key
        key = getattr(self, f"{component}_access_key_id") or f"feedstore-{component}-key"
        secret = getattr(self, f"{component}_secret_access_key") or local_secret(component)
        return key, secret

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
    statement_timeout_ms: int = 10_000
    """The consumer's Postgres statements are cancelled past this, and its connection is cut 5 s
    later if the server has not answered (a stalled server or network shows as an outage)."""
    s3_request_timeout_s: float = 15.0
    """The consumer's S3 requests give up past this (a stalled store shows as an outage)."""
    s3_block_offsets: int = 10_000
    """Landed objects hold one block of this many offsets of one partition and one event hour."""
    sources: str = "activity,items,users"
    """What ``feedstore ingest`` consumes without ``--source``."""
    unknown_grace_seconds: int = 600
    """An event for a user or item not seen yet waits this long for it before ``unknown_*`` (0: at once)."""
    unknown_recheck_seconds: float = 30.0
    """How often a waiting event is checked again."""
    catalog_online: bool = True
    """Streamed items are written to the online store (item_catalog_features, item_embedding) per batch."""


class ContractSettings(BaseSettings):
    model_config = _group("FEED_CONTRACT_")

    vocabularies: Path | None = None
    """The vocabulary file (categories, countries, ...); default feedstore/contract/vocabularies.toml."""


class FeastSettings(BaseSettings):
    model_config = _group("FEED_FEAST_")

    repo_path: Path = PROJECT_ROOT / "feature_repo"
    duckdb_memory_limit: str = "2GB"
    """Feast's DuckDB connection (offline store: get_historical_features, materialization reads)."""
    registry: str | None = None
    """The registry's SQLAlchemy URL (``sqlite:///…`` works too); unset: the Postgres database's."""
    offline_engine: Literal["duckdb", "spark"] = "duckdb"
    """The offline store ``store()`` configures: Feast's DuckDB store (``feedstore.feast.offline.store``)
    or its Spark store (``feedstore.spark``'s session), both over the same Parquet lake. The sources
    applied to the registry follow it, so one registry serves one engine (Feast's registry cannot
    turn a file source into a Spark one): give the other engine its own ``registry``."""


class SparkSettings(BaseSettings):
    """The Spark session of ``feedstore.spark`` (Feast's Spark offline store, the daily SQL on Spark)."""

    model_config = _group("FEED_SPARK_")

    master: str = "local[2]"
    driver_memory: str = "2g"
    shuffle_partitions: int = 4
    """Spark's default of 200 tasks per shuffle is for clusters; a local run of small days wants few."""
    hadoop_aws_version: str | None = None
    """The ``org.apache.hadoop:hadoop-aws`` version for ``s3a://``; unset: the Hadoop bundled with pyspark."""
    jars_dir: Path = Path.home() / ".cache" / "feedstore" / "spark-jars"
    """Where Spark's resolver keeps hadoop-aws and the AWS SDK it needs, fetched from Maven Central once."""


class ServeSettings(BaseSettings):
    model_config = _group("FEED_SERVE_")

    gc_threshold: int = 50_000
    max_body_bytes: int = 1_048_576
    """A larger request body is refused with 413 before it is read."""
    max_entities: int = 1_000
    """Entity rows per request; more is a 400 (a 200,000-row request held the server for 9 s)."""
    admin_token: str | None = None
    """Bearer token for the write and admin endpoints (/push, /write-to-online-store,
    /materialize*); unset, they answer 403."""
    workers: int = Field(1, ge=1)
    """``feedstore serve`` processes sharing the port (SO_REUSEPORT): one Python process answers
    one request at a time, so on N cores N workers answer up to N at once."""
    shutdown_grace_seconds: float = 10.0
    """After SIGTERM/SIGINT, how long the workers get to finish their requests before SIGKILL."""


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
    engine: Literal["duckdb", "spark"] = "duckdb"
    """What the daily feature assets (catalog features, window features, embeddings, candidates)
    run their SQL on: DuckDB in process, or Spark (``feedstore.spark``'s session, ``FEED_SPARK_*``)
    over the same lake; one SQL definition for both (``orchestration.engines``). The archive,
    retention and training-set assets stay on DuckDB."""
    checks_engine: Literal["duckdb", "gx"] = "duckdb"
    """What the ``training_dataset`` suite runs on when no engine is asked for (the Dagster check,
    ``feedstore validate`` without ``--engine``): ``duckdb``, the suite compiled to one SQL query
    over the Parquet (``expectations.sql``; ~128 s on pandas for a seed-scale day otherwise), or
    ``gx``, Great Expectations on a pandas frame (with Data Docs)."""
    dagster_storage_dsn: str | None = Field(None, validation_alias=_env("FEED_DAGSTER_STORAGE_DSN"))
    """Dagster keeps its runs in Postgres when set, else in SQLite under $DAGSTER_HOME. Not the
    owner's DSN: ``Settings.dagster_login_dsn``'s login (docker compose sets it so)."""
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
    postgres_admin_user: str = "feedstore"
    """The cluster's superuser (initdb's); only the stack uses it: databases, the owner role."""
    postgres_admin_password: str = "feedstore"
    seaweedfs_jwt_key: str = "feedstore-filer-local"
    """Signs filer and volume HTTP access (without a token made from it they refuse), and derives the
    CA and client certificate the master, volume and filer ports want (devtools/stack/certificates.py)."""

    prometheus_port: int = 9190
    """``stack up --monitoring``'s Prometheus (not 9090: Debian's package runs its own there under systemd)."""
    scrape_ingest: str = "127.0.0.1:9108"
    """Comma-separated ``host:port`` of ``feedstore ingest --metrics-port`` processes to scrape."""
    scrape_serve: str = "127.0.0.1:6566"
    """``feedstore serve`` processes (GET /metrics on the serving port)."""
    scrape_pipeline: str = "127.0.0.1:9109"
    """``feedstore exporter`` (the pipeline's metrics)."""
    redis_cluster_port: int = 7001
    """``stack up --redis-cluster``: six nodes (three masters, a replica each) on this port and the next five."""

class _Process(BaseSettings):
    model_config = _group("FEED_")

    component: Component = "owner"


class Settings(BaseModel):
    component: Component = "owner"
    """Whose credentials ``postgres.dsn``, ``redis.url`` and the S3 keys are (``as_component``)."""
    postgres: PostgresSettings = Field(default_factory=PostgresSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    s3: S3Settings = Field(default_factory=S3Settings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    contract: ContractSettings = Field(default_factory=ContractSettings)
    feast: FeastSettings = Field(default_factory=FeastSettings)
    spark: SparkSettings = Field(default_factory=SparkSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)
    pipeline: PipelineSettings = Field(default_factory=PipelineSettings)
    stack: StackSettings = Field(default_factory=StackSettings)

    @classmethod
    def defaults(cls) -> Settings:
        """The built-in defaults, whatever the environment says."""
        return cls.model_construct(**{name: field.default_factory.model_construct()
                                      for name, field in cls.model_fields.items() if field.default_factory})

    def as_component(self, component: Component) -> Settings:
        """These settings with ``component``'s credentials in ``postgres.dsn``, ``redis.url`` and
        the S3 keys, so every helper that takes settings connects as that component."""
        key, secret = self.s3.credentials_for(component)
        copy = self.replace(postgres={"dsn": self.postgres.dsn_for(component)},
                            redis={"url": self.redis.url_for(component)},
                            s3={"access_key_id": key, "secret_access_key": secret})
        return copy.model_copy(update={"component": component})

    def replace(self, **groups: dict[str, Any]) -> Settings:
        """A copy with some fields of some groups changed: ``s.replace(kafka={"topic_activity": "t"})``."""
        return self.model_copy(update={name: getattr(self, name).model_copy(update=fields)
                                       for name, fields in groups.items() if fields})

    @property
    def dagster_login_dsn(self) -> str:
        """The login of Dagster's Postgres storage: ``FEED_DAGSTER_STORAGE_DSN``, by default
        ``feedstore_dagster_app`` on the owner's database (``migrate`` makes it there, as the
        components' logins), tagged ``application_name=feedstore-dagster``."""
        if self.pipeline.dagster_storage_dsn:
            return _with_query(self.pipeline.dagster_storage_dsn, application_name="feedstore-dagster")
        return _with_user(self.postgres.dsn, DAGSTER_LOGIN, local_secret("dagster"),
                          application_name="feedstore-dagster")

    @property
    def feast_registry_url(self) -> str:
        """The SQLAlchemy URL Feast's SQL registry wants: ``feast.registry`` when set, else the
        Postgres database's (psycopg 3 driver)."""
        if self.feast.registry:
            return self.feast.registry
        return urlsplit(self.postgres.dsn)._replace(scheme="postgresql+psycopg").geturl()

    @property
    def feast_offline_store(self) -> str:
        """The ``offline_store.type`` of ``feature_store.yaml`` for ``feast.offline_engine``."""
        if self.feast.offline_engine == "spark":
            return "feedstore.feast.offline.spark.SettingsSparkOfflineStore"
        return "feedstore.feast.offline.store.S3DuckDBOfflineStore"

    @property
    def feast_redis_connection(self) -> str:
        """Feast's Redis connection string, ``host:port,db=N[,password=...]``, from the Redis URL."""
        url = urlsplit(self.redis.url)
        parts = [f"{url.hostname or '127.0.0.1'}:{url.port or 6379}"]
        if not self.redis.cluster:  # a cluster has database 0 only
            parts.append(f"db={int(url.path.lstrip('/') or 0)}")
        if url.username:
            parts.append(f"username={url.username}")
        if url.password:
            parts.append(f"password={url.password}")
        if url.scheme == "rediss":
            parts.append("ssl=true")
        return ",".join(parts)

    def feast_env(self) -> dict[str, str]:
        """What the ``feast`` CLI needs besides FEED_*: the names ``feature_store.yaml`` substitutes,
        the offline engine its store and definitions follow, and the S3 endpoint and credentials for the pyarrow checks ``feast apply`` runs on sources."""
        return {
            "FEED_FEAST_REGISTRY_URL": self.feast_registry_url,
            "FEED_FEAST_REDIS": self.feast_redis_connection,
            "FEED_FEAST_REDIS_TYPE": "redis_cluster" if self.redis.cluster else "redis",
            "FEED_FEAST_OFFLINE_ENGINE": self.feast.offline_engine,
            "AWS_ACCESS_KEY_ID": self.s3.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.s3.secret_access_key,
            "AWS_ENDPOINT_URL_S3": self.s3.endpoint,
            "AWS_DEFAULT_REGION": self.s3.region,
        }


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """As the component ``FEED_COMPONENT`` names (the CLI sets it per command; default owner)."""
    return Settings().as_component(_Process().component)


def reset_settings_cache() -> None:
    """Tests change the environment; this makes the next ``get_settings()`` see it."""
    get_settings.cache_clear()
