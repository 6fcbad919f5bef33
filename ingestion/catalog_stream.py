"""The ``item-catalog`` and ``user-profiles`` topics: the activity consumer's loop and guarantees
(validate, dead-letter with a reason, land in every store, then commit) with record stages.

Stages, in order: the DLQ; Postgres (the upsert, the version authority: it leaves the rows that
are current in ``batch.accepted``); for items, the embedding versions in the lake and the online
store (``item_catalog_features`` and ``item_embedding`` through Feast's online store, so an item
is servable seconds after it is sent, before the next daily run). Every stage is idempotent for
a batch: the lake key derives from the batch's offsets, the upsert and the online write are
"newest version wins", so a replay after a crash lands the same rows once.
"""

from __future__ import annotations

import time
from datetime import date, datetime, timedelta, timezone

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from feedstore.contract import features as contract
from feedstore.contract import lake
from feedstore.db import connect
from feedstore.logs import get_logger
from feedstore.s3 import arrow_fs, bucket_path
from feedstore.settings import Settings
from ingestion.consumer import IngestConsumer, Options
from ingestion.metrics import IngestMetrics
from ingestion.processing import Processed, Stage
from ingestion.records import ITEMS, KINDS, USERS, Kind, RecordValidator
from ingestion.sinks.base import BatchingSink, PermanentSinkError, SinkBatch, StoreUnavailable
from ingestion.sinks.dlq import DlqSink
from ingestion.sinks.postgres import store_error
from ingestion.upserts import prepare, upsert

log = get_logger("feedstore.ingest")
EMBEDDING_SCHEMA = pa.schema([pa.field("item_id", pa.int64()), pa.field("content_embedding", pa.list_(pa.float32())),
                              pa.field("valid_from", pa.timestamp("us", tz="UTC"))])
_EPOCH = date(1970, 1, 1)
_US_PER_DAY = 86_400_000_000


def current_rows(batch: SinkBatch) -> pa.Table:
    """The valid rows the upsert found current (new, changed or an exact repeat): ``batch.accepted``
    marks them; of several versions of one id in a batch only the newest is current, so the lake
    and the online store never take a stale one."""
    if batch.accepted is None or not batch.accepted.any():
        return batch.valid.slice(0, 0)
    return batch.valid.filter(pa.array(batch.accepted))


def latest_per_key(table: pa.Table, key: str) -> pa.Table:
    """One row per id: the newest version, the last one on a tie (as the upsert keeps)."""
    if table.num_rows == 0:
        return table
    order = pa.table({"k": table.column(key), "v": pc.cast(table.column("version"), pa.int64()),
                      "i": pa.array(np.arange(table.num_rows))})
    ordered = order.sort_by([("k", "ascending"), ("v", "descending"), ("i", "descending")])
    keys = ordered.column("k").to_numpy()
    first = np.ones(len(keys), dtype=bool)
    first[1:] = keys[1:] != keys[:-1]
    return table.take(pa.array(ordered.column("i").to_numpy()[first]))


class RecordPostgresSink(BatchingSink):
    """The upsert; marks in ``batch.accepted`` the rows that are the stored version."""

    name = "postgres"

    def __init__(self, settings: Settings, kind: Kind) -> None:
        self.settings, self.kind = settings, kind
        self._conn: psycopg.Connection | None = None
        self.last = None

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = connect(self.settings, statement_timeout_ms=self.settings.ingest.statement_timeout_ms,
                                 autocommit=True)
            prepare(self._conn, self.kind)
        return self._conn

    def warm_up(self) -> None:
        try:
            self._connection()
        except psycopg.Error as exc:
            raise store_error(self.name, exc) from exc

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def write(self, batch: SinkBatch) -> None:
        try:
            done = upsert(self._connection(), self.kind, batch.valid)
        except psycopg.Error as exc:
            self.close()
            raise store_error(self.name, exc) from exc
        self.last = done
        accepted = np.zeros(batch.valid.num_rows, dtype=bool)
        accepted[np.asarray(done.current, dtype=np.int64)] = True
        batch.accepted = accepted


def embedding_versions(items: pa.Table) -> pa.Table:
    """Items with an embedding as lake rows: the version becomes valid at the record's version time."""
    with_embedding = items.filter(pc.is_valid(items.column("content_embedding")))
    return pa.table([with_embedding.column("item_id"), with_embedding.column("content_embedding"),
                     with_embedding.column("version")], schema=EMBEDDING_SCHEMA)


