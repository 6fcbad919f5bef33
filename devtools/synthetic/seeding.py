"""Writes a generated world into the stack: Postgres (COPY), Parquet snapshots on S3, events.

Re-running is truncate-and-load: ``users``, ``user_follows`` and ``items`` are emptied and
reloaded in ONE transaction, so readers see either the old catalog or the new one, never a
mix, and the same spec always leaves the same rows. The day's snapshot prefixes on S3 are
replaced the same way (old parts deleted first). Events are appended: Kafka is a log, and
the consumer dedups re-sent events by their deterministic ``event_id``.

Everything streams in chunks (``ITEM_CHUNK`` items, one day of events) so the ``seed``
scale's 10M items never sit in memory as Python objects. Rows reach Postgres as CSV that
pyarrow writes in C++; no Python call per row.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Literal

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from botocore.exceptions import BotoCoreError, ClientError
from prometheus_client import Counter as PromCounter
from psycopg import sql

from devtools.synthetic import generator as gen
from feedstore.contract import lake
from feedstore.db import connect
from feedstore.logs import get_logger
from feedstore.s3 import arrow_fs, bucket_path, s3_client
from feedstore.settings import Settings, get_settings
from ingestion.producer import DeliveryReport, check_topic, make_producer, send

log = get_logger(__name__)

ROWS = PromCounter("feedstore_generated_rows_total", "Synthetic rows written, by table and sink", ["table", "sink"])

EventsTo = Literal["kafka", "file", "none"]
TABLES = ("users", "user_follows", "items")
PARQUET_COMPRESSION = "zstd"


class SeedingError(RuntimeError):
    """A sink is not ready (no schema, no bucket, no topic); nothing was written."""


@dataclass
class SeedReport:
    rows: dict[str, int] = field(default_factory=dict)
    postgres_bytes: int = 0
    s3_bytes: int = 0
    event_bytes: int = 0
    s3_keys: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    delivery: DeliveryReport | None = None


class Progress:
    """What the loader tells its caller; the CLI draws it with rich, tests ignore it."""

    def start(self, name: str, total: int) -> None: ...

    def advance(self, name: str, rows: int) -> None: ...

    def finish(self, name: str) -> None:
        """The total given to ``start`` was an estimate; what was done is the total."""


class RichProgress(Progress):
    """The progress protocol drawn as rich bars on a ``rich.progress.Progress``."""

    def __init__(self, progress) -> None:
        self.progress, self.tasks = progress, {}

    def start(self, name: str, total: int) -> None:
        self.tasks[name] = self.progress.add_task(name, total=total)

    def advance(self, name: str, rows: int) -> None:
        self.progress.advance(self.tasks[name], rows)

    def finish(self, name: str) -> None:
        task = self.tasks[name]
        self.progress.update(task, total=self.progress.tasks[task].completed)


def snapshot_date(spec: gen.GenerationSpec) -> str:
    """The UTC day the snapshot closes: ``end`` is exclusive, so midnight belongs to the day before."""
    return (spec.end - timedelta(microseconds=1)).date().isoformat()


def snapshot_prefix(table: str, spec: gen.GenerationSpec) -> str:
    return f"{lake.SNAPSHOTS}/{table}/dt={snapshot_date(spec)}/"


# ---- Postgres ----------------------------------------------------------------------------

def _pg_array(values: pa.Array) -> pa.Array:
    """A list<string> column as Postgres array literals; our vocabularies need no quoting."""
    return pc.binary_join_element_wise("{", pc.binary_join(values, ","), "}", "")


def _json_strings(values: pa.Array) -> pa.Array:
    """A list<string> column as JSON arrays of strings (vocabulary values, nothing to escape)."""
    inner = pc.binary_join(values, '", "')
    return pc.if_else(pc.equal(pc.list_value_length(values), 0), "[]",
                      pc.binary_join_element_wise('["', inner, '"]', ""))


def users_rows(users: pa.Table) -> pa.Table:
    demographics = pc.binary_join_element_wise(
        '{"age_range": "', users["age_range"], '", "country": "', users["country"],
        '", "language": "', users["language"], '"}', "")
    preferences = pc.binary_join_element_wise('{"categories": ', _json_strings(users["preferred_categories"]), "}", "")
    return pa.table({
        "user_id": users["user_id"], "created_at": users["created_at"], "age_range": users["age_range"],
        "country": users["country"], "language": users["language"], "demographics": demographics,
        "preferred_categories": _pg_array(users["preferred_categories"]), "preferences": preferences,
    })


def items_rows(items: pa.Table) -> pa.Table:
    return pa.table({
        "item_id": items["item_id"], "creator_id": items["creator_id"], "category": items["category"],
        "tags": _pg_array(items["tags"]), "media_type": items["media_type"], "created_at": items["created_at"],
    })


def activity_rows(events: pa.Table) -> pa.Table:
    """Generated events as ``user_activity`` rows (context as JSON), for history loaded
    straight into Postgres rather than through Kafka."""
    context = pc.binary_join_element_wise('{"device": "', events["device"], '", "platform": "', events["platform"],
                                          '", "session_id": "', events["session_id"], '"}', "")
    return pa.table({"event_id": events["event_id"], "user_id": events["user_id"], "item_id": events["item_id"],
                     "event_type": events["event_type"], "timestamp": events["timestamp"], "context": context,
                     "dwell_time_ms": events["dwell_time_ms"]})


def copy_rows(cur: psycopg.Cursor, table: str, rows: pa.Table) -> int:
    """COPY a whole Arrow table in as CSV; returns the bytes sent."""
    buf = io.BytesIO()
    pacsv.write_csv(rows, buf, pacsv.WriteOptions(include_header=False, batch_size=65_536))
    data = buf.getbuffer()
    stmt = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, rows.column_names)))
    with cur.copy(stmt) as copy:
        step = 8 * 1024 * 1024
        for start in range(0, len(data), step):
            copy.write(data[start:start + step])
    return len(data)


def check_schema(conn: psycopg.Connection) -> None:
    missing = [t for t in TABLES if conn.execute("SELECT to_regclass(%s)", (t,)).fetchone()[0] is None]
    if missing:
        raise SeedingError(f"tables {', '.join(missing)} missing: run `feedstore migrate` first")


# ---- S3 ----------------------------------------------------------------------------------

def check_bucket(settings: Settings) -> None:
    try:
        s3_client(settings).head_bucket(Bucket=settings.s3.bucket)
    except (ClientError, BotoCoreError) as exc:
        raise SeedingError(f"S3 bucket {settings.s3.bucket!r} at {settings.s3.endpoint} is not usable: {exc}") from exc


def clear_prefix(prefix: str, settings: Settings) -> None:
    client = s3_client(settings)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=settings.s3.bucket, Prefix=prefix):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=settings.s3.bucket, Delete={"Objects": keys})


def put_parquet(table: pa.Table, key: str, settings: Settings) -> int:
    """One PUT per file (built in memory: a chunk is tens of MB); returns its size."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression=PARQUET_COMPRESSION)
    data = sink.getvalue()
    with arrow_fs(settings).open_output_stream(bucket_path(key, settings)) as out:
        out.write(data)
    return data.size


