"""An event id is one event: a re-send in a later batch with another timestamp is a duplicate in
Postgres and in the hot counters. (The landed Parquet still takes every valid message; the daily
archive deduplicates it.)"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import redis

from ingestion.consumer import IngestConsumer, Options
from ingestion.events import format_timestamp
from ingestion.sinks.redis import user_key
from tests.ingestion.conftest import produce, stored_event_ids, valid_lines


def _counted(s, user_id: int) -> int:
    return int(redis.Redis.from_url(s.redis.url).hget(user_key(user_id), "total_events") or 0)


def test_a_resend_with_another_timestamp_is_one_event_in_postgres_and_redis(ingest_settings):
    s = ingest_settings
    event = json.loads(valid_lines(1, seed=43, with_event_id_every=1)[0])
    earlier = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")) - timedelta(minutes=7)
    resent = {**event, "timestamp": format_timestamp(earlier)}
    user = int(event["user_id"])
    before = _counted(s, user)

    produce(s, [json.dumps(event).encode()])
    IngestConsumer(s, Options(until_idle=2)).run()
    produce(s, [json.dumps(resent).encode()])
    stats = IngestConsumer(s, Options(until_idle=2)).run()

    assert stats.stored == 0 and stats.duplicates == 1
    assert stored_event_ids(s) == [event["event_id"]]
    assert _counted(s, user) - before == 1
