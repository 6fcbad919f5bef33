"""Hot counters per user in the seed's ``user:{id}`` hash, for accepted events only, each counted
once across crashes, retries and lost replies.

The hash keeps, per source partition, the highest offset already counted into it
(``offset:<topic>:<partition>``). One Lua call per user (and source partition) per batch, all in
one pipeline, gets that batch's events with their offsets and counts only those past the mark,
then moves the mark, in one atomic step: a replay after a crash, or a retry after a reply lost
on the way back, finds its events already counted and adds nothing. Everything stays in the
user's own key, so it works key by key on a Redis Cluster as well.

The script also keeps the latest activity (a maximum, so events already counted change nothing),
renews the 1-hour TTL and returns the running totals, which the realtime Feast view is fed with.
The mark expires with the hash: a replay of events older than the TTL counts them again into a
new window.
"""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import redis
from redis.exceptions import NoScriptError

from feedstore.contract import rules
from feedstore.redis_client import connect
from feedstore.settings import Settings
from ingestion.events import format_timestamp
from ingestion.sinks.base import Accepted, BatchingSink, SinkBatch, StoreUnavailable, UserCounters

# ARGV: ttl, mark field, latest ts_ms, latest as text, latest item, latest type, then
# (offset, event type, dwell) per event.
_SCRIPT = """
local key = KEYS[1]
local mark = tonumber(redis.call('HGET', key, ARGV[2]) or '-1')
local top, n, dwell, counts = mark, 0, 0, {}
for i = 7, #ARGV, 3 do
  local offset = tonumber(ARGV[i])
  if offset > mark then
    n = n + 1
    counts[ARGV[i + 1]] = (counts[ARGV[i + 1]] or 0) + 1
    dwell = dwell + tonumber(ARGV[i + 2])
    if offset > top then top = offset end
  end
end
if n > 0 then
  redis.call('HINCRBY', key, 'total_events', n)
  redis.call('HINCRBY', key, 'total_dwell_ms', dwell)
  for t, c in pairs(counts) do redis.call('HINCRBY', key, 'total_' .. t .. 's', c) end
  redis.call('HSET', key, ARGV[2], top)
end
local last = tonumber(redis.call('HGET', key, 'last_activity_ms') or '-1')
if tonumber(ARGV[3]) >= last then
  redis.call('HSET', key, 'last_activity_ms', ARGV[3], 'last_activity', ARGV[4],
             'last_item_id', ARGV[5], 'last_event_type', ARGV[6])
end
redis.call('EXPIRE', key, ARGV[1])
return redis.call('HMGET', key, 'total_events', 'total_dwell_ms', 'last_item_id', 'last_event_type',
                  'last_activity_ms')
"""


def user_key(user_id: int) -> str:
    return f"user:{user_id}"


def mark_field(topic: str, partition: int) -> str:
    return f"offset:{topic}:{partition}"


def _calls(rows: Accepted) -> list[tuple[int, int, list]]:
    """(user, partition, events) per call, each with its events' (offset, type, dwell) and the latest
    event first: ``[ts_ms, item, type, offset, type, dwell, offset, …]``."""
    table = rows.table
    users = table.column("user_id").to_numpy()
    ts_ms = table.column("timestamp").cast(pa.int64()).to_numpy() // 1000
    order = np.lexsort((ts_ms, rows.partitions, users))
    items = table.column("item_id").to_numpy()[order].tolist()
    types = table.column("event_type").take(pa.array(order)).to_pylist()
    dwell = table.column("dwell_time_ms").fill_null(0).to_numpy()[order].tolist()
    users_s, parts_s, ts_s, offs_s = (users[order].tolist(), rows.partitions[order].tolist(), ts_ms[order].tolist(),
                                      rows.offsets[order].tolist())
    out: list[tuple[int, int, list]] = []
    start = 0
    for i in range(1, len(order) + 1):
        if i == len(order) or users_s[i] != users_s[start] or parts_s[i] != parts_s[start]:
            latest = i - 1  # sorted by time within the group
            events: list = [ts_s[latest], items[latest], types[latest]]
            for j in range(start, i):
                events += [offs_s[j], types[j], dwell[j]]
            out.append((users_s[start], parts_s[start], events))
            start = i
    return out


class RedisSink(BatchingSink):
    name = "redis"

    def __init__(self, settings: Settings, ttl_seconds: int = rules.HOT_COUNTER_TTL_SECONDS) -> None:
        self.settings = settings
        self.ttl_seconds = ttl_seconds
        self._client = connect(settings, socket_timeout=5, socket_connect_timeout=3)
        self._script = self._client.register_script(_SCRIPT)

    def write(self, batch: SinkBatch) -> None:
        batch.counters = self.update(batch.new_events(), batch.topic)

    def update(self, rows: Accepted, topic: str) -> list[UserCounters]:
        """Counts the rows not yet counted into the hashes; returns the running totals of every user
        in ``rows``, which Feast is fed with."""
        if rows.table.num_rows == 0:
            return []
        calls = _calls(rows)
        try:
            try:
                replies = self._counted(calls, topic)
            except NoScriptError:  # first use, a restarted server, a promoted replica
                self._client.script_load(_SCRIPT)
                replies = self._counted(calls, topic)  # the marks make a second pass add nothing twice
        except redis.RedisError as exc:
            raise StoreUnavailable(self.name, exc) from exc
        latest = {user: reply for (user, _, _), reply in zip(calls, replies)}
        return [UserCounters(u, int(r[0] or 0), int(r[1] or 0), int(r[2]), r[3].decode(), int(r[4]))
                for u, r in latest.items()]

    def _counted(self, calls: list[tuple[int, int, list]], topic: str) -> list:
        pipe = self._client.pipeline(transaction=False)
        for user, partition, (ts, item, etype, *events) in calls:
            args = [self.ttl_seconds, mark_field(topic, partition), ts, _iso_ms(ts), item, etype, *events]
            pipe.execute_command("EVALSHA", self._script.sha, 1, user_key(user), *args)
        return pipe.execute()

    def close(self) -> None:
        self._client.close()


def _iso_ms(ts_ms: int) -> str:
    return format_timestamp(datetime.fromtimestamp(ts_ms / 1000, tz=timezone.utc))
