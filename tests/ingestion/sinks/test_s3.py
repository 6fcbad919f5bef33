from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa

from feedstore.ids import IdIndex
from feedstore.s3 import s3_client
from ingestion.sinks.base import OffsetRange, SinkBatch
from ingestion.sinks.s3 import S3Sink, object_key
from ingestion.validation import Limits, Validator
from tests.ingestion.conftest import ITEM_IDS, USER_IDS, clear_landing, landed_event_ids, valid_lines


def test_object_key_names_day_hour_topic_partition_and_block():
    hour = int(datetime(2026, 3, 1, 7, tzinfo=timezone.utc).timestamp() * 1_000_000)
    assert object_key("user-activity", 2, 10_000, hour) == \
        "events/dt=2026-03-01/hour=07/user-activity-p002-00000000000000010000.parquet"


def _events(n: int, now: datetime) -> pa.Table:
    table = Validator(IdIndex(USER_IDS).contains, IdIndex(ITEM_IDS).contains, Limits(replay=True)).validate(
        valid_lines(n, now=now, spread_seconds=3 * 3600), now=now + timedelta(seconds=1)).valid
    assert table.num_rows == n
    return table


def _batch(table: pa.Table, partitions: np.ndarray, offsets: np.ndarray, rows: slice | None = None) -> SinkBatch:
    """The rows ``rows`` of the stream as one poll, every row accepted."""
    rows = rows or slice(0, table.num_rows)
    t, p, o = table.slice(rows.start, rows.stop - rows.start), partitions[rows], offsets[rows]
    ranges = [OffsetRange("t", int(q), int(o[p == q].min()), int(o[p == q].max())) for q in np.unique(p)]
    batch = SinkBatch(t, p, o, [], ranges)
    batch.accept(p, o)
    return batch


def _listed(settings) -> list[str]:
    client = s3_client(settings)
    return [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=settings.s3.bucket, Prefix="events/") for o in page.get("Contents", [])]


def test_replaying_a_range_rewrites_the_same_objects(settings):
    clear_landing(settings)
    table = _events(300, datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc))
    partitions, offsets = np.arange(300) % 2, np.arange(300) // 2
    sink = S3Sink(settings)
    batch = _batch(table, partitions, offsets)
    keys = sink.write_objects(batch)
    assert sink.write_objects(batch) == keys
    assert sorted(_listed(settings)) == sorted(keys) and len(keys) >= 6  # 2 partitions x 3-4 hours
    assert sorted(landed_event_ids(settings)) == sorted(table.column("event_id").to_pylist())
    clear_landing(settings)


def test_batches_cut_differently_land_each_event_once(settings):
    """A crash after S3 and before the commit: the replay cuts the stream elsewhere, with other
    processes (empty caches), and blocks span several batches; every event is still in one object."""
    clear_landing(settings)
    table = _events(600, datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc))
    partitions, offsets = np.arange(600) % 2, 40 + np.arange(600) // 2
    s = settings.replace(ingest={"s3_block_offsets": 64})
    first = S3Sink(s)
    for cut in (slice(0, 250), slice(250, 420)):  # the crashed run got this far
        first.write_objects(_batch(table, partitions, offsets, cut))
    replay = S3Sink(s)
    for cut in (slice(0, 100), slice(100, 101), slice(101, 500), slice(500, 600)):
        replay.write_objects(_batch(table, partitions, offsets, cut))
    landed = landed_event_ids(settings)
    assert len(landed) == 600 and sorted(landed) == sorted(table.column("event_id").to_pylist())
    assert all(int(k.rsplit("-", 1)[1].split(".")[0]) % 64 == 0 for k in _listed(settings))
    clear_landing(settings)


def test_only_accepted_events_land(settings):
    clear_landing(settings)
    table = _events(50, datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc))
    partitions, offsets = np.zeros(50, dtype=np.int64), np.arange(50)
    batch = SinkBatch(table, partitions, offsets, [], [OffsetRange("t", 0, 0, 49)])
    batch.accept(partitions[::2], offsets[::2])
    S3Sink(settings).write_objects(batch)
    assert sorted(landed_event_ids(settings)) == sorted(table.column("event_id").to_pylist()[::2])
    clear_landing(settings)