def write_versions(versions: pa.Table, name: str, settings: Settings) -> list[str]:
    """One object per day of ``valid_from``, named ``name``: rewriting the same name is a no-op."""
    if versions.num_rows == 0:
        return []
    days = pc.cast(versions.column("valid_from"), pa.int64()).to_numpy() // _US_PER_DAY
    fs, keys = arrow_fs(settings), []
    for d in np.unique(days):
        day = _EPOCH + timedelta(days=int(d))
        key = f"{lake.day_prefix(lake.EMBEDDINGS, day)}{name}.parquet"
        pq.write_table(versions.filter(pa.array(days == d)).sort_by("item_id"), bucket_path(key, settings),
                       filesystem=fs, compression="zstd")
        keys.append(key)
    return keys


def batch_name(batch: SinkBatch) -> str:
    return "-".join([batch.ranges[0].topic] + [f"p{r.partition:03d}-{r.first:020d}-{r.last:020d}"
                                               for r in sorted(batch.ranges, key=lambda r: r.partition)])


class EmbeddingLakeSink(BatchingSink):
    """Every current embedding version into ``embeddings/items/``, keyed by the batch's offsets."""

    name = "s3"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def write(self, batch: SinkBatch) -> None:
        versions = embedding_versions(current_rows(batch))
        try:
            write_versions(versions, batch_name(batch), self.settings)
        except OSError as exc:
            raise StoreUnavailable(self.name, exc) from exc


def online_tables(items: pa.Table, now: datetime) -> tuple[pa.Table, pa.Table]:
    """The rows of ``item_catalog_features`` and ``item_embedding`` for items just written, stamped
    ``now`` (what the online store's TTL counts from; the daily run writes day-end rows later)."""
    items = latest_per_key(items, "item_id")
    ts = pa.array([now] * items.num_rows, type=contract.TIMESTAMP)
    created_us = pc.cast(items.column("created_at"), pa.int64()).to_numpy()
    age = np.maximum((int(now.timestamp() * 1_000_000) - created_us) / 86_400e6, 0.0)
    catalog = pa.table({"item_id": items.column("item_id"), "event_timestamp": ts,
                        "category": items.column("category"), "media_type": items.column("media_type"),
                        "creator_id": items.column("creator_id"), "tags": items.column("tags"),
                        "item_age_days": pa.array(age, pa.float64())})
    embedded = items.filter(pc.is_valid(items.column("content_embedding")))
    if embedded.num_rows:
        matrix = np.asarray(embedded.column("content_embedding").combine_chunks().flatten().to_numpy(),
                            dtype=np.float32).reshape(-1, contract.ITEM_EMBEDDING.features[0].dim)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        matrix = np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)
        vectors = pa.FixedSizeListArray.from_arrays(pa.array(matrix.ravel(), pa.float32()), matrix.shape[1]) \
            .cast(pa.list_(pa.float32()))
    else:
        vectors = pa.array([], pa.list_(pa.float32()))
    embedding = pa.table({"item_id": embedded.column("item_id"),
                          "event_timestamp": ts.slice(0, embedded.num_rows), "item_embedding": vectors})
    return catalog, embedding


class CatalogOnlineSink(BatchingSink):
    """Current items into Redis through our Feast online store's columnar write."""

    name = "online"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._store = None

    def _feature_store(self):
        if self._store is None:
            from feedstore.feast.store import store

            self._store = store(self.settings)
        return self._store

    def write(self, batch: SinkBatch) -> None:
        items = current_rows(batch)
        if items.num_rows == 0:
            return
        write_online(self._feature_store(), items)


def write_online(fs, items: pa.Table, now: datetime | None = None) -> int:
    """Writes ``items`` (records rows) to the online store; returns rows written."""
    from feast.errors import FeatureViewNotFoundException

    catalog, embedding = online_tables(items, now or datetime.now(timezone.utc))
    online = fs._get_provider().online_store
    written = 0
    try:
        for view, table in ((contract.ITEM_CATALOG.name, catalog), (contract.ITEM_EMBEDDING.name, embedding)):
            if table.num_rows:
                written += online.write_arrow(fs.config, fs.get_feature_view(view), table)
    except FeatureViewNotFoundException as exc:
        raise PermanentSinkError("online", f"{exc}: run `feedstore feast apply` first "
                                           "(or FEED_INGEST_CATALOG_ONLINE=false)") from exc
    except Exception as exc:  # noqa: BLE001 - Redis and Feast raise under many types
        raise StoreUnavailable("online", exc) from exc
    return written


