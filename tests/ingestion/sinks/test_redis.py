"""The hot counters against the real Redis: each accepted event counted once whatever the retries
and replays, and however a replay cuts the stream."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import redis

from feedstore.ids import IdIndex
from ingestion.sinks.base import OffsetRange, SinkBatch
from ingestion.sinks.redis import RedisSink, user_key
from ingestion.validation import Limits, Validator
from tests.ingestion.conftest import ITEM_IDS, USER_IDS, valid_lines


def _batch(table: pa.Table, partitions: np.ndarray, offsets: np.ndarray, rows: slice) -> SinkBatch:
    t, p, o = table.slice(rows.start, rows.stop - rows.start), partitions[rows], offsets[rows]
    ranges = [OffsetRange("t", int(q), int(o[p == q].min()), int(o[p == q].max())) for q in np.unique(p)]
    batch = SinkBatch(t, p, o, [], ranges)
    batch.accept(p, o)
    return batch


def _clear(client: redis.Redis, users) -> None:
    client.delete(*[user_key(u) for u in users])


def test_retries_and_recut_replays_count_each_event_once(settings):
    now = datetime.now(timezone.utc)
    table = Validator(IdIndex(USER_IDS).contains, IdIndex(ITEM_IDS).contains, Limits(replay=True)).validate(
        valid_lines(400, now=now, spread_seconds=600), now=now + timedelta(seconds=1)).valid
    assert table.num_rows == 400
    partitions, offsets = np.arange(400) % 3, 1_000 + np.arange(400) // 3
    client = redis.Redis.from_url(settings.redis.url)
    users = set(table.column("user_id").to_pylist())
    _clear(client, users)
    sink = RedisSink(settings)
    try:
        sink.write(_batch(table, partitions, offsets, slice(0, 150)))
        sink.write(_batch(table, partitions, offsets, slice(0, 150)))     # a reply lost, the batch retried
        sink.write(_batch(table, partitions, offsets, slice(100, 300)))   # a replay cut elsewhere
        last = _batch(table, partitions, offsets, slice(0, 400))
        sink.write(last)                                                  # and again from the start
    finally:
        sink.close()
    expected = Counter(table.column("user_id").to_pylist())
    likes = Counter(u for u, t in zip(table.column("user_id").to_pylist(), table.column("event_type").to_pylist())
                    if t == "like")
    for user, n in expected.items():
        h = client.hgetall(user_key(user))
        assert int(h[b"total_events"]) == n, user
        assert int(h.get(b"total_likes", 0)) == likes[user]
    assert {c.user_id: c.total_events for c in last.counters} == dict(expected)
    _clear(client, users)


def test_on_a_redis_cluster_each_event_is_counted_once_across_slots(settings, redis_cluster):
    """The same counting on the stack's cluster: users spread over every master, a batch retried
    and replayed; the script is loaded on the masters by the sink itself (a cluster pipeline does
    not), and again after a node restarts without it."""
    s = redis_cluster.settings_for(settings)
    base = int(np.random.default_rng().integers(10**9, 2 * 10**9))
    now = datetime.now(timezone.utc)
    table = Validator(IdIndex(USER_IDS).contains, IdIndex(ITEM_IDS).contains, Limits(replay=True)).validate(
        valid_lines(300, now=now, spread_seconds=600), now=now + timedelta(seconds=1)).valid
    table = table.set_column(table.schema.get_field_index("user_id"), "user_id",
                             pa.compute.add(table.column("user_id"), base - 1_000))  # ids of this test alone
    partitions, offsets = np.arange(300) % 2, 10 + np.arange(300) // 2
    client = redis_cluster.client()
    client.script_flush()
    sink = RedisSink(s)
    try:
        sink.write(_batch(table, partitions, offsets, slice(0, 200)))
        client.script_flush()  # a failover to a replica that never loaded it
        sink.write(_batch(table, partitions, offsets, slice(0, 300)))
    finally:
        sink.close()
    expected = Counter(table.column("user_id").to_pylist())
    slots = {client.keyslot(user_key(u)) for u in expected}
    owners = {(n["primary"][0], n["primary"][1]) for (a, b), n in client.cluster_slots().items()
              if any(a <= slot <= b for slot in slots)}
    assert len(owners) == 3
    assert {u: int(client.hget(user_key(u), "total_events")) for u in expected} == dict(expected)
    client.delete(*[user_key(u) for u in expected])