# ---- orchestration of one run ------------------------------------------------------------

_timing_lock = threading.Lock()


@contextmanager
def _timed(report: SeedReport, phase: str) -> Iterator[None]:
    """Busy time per phase; phases overlap across threads, so they can add up to more than the wall time."""
    started = time.perf_counter()
    try:
        yield
    finally:
        with _timing_lock:
            report.seconds[phase] = report.seconds.get(phase, 0.0) + time.perf_counter() - started


def _load_users(cur: psycopg.Cursor, spec: gen.GenerationSpec, settings: Settings, report: SeedReport,
                progress: Progress) -> None:
    with _timed(report, "generate"):
        users = gen.users_table(spec)
        follows = gen.follows_table(spec)
    progress.start("users", users.num_rows)
    with _timed(report, "postgres"):
        report.postgres_bytes += copy_rows(cur, "users", users_rows(users))
        report.postgres_bytes += copy_rows(cur, "user_follows", follows)
    with _timed(report, "s3"):
        key = snapshot_prefix("users", spec) + "users.parquet"
        report.s3_bytes += put_parquet(users, key, settings)
        report.s3_keys.append(key)
    report.rows["users"], report.rows["user_follows"] = users.num_rows, follows.num_rows
    ROWS.labels("users", "postgres").inc(users.num_rows)
    progress.advance("users", users.num_rows)


