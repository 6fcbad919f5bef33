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


def test_object_key_names_day_hour_topic_partition_and_offsets():
    hour = int(datetime(2026, 3, 1, 7, tzinfo=timezone.utc).timestamp() * 1_000_000)
    assert object_key("user-activity", 2, 10, 99, hour) == \
        "events/dt=2026-03-01/hour=07/user-activity-p002-00000000000000000010-00000000000000000099.parquet"


def test_replaying_a_range_rewrites_the_same_objects(settings):
    clear_landing(settings)
    now = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
    table = Validator(IdIndex(USER_IDS).contains, IdIndex(ITEM_IDS).contains, Limits(replay=True)).validate(
        valid_lines(300, now=now, spread_seconds=3 * 3600), now=now + timedelta(seconds=1)).valid
    assert table.num_rows == 300
    partitions = np.arange(300) % 2
    batch = SinkBatch(table, partitions, np.arange(300) // 2, [], [OffsetRange("t", 0, 0, 149),
                                                                    OffsetRange("t", 1, 0, 149)])
    sink = S3Sink(settings)
    keys = sink.write_objects(batch)
    assert sink.write_objects(batch) == keys
    listed = [o["Key"] for o in s3_client(settings).list_objects_v2(Bucket=settings.s3.bucket,
                                                                      Prefix="events/")["Contents"]]
    assert sorted(listed) == sorted(keys) and len(keys) >= 6  # 2 partitions x 3-4 hours
    landed = landed_event_ids(settings)
    assert sorted(landed) == sorted(table.column("event_id").to_pylist())
    assert pa.types.is_timestamp(table.schema.field("timestamp").type)
    clear_landing(settings)
