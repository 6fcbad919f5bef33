"""Session fixtures: the real local stack, and an isolated namespace in it per test session.

Every pytest session gets its own Postgres database, Kafka topics, S3 bucket and Redis
database, announced through the same FEED_* variables users set, so subprocesses (the CLI,
`feast`, consumers) see them too and several sessions can share one stack.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import psycopg
import pytest
import redis
from psycopg import sql

from feedstore.settings import Settings, get_settings, reset_settings_cache

REDIS_DB_COUNTER = "feedstore:test:redis-db-counter"


@pytest.fixture(scope="session")
def stack() -> Settings:
    """Starts the stack if it is not running; a service that cannot start fails the session."""
    from feedstore.stack import services

    base = get_settings()
    for service in services(base):
        service.up()
    return base


def _isolated_env(base: Settings, suffix: str) -> dict[str, str]:
    dsn = urlsplit(base.postgres_dsn)
    r = redis.Redis.from_url(base.redis_url)
    redis_db = 1 + int(r.incr(REDIS_DB_COUNTER)) % 15
    redis_url = urlsplit(base.redis_url)._replace(path=f"/{redis_db}").geturl()
    return {
        "FEED_POSTGRES_DSN": dsn._replace(path=f"/feedstore_test_{suffix}").geturl(),
        "FEED_REDIS_URL": redis_url,
        "FEED_S3_BUCKET": f"feedstore-test-{suffix}",
        "FEED_TOPIC_ACTIVITY": f"user-activity-{suffix}",
        "FEED_TOPIC_DLQ": f"user-activity-dlq-{suffix}",
        "FEED_CONSUMER_GROUP": f"feedstore-ingest-{suffix}",
    }


@pytest.fixture(scope="session")
def settings(stack: Settings) -> Iterator[Settings]:
    """An isolated, migrated namespace on the running stack, exported to the environment."""
    with isolated_namespace(stack) as isolated:
        yield isolated


@contextmanager
def isolated_namespace(stack: Settings) -> Iterator[Settings]:
    """A fresh namespace (database, topics, bucket, Redis db), exported while in use; the
    previous environment comes back after. For tests whose subject clears its namespace."""
    from feedstore.migrate import migrate
    from feedstore.stack import services

    suffix = uuid.uuid4().hex[:10]
    env = _isolated_env(stack, suffix)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    reset_settings_cache()
    isolated = get_settings()
    redis.Redis.from_url(isolated.redis_url).flushdb()
    for service in services(isolated):
        service.provision()
    with psycopg.connect(isolated.postgres_dsn) as conn:
        migrate(conn)
    try:
        yield isolated
    finally:
        _teardown(stack, isolated)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        reset_settings_cache()


def _teardown(base: Settings, isolated: Settings) -> None:
    from feedstore.s3 import s3_client
    from feedstore.stack.kafka import admin_client

    admin = admin_client(base.kafka_bootstrap)
    for future in admin.delete_topics([isolated.topic_activity, isolated.topic_dlq]).values():
        try:
            future.result()
        except Exception:  # noqa: BLE001 - best effort cleanup
            pass
    client = s3_client(isolated)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=isolated.s3_bucket):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=isolated.s3_bucket, Delete={"Objects": keys})
    client.delete_bucket(Bucket=isolated.s3_bucket)
    redis.Redis.from_url(isolated.redis_url).flushdb()
    dbname = urlsplit(isolated.postgres_dsn).path.lstrip("/")
    admin_dsn = urlsplit(base.postgres_dsn)._replace(path="/postgres").geturl()
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))


@pytest.fixture()
def pg(settings: Settings) -> Iterator[psycopg.Connection]:
    with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture()
def redis_client(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.redis_url)