def _load_items(cur: psycopg.Cursor, spec: gen.GenerationSpec, settings: Settings, report: SeedReport,
                progress: Progress) -> None:
    """COPY chunk i while a worker uploads chunk i and draws chunk i+1: Postgres sets the pace."""
    progress.start("items", spec.scale.items)
    prefix = snapshot_prefix("items", spec)

    def draw(part: int) -> pa.Table:
        with _timed(report, "generate"):
            return gen.item_chunk(spec, part)

    def upload(items: pa.Table, key: str) -> int:
        with _timed(report, "s3"):
            return put_parquet(items, key, settings)

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="seed-items") as pool:
        next_chunk, uploading = pool.submit(draw, 0), None
        for part in range(spec.item_chunks):
            items = next_chunk.result()
            if part + 1 < spec.item_chunks:
                next_chunk = pool.submit(draw, part + 1)
            if uploading is not None:
                report.s3_bytes += uploading.result()
            key = f"{prefix}part-{part:05d}.parquet"
            uploading = pool.submit(upload, items, key)
            report.s3_keys.append(key)
            with _timed(report, "postgres"):
                report.postgres_bytes += copy_rows(cur, "items", items_rows(items))
            report.rows["items"] = report.rows.get("items", 0) + items.num_rows
            ROWS.labels("items", "postgres").inc(items.num_rows)
            progress.advance("items", items.num_rows)
        if uploading is not None:
            report.s3_bytes += uploading.result()


def _write_events(spec: gen.GenerationSpec, settings: Settings, events_to: EventsTo, path: Path | None,
                  report: SeedReport, progress: Progress) -> None:
    progress.start("events", spec.expected_events)
    producer = make_producer(settings) if events_to == "kafka" else None
    total = DeliveryReport()
    out = open(path, "wb") if events_to == "file" else None  # noqa: SIM115 - closed below
    try:
        chunks = gen.iter_event_chunks(spec)
        for _ in range(spec.window_days):
            with _timed(report, "generate"):
                events = next(chunks)
                values = pc.cast(gen.event_json(events), pa.binary())
            with _timed(report, events_to):
                if producer is not None:
                    keys = gen.event_keys(events).to_pylist()
                    done = send(producer, settings.kafka.topic_activity, zip(keys, values.to_pylist(), strict=True))
                    for name in ("sent", "delivered", "failed", "keyed", "bytes"):
                        setattr(total, name, getattr(total, name) + getattr(done, name))
                    total.errors.update(done.errors)
                else:
                    out.write(b"\n".join(values.to_pylist()) + b"\n" if len(values) else b"")
            report.event_bytes += pc.sum(pc.binary_length(values)).as_py() or 0
            report.rows["events"] = report.rows.get("events", 0) + events.num_rows
            ROWS.labels("events", events_to).inc(events.num_rows)
            progress.advance("events", events.num_rows)
        progress.finish("events")
    finally:
        if out is not None:
            out.close()
    if producer is not None:
        report.delivery = total
        if not total.ok:
            raise SeedingError(f"{total.failed} of {total.sent} events were not delivered: {dict(total.errors)}")


def generate(spec: gen.GenerationSpec, settings: Settings | None = None, events_to: EventsTo = "kafka",
             path: Path | None = None, progress: Progress | None = None) -> SeedReport:
    """Load users, follows and items into Postgres and S3, then send or write the events."""
    s = settings or get_settings()
    progress = progress or Progress()
    if events_to == "file" and path is None:
        raise SeedingError("events to a file need a path")
    report = SeedReport()
    with connect(s) as conn:
        check_schema(conn)
        check_bucket(s)
        if events_to == "kafka":
            check_topic(s.kafka.topic_activity, s)
        if events_to == "file":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        for table in ("users", "items"):
            clear_prefix(snapshot_prefix(table, spec), s)
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(map(sql.Identifier, TABLES))))
            _load_users(cur, spec, s, report, progress)
            _load_items(cur, spec, s, report, progress)
    log.info("catalog loaded", rows=report.rows, postgres_bytes=report.postgres_bytes, s3_bytes=report.s3_bytes)
    if events_to != "none":
        _write_events(spec, s, events_to, path, report, progress)
    log.info("generated", rows=report.rows, seconds={k: round(v, 2) for k, v in report.seconds.items()})
    return report
