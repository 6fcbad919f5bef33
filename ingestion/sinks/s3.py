"""The cold tier: the accepted events as Parquet, one object per (topic partition, event hour,
block of offsets), as Kafka Connect's S3 sink does it.

An object's key is its block's first offset, ``offset // block * block``, so the boundaries do
not depend on how polls cut the stream: whatever batches a replay makes, an event lands in the
same object. A batch that starts inside a block merges its rows into what the object already
holds (rows keyed by offset, the newer copy of an offset kept), so a crash, a retried write or a
re-cut batch rewrites the same keys and never adds a row; since the rows are only the events
Postgres accepted for this message, a re-send never lands twice either.
"""

from __future__ import annotations

from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from feedstore.contract.lake import LANDED
from feedstore.s3 import arrow_fs, bucket_path
from feedstore.settings import Settings
from ingestion.sinks.base import BatchingSink, SinkBatch, StoreUnavailable

_US_PER_HOUR = 3600 * 1_000_000
_POSITION = ("_kafka_partition", "_kafka_offset")
_CACHED_OBJECTS = 256


def object_key(topic: str, partition: int, block_start: int, hour_us: int) -> str:
    hour = datetime.fromtimestamp(hour_us / 1_000_000, tz=timezone.utc)
    return f"{LANDED}/dt={hour:%Y-%m-%d}/hour={hour:%H}/{topic}-p{partition:03d}-{block_start:020d}.parquet"


class S3Sink(BatchingSink):
    """Keeps the last objects it wrote, so that a block growing batch by batch is not read back
    from S3 each time; the cache is dropped with any failure, since the store may then hold
    something else."""

    name = "s3"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.block = settings.ingest.s3_block_offsets
        self._fs = arrow_fs(settings, connect_timeout=3, request_timeout=settings.ingest.s3_request_timeout_s,
                            attempts=1)
        self._written: OrderedDict[str, pa.Table] = OrderedDict()
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="s3-put")

    def warm_up(self) -> None:
        """Only its own prefix: the ingest identity may not look at the bucket itself."""
        try:
            self._fs.get_file_info(bucket_path(f"{LANDED}/", self.settings))
        except OSError as exc:
            raise StoreUnavailable(self.name, exc) from exc

    def reassigned(self) -> None:
        self._written.clear()

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def write(self, batch: SinkBatch) -> None:
        self.write_objects(batch)

    def write_objects(self, batch: SinkBatch) -> list[str]:
        """Returns the keys written, which a replay of the batch writes again."""
        rows = batch.new_events()
        if rows.table.num_rows == 0:
            return []
        table = rows.table.append_column(_POSITION[0], pa.array(rows.partitions, pa.int32())) \
                          .append_column(_POSITION[1], pa.array(rows.offsets, pa.int64()))
        hours = table.column("timestamp").cast(pa.int64()).to_numpy() // _US_PER_HOUR * _US_PER_HOUR
        blocks = rows.offsets // self.block * self.block
        groups = np.unique(np.stack([rows.partitions, hours, blocks], axis=1), axis=0).tolist()
        jobs = []
        for p, h, b in groups:
            mask = (rows.partitions == p) & (hours == h) & (blocks == b)
            starts_inside = batch.range_of(p).first > b
            jobs.append((object_key(batch.topic, p, b, h), table.filter(pa.array(mask)), starts_inside))
        try:
            written = list(self._pool.map(lambda job: self._put(*job), jobs))
        except OSError as exc:
            self._written.clear()
            raise StoreUnavailable(self.name, exc) from exc
        for key, rows in written:
            self._remember(key, rows)
        return [key for key, _ in written]

    def _put(self, key: str, rows: pa.Table, merge: bool) -> tuple[str, pa.Table]:
        if merge:
            rows = _merged(self._existing(key), rows)
        pq.write_table(rows, bucket_path(key, self.settings), filesystem=self._fs, compression="zstd")
        return key, rows

    def _existing(self, key: str) -> pa.Table | None:
        if key in self._written:
            return self._written[key]
        path = bucket_path(key, self.settings)
        try:
            return pq.read_table(path, filesystem=self._fs)
        except FileNotFoundError:
            return None

    def _remember(self, key: str, rows: pa.Table) -> None:
        self._written[key] = rows
        self._written.move_to_end(key)
        while len(self._written) > _CACHED_OBJECTS:
            self._written.popitem(last=False)


def _merged(old: pa.Table | None, new: pa.Table) -> pa.Table:
    """The object's rows and the batch's, one row per offset (the batch's copy wins), by offset."""
    if old is None or old.num_rows == 0:
        return new
    kept = old.filter(pc.invert(pc.is_in(old.column(_POSITION[1]), value_set=new.column(_POSITION[1]))))
    both = pa.concat_tables([kept, new.cast(kept.schema) if new.schema != kept.schema else new])
    return both.take(pc.sort_indices(both, sort_keys=[(_POSITION[1], "ascending")]))