def record_stages(settings: Settings, kind: Kind) -> list[Stage]:
    stages = [Stage(DlqSink(settings)), Stage(RecordPostgresSink(settings, kind))]
    if kind is ITEMS:
        stages.append(Stage(EmbeddingLakeSink(settings), after=("postgres",), new_only=True))
        if settings.ingest.catalog_online:
            stages.append(Stage(CatalogOnlineSink(settings), after=("postgres",), new_only=True))
    return stages


def topic_of(settings: Settings, kind: Kind) -> str:
    return settings.kafka.topic_items if kind is ITEMS else settings.kafka.topic_users


class RecordConsumer(IngestConsumer):
    """The activity consumer's loop on a record topic, in its own consumer group
    (``<FEED_CONSUMER_GROUP>-<items|users>``)."""

    def __init__(self, settings: Settings, kind: Kind | str, options: Options | None = None,
                 metrics: IngestMetrics | None = None) -> None:
        self.kind = KINDS[kind] if isinstance(kind, str) else kind
        settings = settings.as_component("ingest")  # its sinks too, built before the consumer's own switch
        super().__init__(settings, options, metrics, stages=record_stages(settings, self.kind))
        self.topic = topic_of(settings, self.kind)
        self.records = RecordValidator(self.kind)
        self.processor.validate = self._validate_records
        self.processor.catalog_store = "records"

    def _kafka_config(self) -> dict:
        return {**super()._kafka_config(), "group.id": f"{self.settings.kafka.consumer_group}-{self.kind.name}"}

    def _validate_records(self, payloads: list[bytes | None], arrived_us: np.ndarray):
        return self.records.validate(payloads, arrived_us=arrived_us)

    def _account(self, done: Processed, started: float) -> None:
        postgres = next(s.sink for s in self.processor.stages if s.name == "postgres")
        upserted = postgres.last
        s = self.stats
        s.batches += 1
        s.messages += done.messages
        s.stored += (upserted.inserted + upserted.updated) if upserted else 0
        s.duplicates += (upserted.unchanged + upserted.stale) if upserted else 0
        s.rejected += len(done.result.rejected)
        for _, reason in done.result.rejected:
            self.metrics.validation_failures.labels(str(reason)).inc()
        self.metrics.batch_seconds.observe(time.monotonic() - started)
        log.info("records_committed", kind=self.kind.name, messages=done.messages,
                 inserted=upserted.inserted if upserted else 0, updated=upserted.updated if upserted else 0,
                 unchanged=upserted.unchanged if upserted else 0, stale=upserted.stale if upserted else 0,
                 rejected=len(done.result.rejected), seconds=round(time.monotonic() - started, 3))


__all__ = ["RecordConsumer", "USERS", "ITEMS", "write_online", "write_versions", "embedding_versions"]


def run_together(settings: Settings, sources: list[str], options: Options,
                 metrics: IngestMetrics | None = None) -> bool:
    """One consumer per source ("activity", "items", "users"), each in its own thread; a stop
    signal or one consumer's permanent failure stops them all. True when none failed. Activity
    with a grace window (``FEED_INGEST_UNKNOWN_GRACE_SECONDS`` > 0) runs with its retry consumer."""
    import signal
    import threading

    from ingestion.deferral import DeferringConsumer
    from ingestion.sinks.base import PermanentSinkError

    consumers: list[IngestConsumer] = []
    for name in sources:
        if name != "activity":
            consumers.append(RecordConsumer(settings, name, options, metrics))
        elif settings.ingest.unknown_grace_seconds > 0:
            consumers += [DeferringConsumer(settings, options, metrics),
                          DeferringConsumer(settings, options, metrics, retry=True)]
        else:
            consumers.append(IngestConsumer(settings, options, metrics))
    failed: list[str] = []

    def run(consumer: IngestConsumer) -> None:
        try:
            consumer.run()
        except PermanentSinkError:
            failed.append(consumer.topic)
        except Exception as exc:  # noqa: BLE001 - one consumer's crash stops the others, then is reported
            log.error("consumer_crashed", topic=consumer.topic, error=repr(exc)[:300])
            failed.append(consumer.topic)
        finally:
            if failed:
                for other in consumers:
                    other.stop()

    def stop_all(signum, _frame) -> None:
        log.info("ingest_stop_requested", signal=signal.Signals(signum).name)
        for consumer in consumers:
            consumer.stop()

    previous = {s: signal.signal(s, stop_all) for s in (signal.SIGTERM, signal.SIGINT)} \
        if threading.current_thread() is threading.main_thread() else {}
    threads = [threading.Thread(target=run, args=(c,), name=f"ingest-{c.topic}") for c in consumers]
    try:
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.5)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    return not failed
