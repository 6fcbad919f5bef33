"""An isolated namespace on a running stack: its own Postgres database (migrated), Kafka
topics and consumer group, S3 bucket and Redis database, announced through the same FEED_*
variables users set, so subprocesses (the CLI, ``feast``, consumers) see it too. Tests and
benchmarks use it to share one stack without seeing each other's data."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import psycopg
import redis
from psycopg import sql

from feedstore.logs import get_logger
from feedstore.settings import RUNTIME_COMPONENTS, Settings, get_settings, reset_settings_cache

log = get_logger(__name__)

_CLAIM = """
local held = redis.call('GET', KEYS[1])
if held == false or held == ARGV[2] then redis.call('SET', KEYS[1], ARGV[1]) return 1 end
return 0
"""
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


@dataclass(frozen=True)
class RedisDatabases:
    """Databases 1-15 of the stack's Redis, leased to sandboxes one holder at a time. A lease is
    a key in database 0 naming its holder (host, pid, sandbox); a holder whose process is gone
    (killed mid-session) loses it to the next claim. Handing them out in turn instead gave the
    sixteenth sandbox of the stack, and every sandbox opened inside another (always database 2,
    the count restarting in the outer one's database), a database still in use, which it flushed
    and wrote into: a long session such as the 30-day backfill could lose its online rows to another."""

    client: redis.Redis
    """Where the leases are kept: database 0 of the stack's Redis, whichever namespace asks."""
    prefix: str = "feedstore:sandbox:redis-db:"
    numbers: range = range(1, 16)

    @classmethod
    def of(cls, base: Settings) -> RedisDatabases:
        return cls(redis.Redis.from_url(urlsplit(base.redis.url)._replace(path="/0").geturl()))

    def claim(self, tag: str, wait_seconds: float = 600.0) -> int:
        """A database no live sandbox holds, waiting up to ``wait_seconds`` for one to be freed."""
        holder = f"{socket.gethostname()}:{os.getpid()}:{tag}"
        deadline = time.monotonic() + wait_seconds
        while True:
            for n in self.numbers:
                key = self.prefix + str(n)
                if self.client.set(key, holder, nx=True):
                    return n
                held = self.client.get(key)
                if held is not None and _gone(held.decode()) and self.client.eval(_CLAIM, 1, key, holder, held):
                    log.warning("sandbox_redis_db_reclaimed", db=n, holder=held.decode())
                    return n
            if time.monotonic() >= deadline:
                holders = {n: (h or b"").decode() for n in self.numbers if (h := self.client.get(self.prefix + str(n)))}
                raise RuntimeError(f"no free Redis database for sandbox {tag}: "
                                   + ", ".join(f"{n} held by {h}" for n, h in holders.items()))
            time.sleep(1.0)

    def release(self, number: int, tag: str) -> None:
        """Gives the database back, if this process (as ``tag``) still holds it."""
        self.client.eval(_RELEASE, 1, self.prefix + str(number), f"{socket.gethostname()}:{os.getpid()}:{tag}")

    def holder(self, number: int) -> str | None:
        held = self.client.get(self.prefix + str(number))
        return held.decode() if held is not None else None


def _gone(holder: str) -> bool:
    """The holder is a process of this machine that no longer runs (a lease of another host is kept)."""
    host, _, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        pass
    return False


def _environment(base: Settings, tag: str, redis_db: int) -> dict[str, str]:
    """Database 0 of Redis stays the default namespace's; each sandbox holds one of 1-15."""
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
    tag = f"{kind}-{uuid.uuid4().hex[:10]}".replace("_", "-")
    databases = RedisDatabases.of(base)
    redis_db = databases.claim(tag)
    env = _environment(base, tag, redis_db)
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
        try:
            drop(base, isolated)
        finally:
            databases.release(redis_db, tag)
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
