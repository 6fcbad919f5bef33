"""Before the feed: the stack and schema, an empty namespace, and the Feast registry. The demo
replaces the data of the namespace it runs in, which is why it checks where that namespace is."""

from __future__ import annotations

from urllib.parse import urlsplit

from devtools.demo import audit
from feedstore.contract import lake as layout
from feedstore.settings import Settings
from orchestration import lake

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
# Prefixes the demo's run writes to the bucket; cleared before each run.
DEMO_PREFIXES = tuple(p for p in layout.PREFIXES if p not in (layout.MODELS, layout.EXPERIMENTS))


def database_name(settings: Settings) -> str:
    return urlsplit(settings.postgres.dsn).path.lstrip("/")


def _hosts(settings: Settings) -> list[tuple[str, str | None]]:
    return [
        ("FEED_POSTGRES_DSN", urlsplit(settings.postgres.dsn).hostname),
        ("FEED_REDIS_URL", urlsplit(settings.redis.url).hostname),
        ("FEED_S3_ENDPOINT", urlsplit(settings.s3.endpoint).hostname),
        *[("FEED_KAFKA_BOOTSTRAP", h.strip().rsplit(":", 1)[0].strip("[]"))
          for h in settings.kafka.bootstrap.split(",")],
    ]


def require_local(settings: Settings) -> None:
    remote = {k: v for k, v in _hosts(settings) if v not in LOOPBACK}
    if remote:
        names = ", ".join(f"{k} ({v})" for k, v in remote.items())
        raise RuntimeError(f"the demo replaces the data of the namespace it runs in, and {names} "
                           "is not this machine: pass --allow-remote if that is what you want")


def start_stack(settings: Settings) -> str:
    from devtools.stack import services
    from feedstore.db import connect
    from feedstore.migrate import migrate

    started = [s.name for s in services(settings) if s.up()]
    with connect(settings) as conn:
        applied = migrate(conn)
    return (f"started {', '.join(started)}" if started else "all services already running") + \
        f"; migrations applied: {len(applied)}"


def clear_previous(settings: Settings) -> str:
    """Empties what a previous demo left, so this run's counts are this run's: activity in
    Postgres, the demo's prefixes in the bucket, hot counters and online rows in Redis; and moves
    the consumer group past anything still unread in the topic."""
    from feedstore.db import connect

    with connect(settings) as conn:
        conn.execute("TRUNCATE user_activity, activity_event_ids")
        conn.commit()
    objects = _clear_bucket(settings)
    keys = _clear_redis(settings)
    audit.skip_to_end(settings, settings.kafka.topic_activity, settings.kafka.consumer_group)
    return f"{objects} objects, {keys} Redis keys removed; user_activity emptied"


def _clear_bucket(settings: Settings) -> int:
    deleted = 0
    for prefix in DEMO_PREFIXES:
        keys = lake.list_keys(f"{prefix}/", settings)
        lake.delete_keys(keys, settings)
        deleted += len(keys)
    return deleted


def _clear_redis(settings: Settings) -> int:
    import redis

    r = redis.Redis.from_url(settings.redis.url)
    try:
        keys = audit.redis_keys(r, "user:*") + audit.redis_keys(r, f"{audit.PROJECT}:*")
        for i in range(0, len(keys), 1_000):
            r.unlink(*keys[i:i + 1_000])
    finally:
        r.close()
    return len(keys)


def apply_feast(settings: Settings) -> str:
    from feedstore.feast.store import apply, store

    fs = store(settings)
    apply(fs, settings)
    return f"{len(fs.list_feature_views())} feature views, {len(fs.list_feature_services())} feature services"
