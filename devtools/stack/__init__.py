"""The local stack: PostgreSQL, Redis, Kafka and SeaweedFS S3 as native processes on loopback."""

from __future__ import annotations

from devtools.stack.base import Service, StackError
from devtools.stack.kafka import KafkaService
from devtools.stack.postgres import PostgresService
from devtools.stack.prometheus import PrometheusService
from devtools.stack.redis import RedisService
from devtools.stack.seaweedfs import SeaweedFSService
from feedstore.settings import Settings

__all__ = ["Service", "StackError", "services", "env_lines"]


def services(settings: Settings, monitoring: bool = False, redis_cluster: bool = False) -> list[Service]:
    """In start order; ``down`` stops them in reverse. ``monitoring`` adds Prometheus,
    ``redis_cluster`` a Redis Cluster beside the single server."""
    from devtools.stack.redis_cluster import RedisClusterService

    return [
        PostgresService(settings),
        RedisService(settings),
        *([RedisClusterService(settings)] if redis_cluster else []),
        SeaweedFSService(settings),
        KafkaService(settings),
        *([PrometheusService(settings)] if monitoring else []),
    ]


def monitoring_running(settings: Settings) -> bool:
    """Whether ``stack up --monitoring`` left this stack's Prometheus running (its pid file in this
    stack's directory, not merely something on the port); ``status`` then includes it."""
    from devtools.stack.base import read_pid

    return read_pid(PrometheusService(settings).pid_file) is not None


def redis_cluster_running(settings: Settings) -> bool:
    """Whether ``stack up --redis-cluster`` left this stack's cluster nodes running."""
    from devtools.stack.redis_cluster import RedisClusterService

    return RedisClusterService(settings).running()


def write_kcat_config(settings: Settings):
    """kcat has no environment variable for brokers, but reads the file named by KCAT_CONFIG."""
    path = settings.stack.dir / "kcat.conf"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"bootstrap.servers={settings.kafka.bootstrap}\n")
    return path


def env_lines(settings: Settings) -> list[str]:
    """``export`` lines that let psql, redis-cli, kcat and boto3 reach the stack: the owner's and
    administrator's credentials under the plain names, each component's under its own."""
    from shlex import quote
    from urllib.parse import urlsplit

    from feedstore.settings import RUNTIME_COMPONENTS

    pg = urlsplit(settings.postgres.dsn)
    components: dict[str, str] = {}
    for c in RUNTIME_COMPONENTS:  # each component's own credentials, for its processes
        key, secret = settings.s3.credentials_for(c)
        components.update({f"FEED_POSTGRES_{c.upper()}_DSN": settings.postgres.dsn_for(c),
                           f"FEED_REDIS_{c.upper()}_URL": settings.redis.url_for(c),
                           f"FEED_S3_{c.upper()}_ACCESS_KEY_ID": key, f"FEED_S3_{c.upper()}_SECRET_ACCESS_KEY": secret})
    values = {
        "FEED_POSTGRES_DSN": settings.postgres.dsn,
        **components,
        "FEED_REDIS_URL": settings.redis.url,
        "FEED_KAFKA_BOOTSTRAP": settings.kafka.bootstrap,
        "FEED_TOPIC_ACTIVITY": settings.kafka.topic_activity,
        "FEED_TOPIC_DLQ": settings.kafka.topic_dlq,
        "FEED_TOPIC_PARTITIONS": str(settings.kafka.topic_partitions),
        "FEED_CONSUMER_GROUP": settings.kafka.consumer_group,
        "FEED_S3_ENDPOINT": settings.s3.endpoint,
        "FEED_S3_BUCKET": settings.s3.bucket,
        "AWS_ACCESS_KEY_ID": settings.s3.access_key_id,
        "AWS_SECRET_ACCESS_KEY": settings.s3.secret_access_key,
        "AWS_DEFAULT_REGION": settings.s3.region,
        "AWS_ENDPOINT_URL": settings.s3.endpoint,
        "AWS_ENDPOINT_URL_S3": settings.s3.endpoint,
        "PGHOST": pg.hostname or "127.0.0.1",
        "PGPORT": str(pg.port or 5432),
        "PGUSER": pg.username or "",
        "PGPASSWORD": pg.password or "",
        "PGDATABASE": pg.path.lstrip("/"),
        "PGAPPNAME": "feedstore-owner",
        "KCAT_CONFIG": str(write_kcat_config(settings)),
        **settings.feast_env(),
    }
    return [f"export {name}={quote(value)}" for name, value in values.items()]
