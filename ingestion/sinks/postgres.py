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
import pyarrow.csv as pa_csv

from feedstore.db import connect
from feedstore.logs import get_logger
from feedstore.settings import Settings
from ingestion.sinks.base import BatchingSink, PermanentSinkError, SinkBatch, SinkError, StoreUnavailable

log = get_logger("feedstore.ingest")
_US_PER_DAY = 86_400 * 1_000_000
_EPOCH = date(1970, 1, 1)

# The batch travels as CSV written by Arrow (no Python object per event); timestamps as integer
# microseconds, which become timestamptz in SQL exactly; context is assembled from its columns.
_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS ingest_staging (
    event_id TEXT, user_id BIGINT, item_id BIGINT, event_type TEXT, ts_us BIGINT,
    dwell_time_ms INTEGER, device TEXT, platform TEXT, session_id TEXT,
    kafka_partition INTEGER, kafka_offset BIGINT
) ON COMMIT DELETE ROWS
"""
_STAGED = ("event_id", "user_id", "item_id", "event_type", "ts_us", "dwell_time_ms", "device", "platform",
           "session_id", "kafka_partition", "kafka_offset")
_COPY = f"COPY ingest_staging ({', '.join(_STAGED)}) FROM STDIN (FORMAT csv)"
_INSERT = """
WITH claimed AS (
    INSERT INTO activity_event_ids (event_id, "timestamp", source_topic, source_partition, source_offset)
    SELECT event_id::uuid, 'epoch'::timestamptz + ts_us * interval '1 microsecond', %(topic)s,
           kafka_partition, kafka_offset
    FROM ingest_staging
    ON CONFLICT DO NOTHING
    RETURNING event_id
), stored AS (
    INSERT INTO user_activity (event_id, user_id, item_id, event_type, "timestamp", context, dwell_time_ms)
    SELECT s.event_id::uuid, user_id, item_id, event_type,
           'epoch'::timestamptz + ts_us * interval '1 microsecond',
           NULLIF(jsonb_strip_nulls(jsonb_build_object('device', device, 'platform', platform,
                                                       'session_id', session_id)), '{}'::jsonb),
           dwell_time_ms
    FROM ingest_staging s JOIN claimed c ON c.event_id = s.event_id::uuid
)
SELECT count(*) FROM claimed
"""
# Only when some id was claimed already (a re-send or a replay): which rows are this message's own
# events, claimed now or by an earlier attempt at the same offset. One primary-key probe per row
# (a hash join would read the whole id table).
_OWN = """
SELECT s.kafka_partition, s.kafka_offset
FROM ingest_staging s JOIN activity_event_ids a ON a.event_id = s.event_id::uuid
WHERE a.source_topic = %(topic)s AND a.source_partition = s.kafka_partition AND a.source_offset = s.kafka_offset
"""


def staged_csv(table: pa.Table, ts_us: np.ndarray, partitions: np.ndarray, offsets: np.ndarray) -> bytes:
    """The staging table's rows as CSV, written by Arrow: empty unquoted fields are NULLs."""
    columns = [table.column(n) for n in ("event_id", "user_id", "item_id", "event_type")]
    columns += [pa.array(ts_us, pa.int64())]
    columns += [table.column(n) for n in ("dwell_time_ms", "device", "platform", "session_id")]
    columns += [pa.array(partitions, pa.int32()), pa.array(offsets, pa.int64())]
    sink = pa.BufferOutputStream()
    pa_csv.write_csv(pa.table(columns, names=list(_STAGED)), sink,
                     pa_csv.WriteOptions(include_header=False, quoting_style="needed"))
    return sink.getvalue().to_pybytes()


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
        partitions, offsets, stored = self.insert(batch.valid, batch.topic, batch.partitions, batch.offsets)
        batch.accept(partitions, offsets)
        batch.first_stored = stored

    def insert(self, table: pa.Table, topic: str, partitions: np.ndarray,
               offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """Stores the rows whose id is new; returns the (partition, offset) of every row that is
        this message's event and how many this call stored. All or nothing."""
        if table.num_rows == 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64), 0
        ts_us = table.column("timestamp").cast(pa.int64()).to_numpy()
        rows = staged_csv(table, ts_us, partitions, offsets)
        try:
            try:
                own, stored = self._insert(rows, ts_us, topic)
            except psycopg.errors.CheckViolation as exc:
                if "no partition of relation" not in str(exc):
                    raise
                # A day this process saw was dropped since (retention ran while a replay writes into
                # it): forget what exists and create it again.
                log.warning("activity_partition_missing", error=str(exc).splitlines()[0])
                self._days.clear()
                own, stored = self._insert(rows, ts_us, topic)
        except psycopg.Error as exc:
            self.close()
            raise store_error(self.name, exc) from exc
        if own is None:
            return np.asarray(partitions, dtype=np.int64), np.asarray(offsets, dtype=np.int64), stored
        return (np.array([r[0] for r in own], dtype=np.int64), np.array([r[1] for r in own], dtype=np.int64),
                stored)

    def _insert(self, rows: bytes, ts_us: np.ndarray, topic: str) -> tuple[list | None, int]:
        """(own rows, or None when every row was new; how many were stored now)."""
        conn = self._connection()
        self._ensure_partitions(conn, batch_days(ts_us))
        with conn.transaction(), conn.cursor() as cur:
            with cur.copy(_COPY) as copy:
                copy.write(rows)
            stored = cur.execute(_INSERT, {"topic": topic}).fetchone()[0]
            if stored == len(ts_us):
                return None, stored
            cur.execute("SET LOCAL enable_hashjoin = off")
            cur.execute("SET LOCAL enable_mergejoin = off")
            return cur.execute(_OWN, {"topic": topic}).fetchall(), stored

    def _ensure_partitions(self, conn: psycopg.Connection, days: list[date]) -> None:
        for day in days:
            if day not in self._days:
                conn.execute("SELECT ensure_activity_partitions(%s, %s)", (day, day))
                self._days.add(day)
