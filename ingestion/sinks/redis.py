"""Hot counters per user in the seed's ``user:{id}`` hash, for newly stored events only.

One Lua call per user per batch, all in one pipeline: it adds the batch's counts, keeps the
latest activity even when batches arrive out of order, renews the 1-hour TTL, and returns the
hash's running totals, which are what the realtime Feast view is fed with.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pyarrow as pa
import redis

from feedstore.contract import rules
from feedstore.settings import Settings
from ingestion.events import format_timestamp
from ingestion.sinks.base import BatchingSink, SinkBatch, StoreUnavailable, UserCounters

_SCRIPT = """
local key = KEYS[1]
for i = 6, #ARGV, 2 do redis.call('HINCRBY', key, ARGV[i], ARGV[i + 1]) end
local last = tonumber(redis.call('HGET', key, 'last_activity_ms') or '-1')
if tonumber(ARGV[2]) >= last then
  redis.call('HSET', key, 'last_activity_ms', ARGV[2], 'last_activity', ARGV[3],
             'last_item_id', ARGV[4], 'last_event_type', ARGV[5])
end
redis.call('EXPIRE', key, ARGV[1])
return redis.call('HMGET', key, 'total_events', 'total_dwell_ms', 'last_item_id', 'last_event_type',
                  'last_activity_ms')
"""


def user_key(user_id: int) -> str:
    return f"user:{user_id}"


def _per_user(table: pa.Table) -> dict[int, dict]:
    """Counts by type, dwell and the latest event of each user in the table."""
    out: dict[int, dict] = {}
    ts_ms = (table.column("timestamp").cast(pa.int64()).to_numpy() // 1000).tolist()
    cols = zip(table.column("user_id").to_pylist(), table.column("item_id").to_pylist(),
               table.column("event_type").to_pylist(), table.column("dwell_time_ms").to_pylist(), ts_ms)
    for user, item, etype, dwell, ts in cols:
        agg = out.get(user)
        if agg is None:
            agg = out[user] = {"counts": dict.fromkeys(rules.EVENT_TYPES, 0), "dwell": 0, "last": (ts, item, etype)}
        agg["counts"][etype] += 1
        agg["dwell"] += dwell or 0
        if ts >= agg["last"][0]:
            agg["last"] = (ts, item, etype)
    return out


class RedisSink(BatchingSink):
    name = "redis"

    def __init__(self, settings: Settings, ttl_seconds: int = rules.HOT_COUNTER_TTL_SECONDS) -> None:
        self.settings = settings
        self.ttl_seconds = ttl_seconds
        self._client = redis.Redis.from_url(settings.redis.url, socket_timeout=5, socket_connect_timeout=3)
        self._script = self._client.register_script(_SCRIPT)

    def write(self, batch: SinkBatch) -> None:
        batch.counters = self.update(batch.new_events())

    def update(self, table: pa.Table) -> list[UserCounters]:
        """Counts ``table`` into the hashes; returns the running totals, which Feast is fed with."""
        if table.num_rows == 0:
            return []
        users = _per_user(table)
        try:
            pipe = self._client.pipeline(transaction=False)
            for user, agg in users.items():
                ts, item, etype = agg["last"]
                args: list = [self.ttl_seconds, ts, _iso_ms(ts), item, etype,
                              "total_events", sum(agg["counts"].values()), "total_dwell_ms", agg["dwell"]]
                for t, n in agg["counts"].items():
                    if n:
                        args += [f"total_{t}s", n]
                self._script(keys=[user_key(user)], args=args, client=pipe)
            replies = pipe.execute()
        except redis.RedisError as exc:
            raise StoreUnavailable(self.name, exc) from exc
        return [UserCounters(u, int(r[0]), int(r[1]), int(r[2]), r[3].decode(), int(r[4]))
                for u, r in zip(users, replies)]

    def close(self) -> None:
        self._client.close()


def _iso_ms(ts_ms: int) -> str:
    return format_timestamp(datetime.fromtimestamp(ts_ms / 1000, tz=timezone.utc))
