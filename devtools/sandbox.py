"""An isolated namespace on a running stack: its own Postgres database (migrated), Kafka
topics and consumer group, S3 bucket and Redis database, announced through the same FEED_*
variables users set, so subprocesses (the CLI, ``feast``, consumers) see it too. Tests and
benchmarks use it to share one stack without seeing each other's data."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import psycopg
import redis
from psycopg import sql

from feedstore.logs import get_logger
from feedstore.settings import RUNTIME_COMPONENTS, Settings, get_settings, reset_settings_cache

REDIS_DB_COUNTER = "feedstore:sandbox:redis-db-counter"
log = get_logger(__name__)


def _environment(base: Settings, tag: str) -> dict[str, str]:
    """Database 0 of Redis stays the default namespace's; sandboxes take 1-15 in turn."""
    redis_db = 1 + int(redis.Redis.from_url(base.redis.url).incr(REDIS_DB_COUNTER)) % 15
    components = {}
    for c in RUNTIME_COMPONENTS:  # each component's own endpoints, on the sandbox's database
        if getattr(base.postgres, f"{c}_dsn"):
            components[f"FEED_POSTGRES_{c.upper()}_DSN"] = urlsplit(base.postgres.dsn_for(c))._replace(
                path=f"/feedstore_{tag}").geturl()
        if getattr(base.redis, f"{c}_url"):
            components[f"FEED_REDIS_{c.upper()}_URL"] = urlsplit(base.redis.url_for(c))._replace(
                path=f"/{redis_db}").geturl()
    return {
        **components,
        "FEED_POSTGRES_DSN": urlsplit(base.postgres.dsn)._replace(path=f"/feedstore_{tag}").geturl(),
        "FEED_REDIS_URL": urlsplit(base.redis.url)._replace(path=f"/{redis_db}").geturl(),
        "FEED_S3_BUCKET": f"feedstore-{tag}",
        "FEED_TOPIC_ACTIVITY": f"user-activity-{tag}",
        "FEED_TOPIC_DLQ": f"user-activity-dlq-{tag}",
        "FEED_TOPIC_ITEMS": f"item-catalog-{tag}",
        "FEED_TOPIC_USERS": f"user-profiles-{tag}",
        "FEED_TOPIC_RETRY": f"user-activity-retry-{tag}",
        "FEED_CONSUMER_GROUP": f"feedstore-ingest-{tag}",
    }


@contextmanager
def sandbox(kind: str = "test") -> Iterator[Settings]:
    """Create the namespace, export it to the environment, and drop it all afterwards."""
    from devtools.stack import services
    from feedstore.migrate import migrate

    base = get_settings()
    env = _environment(base, f"{kind}-{uuid.uuid4().hex[:10]}".replace("_", "-"))
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    reset_settings_cache()
    isolated = get_settings()
    try:
        redis.Redis.from_url(isolated.redis.url).flushdb()
        for service in services(isolated):
            service.provision()
        with psycopg.connect(isolated.postgres.dsn) as conn:
            migrate(conn)
        yield isolated
    finally:
        drop(base, isolated)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        reset_settings_cache()


def drop(base: Settings, isolated: Settings) -> None:
    """Best effort: every part is attempted even when another fails, and failures are logged."""
    from feedstore.kafka import admin_client
    from feedstore.s3 import s3_client

    admin = admin_client(base.kafka.bootstrap)
    for topic, future in admin.delete_topics([isolated.kafka.topic_activity, isolated.kafka.topic_dlq,
                                              isolated.kafka.topic_items, isolated.kafka.topic_users,
                                              isolated.kafka.topic_retry],
                                             operation_timeout=30).items():
        try:
            future.result()
        except Exception as exc:  # noqa: BLE001 - keep cleaning
            log.warning("sandbox_topic_not_deleted", topic=topic, error=str(exc))
    try:
        client = s3_client(isolated)
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=isolated.s3.bucket):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=isolated.s3.bucket, Delete={"Objects": keys})
        client.delete_bucket(Bucket=isolated.s3.bucket)
    except Exception as exc:  # noqa: BLE001
        log.warning("sandbox_bucket_not_deleted", bucket=isolated.s3.bucket, error=str(exc))
    try:
        from devtools.stack.seaweedfs import SeaweedFSService

        SeaweedFSService(base).grant_bucket(isolated.s3.bucket, revoke=True)
    except Exception as exc:  # noqa: BLE001
        log.warning("sandbox_identities_not_revoked", bucket=isolated.s3.bucket, error=str(exc))
    redis.Redis.from_url(isolated.redis.url).flushdb()
    from devtools.stack.postgres import PostgresService

    dbname = urlsplit(isolated.postgres.dsn).path.lstrip("/")
    with psycopg.connect(PostgresService(base).admin_dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
