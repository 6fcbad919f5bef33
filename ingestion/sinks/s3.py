"""The cold tier: the batch's valid events as Parquet, one object per (partition, hour).

The key holds the topic, partition and the batch's offset range for that partition, so a
replay of the same range overwrites the same objects; ranges cut differently after a crash
can overlap, and the daily archive deduplicates those by event id.
"""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from feedstore.contract.lake import LANDED
from feedstore.s3 import arrow_fs, bucket_path
from feedstore.settings import Settings
from ingestion.sinks.base import BatchingSink, SinkBatch, StoreUnavailable

_US_PER_HOUR = 3600 * 1_000_000


def object_key(topic: str, partition: int, first_offset: int, last_offset: int, hour_us: int) -> str:
    hour = datetime.fromtimestamp(hour_us / 1_000_000, tz=timezone.utc)
    return (f"{LANDED}/dt={hour:%Y-%m-%d}/hour={hour:%H}/"
            f"{topic}-p{partition:03d}-{first_offset:020d}-{last_offset:020d}.parquet")


class S3Sink(BatchingSink):
    name = "s3"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._fs = arrow_fs(settings)

    def warm_up(self) -> None:
        try:
            self._fs.get_file_info(self.settings.s3.bucket)
        except OSError as exc:
            raise StoreUnavailable(self.name, exc) from exc

    def write(self, batch: SinkBatch) -> None:
        self.write_objects(batch)

    def write_objects(self, batch: SinkBatch) -> list[str]:
        """Returns the keys written, which a replay of the batch writes again."""
        table, partitions = batch.valid, batch.partitions
        if table.num_rows == 0:
            return []
        hours = table.column("timestamp").cast(pa.int64()).to_numpy() // _US_PER_HOUR * _US_PER_HOUR
        keys = []
        try:
            for p, h in np.unique(np.stack([partitions, hours], axis=1), axis=0).tolist():
                mask = (partitions == p) & (hours == h)
                r = batch.range_of(p)
                key = object_key(r.topic, p, r.first, r.last, h)
                pq.write_table(table.filter(pa.array(mask)), bucket_path(key, self.settings),
                               filesystem=self._fs, compression="zstd")
                keys.append(key)
        except OSError as exc:
            raise StoreUnavailable(self.name, exc) from exc
        return keys
