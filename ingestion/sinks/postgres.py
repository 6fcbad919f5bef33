"""The warm tier and the dedup authority: COPY into a staging table, then one statement that
claims each event id in ``activity_event_ids`` (``ON CONFLICT DO NOTHING RETURNING``), stores the
rows whose id was new, and answers which rows are this message's events: claimed now, or claimed
earlier by the same (topic, partition, offset), i.e. by a previous attempt at this very batch that
crashed or lost its reply after the commit. The tiers after Postgres land exactly those rows."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import psycopg
import psycopg.errors
import pyarrow as pa

from feedstore.db import connect
from feedstore.logs import get_logger
from feedstore.settings import Settings
from ingestion.sinks.base import BatchingSink, PermanentSinkError, SinkBatch, SinkError, StoreUnavailable

log = get_logger("feedstore.ingest")
_US_PER_DAY = 86_400 * 1_000_000
_EPOCH = date(1970, 1, 1)

# Timestamps travel as integer microseconds and become timestamptz in SQL, which is exact
# and spares a datetime object per row; context is assembled from its columns in SQL too.
_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS ingest_staging (
    event_id TEXT, user_id BIGINT, item_id BIGINT, event_type TEXT, ts_us BIGINT,
    dwell_time_ms INTEGER, device TEXT, platform TEXT, session_id TEXT,
    kafka_partition INTEGER, kafka_offset BIGINT
) ON COMMIT DELETE ROWS
"""
_COPY = ("COPY ingest_staging (event_id, user_id, item_id, event_type, ts_us, dwell_time_ms, "
         "device, platform, session_id, kafka_partition, kafka_offset) FROM STDIN (FORMAT BINARY)")
_TYPES = ["text", "int8", "int8", "text", "int8", "int4", "text", "text", "text", "int4", "int8"]
# The last SELECT reads the snapshot from before the statement: it sees the ids an earlier
# attempt claimed, never the ones claimed here, so no row is both new and replayed.
_INSERT = """
WITH claimed AS (
    INSERT INTO activity_event_ids (event_id, "timestamp", source_topic, source_partition, source_offset)
    SELECT event_id::uuid, 'epoch'::timestamptz + ts_us * interval '1 microsecond', %(topic)s,
           kafka_partition, kafka_offset
    FROM ingest_staging
    ON CONFLICT DO NOTHING
    RETURNING event_id, source_partition, source_offset
), stored AS (
    INSERT INTO user_activity (event_id, user_id, item_id, event_type, "timestamp", context, dwell_time_ms)
    SELECT s.event_id::uuid, user_id, item_id, event_type,
           'epoch'::timestamptz + ts_us * interval '1 microsecond',
           NULLIF(jsonb_strip_nulls(jsonb_build_object('device', device, 'platform', platform,
                                                       'session_id', session_id)), '{}'::jsonb),
           dwell_time_ms
    FROM ingest_staging s JOIN claimed c ON c.event_id = s.event_id::uuid
)
SELECT source_partition, source_offset, true FROM claimed
UNION ALL
SELECT s.kafka_partition, s.kafka_offset, false
FROM ingest_staging s JOIN activity_event_ids a ON a.event_id = s.event_id::uuid
WHERE a.source_topic = %(topic)s AND a.source_partition = s.kafka_partition AND a.source_offset = s.kafka_offset
"""


# Deterministic refusals: the same batch (or catalog query) fails the same way until a person
# fixes the data, the schema or the role's rights. Everything else (connections, shutdowns,
# timeouts, locks) may pass.
_PERMANENT = (psycopg.DataError, psycopg.IntegrityError, psycopg.ProgrammingError)


def store_error(store: str, exc: psycopg.Error) -> SinkError:
    """The sink error a psycopg failure stands for; the catalog lookups share it."""
    kind = PermanentSinkError if isinstance(exc, _PERMANENT) else StoreUnavailable
    return kind(store, exc)


def batch_days(timestamps_us: np.ndarray) -> list[date]:
    return [_EPOCH + timedelta(days=int(d)) for d in np.unique(timestamps_us // _US_PER_DAY)]


class PostgresSink(BatchingSink):
    """One connection, reopened after any failure; partitions known to exist are cached."""

    name = "postgres"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._conn: psycopg.Connection | None = None
        self._days: set[date] = set()

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = connect(self.settings, statement_timeout_ms=self.settings.ingest.statement_timeout_ms,
                                 autocommit=True)
            self._conn.execute(_STAGING)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def warm_up(self) -> None:
        try:
            self._connection()
        except psycopg.Error as exc:
            raise store_error(self.name, exc) from exc

    def write(self, batch: SinkBatch) -> None:
        partitions, offsets, fresh = self.insert(batch.valid, batch.topic, batch.partitions, batch.offsets)
        batch.accept(partitions, offsets)
        batch.first_stored = int(fresh.sum())

    def insert(self, table: pa.Table, topic: str, partitions: np.ndarray,
               offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stores the rows whose id is new; returns the (partition, offset) of every row that is
        this message's event, and whether this call stored it. All or nothing."""
        if table.num_rows == 0:
            empty = np.empty(0, dtype=np.int64)
            return empty, empty, np.empty(0, dtype=bool)
        ts_us = table.column("timestamp").cast(pa.int64()).to_numpy()
        try:
            try:
                rows = self._insert(table, ts_us, topic, partitions, offsets)
            except psycopg.errors.CheckViolation as exc:
                if "no partition of relation" not in str(exc):
                    raise
                # A day this process saw was dropped since (retention ran while a replay writes into
                # it): forget what exists and create it again.
                log.warning("activity_partition_missing", error=str(exc).splitlines()[0])
                self._days.clear()
                rows = self._insert(table, ts_us, topic, partitions, offsets)
        except psycopg.Error as exc:
            self.close()
            raise store_error(self.name, exc) from exc
        if not rows:
            empty = np.empty(0, dtype=np.int64)
            return empty, empty, np.empty(0, dtype=bool)
        p, o, fresh = zip(*rows)
        return np.array(p, dtype=np.int64), np.array(o, dtype=np.int64), np.array(fresh, dtype=bool)

    def _insert(self, table: pa.Table, ts_us: np.ndarray, topic: str, partitions: np.ndarray,
                offsets: np.ndarray) -> list[tuple[int, int, bool]]:
        conn = self._connection()
        self._ensure_partitions(conn, batch_days(ts_us))
        cols = [table.column(n).to_pylist() for n in ("event_id", "user_id", "item_id", "event_type")]
        rest = [table.column(n).to_pylist() for n in ("dwell_time_ms", "device", "platform", "session_id")]
        with conn.transaction(), conn.cursor() as cur:
            with cur.copy(_COPY) as copy:
                copy.set_types(_TYPES)
                for row in zip(*cols, ts_us.tolist(), *rest, partitions.tolist(), offsets.tolist()):
                    copy.write_row(row)
            return cur.execute(_INSERT, {"topic": topic}).fetchall()

    def _ensure_partitions(self, conn: psycopg.Connection, days: list[date]) -> None:
        for day in days:
            if day not in self._days:
                conn.execute("SELECT ensure_activity_partitions(%s, %s)", (day, day))
                self._days.add(day)
