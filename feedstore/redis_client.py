"""One way to open Redis for every component: a single server or a Redis Cluster
(``FEED_REDIS_CLUSTER``). The code sends only commands on one key, or on keys sharing one
entity's hash tag, so the same calls work on both; a cluster client follows slot moves
(MOVED/ASK) and failovers by itself."""

from __future__ import annotations

import redis
from redis.cluster import RedisCluster

from feedstore.settings import Settings


def connect(settings: Settings, url: str | None = None, **options) -> redis.Redis | RedisCluster:
    """A client for ``url`` (default: the settings' Redis URL), of the kind the settings say."""
    url = url or settings.redis.url
    if settings.redis.cluster:
        return RedisCluster.from_url(url, **options)
    return redis.Redis.from_url(url, **options)
