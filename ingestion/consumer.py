"""The ingestion loop: poll a batch, validate, land it in every store, then commit its offsets.

Effectively once: every sink is idempotent for a batch (S3 keys derive from offsets, Postgres
dedups on the event id, the DLQ producer is idempotent), and offsets are committed
synchronously only after the DLQ, S3 and Postgres (then Redis and Feast) have taken the batch.
A crash anywhere before the commit replays the batch; nothing is lost and Postgres holds
each event once. When a store is down the batch is kept, the partitions are paused (the
consumer keeps polling so it stays in the group) and the failing stage is retried with
backoff; stages that already succeeded are not redone.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from feedstore.db import connect
from feedstore.logs import get_logger
from feedstore.settings import Settings
from feedstore.contract import rules
from ingestion import validation
from ingestion.catalog import ITEMS, USERS, CatalogIndex
from ingestion.metrics import IngestMetrics
from ingestion.sinks import StoreUnavailable
from ingestion.sinks.dlq import DeadLetter, DlqSink
from ingestion.sinks.postgres import PostgresSink
from ingestion.sinks.redis import RedisSink, UserCounters
from ingestion.sinks.s3 import S3Sink
from ingestion.validation import Limits, Result, Validator

log = get_logger("feedstore.ingest")

# Commit failures that mean "the group moved on": the batch is dropped and redelivered.
_LOST_GENERATION = {KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID,
                    KafkaError.REBALANCE_IN_PROGRESS, KafkaError._ASSIGNMENT_LOST}


@dataclass(frozen=True)
class Options:
    until_idle: float | None = None
    replay: bool = False
    instance_id: str | None = None
    max_backoff_seconds: float = 15.0


@dataclass
class RunStats:
    batches: int = 0
    messages: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    abandoned: int = 0
    busy_seconds: float = 0.0  # from the first batch polled to the last commit


class BatchAbandoned(Exception):
    """Stop requested or partitions revoked while the batch was unfinished: it is not committed."""


@dataclass
class Batch:
    messages: list[Message]
    result: Result
    letters: list[DeadLetter]
    partitions: np.ndarray
    ranges: dict[int, tuple[int, int]]
    new_ids: set[str] | None = None
    s3_done: bool = False
    counters: list[UserCounters] | None = None
    feast_done: bool = False
    stages_failed: set[str] = field(default_factory=set)


def limits_from(settings: Settings, replay: bool) -> Limits:
    return Limits(
        max_age_seconds=settings.ingest_max_event_age_seconds or rules.MAX_EVENT_AGE_SECONDS,
        max_future_seconds=(rules.MAX_FUTURE_SKEW_SECONDS if settings.ingest_max_future_skew_seconds is None
                            else settings.ingest_max_future_skew_seconds),
        replay=replay,
    )


class IngestConsumer:
    def __init__(self, settings: Settings, options: Options | None = None,
                 metrics: IngestMetrics | None = None) -> None:
        self.settings = settings
        self.options = options or Options()
        self.metrics = metrics or IngestMetrics()
        self._stop = threading.Event()
        self._revoked = False
        self._assigned_once = False
        self._assignment: list[TopicPartition] = []
        self._last_activity = time.monotonic()
        self.users = CatalogIndex(lambda: connect(settings), USERS)
        self.items = CatalogIndex(lambda: connect(settings), ITEMS)
        self.validator = Validator(self.users.contains, self.items.contains, limits_from(settings, self.options.replay))
        self.dlq = DlqSink(settings)
        self.s3 = S3Sink(settings)
        self.postgres = PostgresSink(settings)
        self.redis = RedisSink(settings)
        self.feast = None
        if settings.ingest_feast_push:
            from ingestion.sinks.feast_push import FeastPushSink

            self.feast = FeastPushSink(settings)
        self.stats = RunStats()
        self._first_batch_at: float | None = None
        self._consumer: Consumer | None = None

    def stop(self) -> None:
        self._stop.set()

    # -- Kafka -------------------------------------------------------------------------------

    def _kafka_config(self) -> dict:
        conf = {
            "bootstrap.servers": self.settings.kafka_bootstrap,
            "group.id": self.settings.consumer_group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": self.settings.kafka_session_timeout_ms,
            "partition.assignment.strategy": "roundrobin",
            "log_level": 3,
        }
        if self.options.instance_id:
            conf["group.instance.id"] = self.options.instance_id
        return conf

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assignment = list(partitions)
        self._assigned_once = True
        self._last_activity = time.monotonic()
        log.info("partitions_assigned", partitions=[p.partition for p in partitions])

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._revoked = True
        self._assignment = []
        log.info("partitions_revoked", partitions=[p.partition for p in partitions])

    # -- the loop ----------------------------------------------------------------------------

    def warm_up(self) -> None:
        """Load the catalog and open store connections before joining the group, so the first
        batch after an assignment (or a restart) is not the slow one. Failures are left to the
        batch stages, which retry."""
        validation.warm_up()
        try:
            self.users.refresh()
            self.items.refresh()
            self.postgres.warm_up()
            self.s3.warm_up()
        except (psycopg.Error, StoreUnavailable, OSError) as exc:
            log.warning("warm_up_failed", error=str(exc).splitlines()[0][:300])

    def run(self) -> RunStats:
        restore = self._install_signal_handlers()
        self.warm_up()
        consumer = self._consumer = Consumer(self._kafka_config())
        consumer.subscribe([self.settings.topic_activity], on_assign=self._on_assign, on_revoke=self._on_revoke)
        log.info("ingest_started", topic=self.settings.topic_activity, group=self.settings.consumer_group,
                 replay=self.options.replay, feast=self.feast is not None)
        timeout = self.settings.ingest_batch_timeout_ms / 1000
        try:
            while not self._stop.is_set():
                messages = consumer.consume(self.settings.ingest_batch_size, timeout)
                messages = [m for m in messages if not self._is_error(m)]
                if not messages:
                    if self._idle_long_enough():
                        log.info("ingest_idle_exit", idle_seconds=self.options.until_idle)
                        break
                    continue
                self._last_activity = time.monotonic()
                self._revoked = False
                try:
                    self._process(messages)
                except BatchAbandoned as exc:
                    self.stats.abandoned += 1
                    log.warning("batch_abandoned", reason=str(exc), messages=len(messages))
                finally:
                    self._resume()
                self._last_activity = time.monotonic()
        finally:
            consumer.close()
            for closeable in (self.postgres, self.users, self.items, self.redis):
                closeable.close()
            self.dlq.close()
            restore()
            log.info("ingest_stopped", **self.stats.__dict__)
        return self.stats

    def _idle_long_enough(self) -> bool:
        until = self.options.until_idle
        return until is not None and self._assigned_once and time.monotonic() - self._last_activity >= until

    def _is_error(self, msg: Message) -> bool:
        err = msg.error()
        if err is None:
            return False
        if err.code() != KafkaError._PARTITION_EOF:
            log.warning("kafka_error", error=str(err))
        return True

    def _install_signal_handlers(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def handler(signum, _frame) -> None:
            log.info("ingest_stop_requested", signal=signal.Signals(signum).name)
            self._stop.set()

        previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
        return lambda: [signal.signal(s, h) for s, h in previous.items()]

    # -- one batch ---------------------------------------------------------------------------

    def _process(self, messages: list[Message]) -> None:
        started = time.monotonic()
        self._stage_seconds: dict[str, float] = {}
        self.metrics.batch_size.observe(len(messages))
        batch = self._stage("postgres", lambda: self._validate(messages))
        pending = batch.letters
        while pending:
            pending = self._stage("dlq", lambda p=pending: self._send_letters(p))
        if not batch.s3_done:
            self._stage("s3", lambda: self.s3.write(batch.result.valid, batch.partitions, batch.ranges,
                                                    self.settings.topic_activity))
            batch.s3_done = True
        batch.new_ids = self._stage("postgres", lambda: self.postgres.write(batch.result.valid))
        new_rows = self._new_rows(batch)
        batch.counters = self._stage("redis", lambda: self.redis.write(new_rows))
        if self.feast is not None:
            self._stage("feast", lambda: self.feast.push(batch.counters))
        self._commit(batch)
        self._account(batch, started)

    def _validate(self, messages: list[Message]) -> Batch:
        try:
            result = self.validator.validate([m.value() for m in messages])
        except psycopg.Error as exc:
            for index in (self.users, self.items):
                index.close()
            raise StoreUnavailable("postgres", exc) from exc
        letters = [DeadLetter(messages[i].value(), messages[i].key(), str(reason), messages[i].topic(),
                              messages[i].partition(), messages[i].offset()) for i, reason in result.rejected]
        partitions = np.fromiter((messages[i].partition() for i in result.valid_index.tolist()),
                                 dtype=np.int64, count=len(result.valid_index))
        ranges: dict[int, tuple[int, int]] = {}
        for m in messages:
            p, o = m.partition(), m.offset()
            first, last = ranges.get(p, (o, o))
            ranges[p] = (min(first, o), max(last, o))
        return Batch(messages, result, letters, partitions, ranges)

    def _send_letters(self, letters: list[DeadLetter]) -> list[DeadLetter]:
        left = self.dlq.send(letters)
        if left:
            raise StoreUnavailable("dlq", self.dlq.last_error or f"{len(left)} dead letters unacknowledged")
        return left

    @staticmethod
    def _new_rows(batch: Batch) -> pa.Table:
        valid = batch.result.valid
        if not batch.new_ids:
            return valid.slice(0, 0)
        new = pa.array(list(batch.new_ids), type=valid.schema.field("event_id").type)
        return valid.filter(pc.is_in(valid.column("event_id"), value_set=new))

    def _stage(self, store: str, fn: Callable):
        """Run one stage until it succeeds; between attempts the partitions are paused."""
        attempt = 0
        while True:
            if attempt and (self._stop.is_set() or self._revoked):
                raise BatchAbandoned("stop requested" if self._stop.is_set() else "partitions revoked")
            started = time.monotonic()
            try:
                value = fn()
            except StoreUnavailable as exc:
                attempt += 1
                self.metrics.store_errors.labels(exc.store).inc()
                self.metrics.store_up.labels(exc.store).set(0)
                self.metrics.retrying.set(1)
                delay = min(self.options.max_backoff_seconds, 0.25 * 2 ** min(attempt, 10)) * random.uniform(0.7, 1.0)
                log.warning("store_unavailable", store=exc.store, attempt=attempt, retry_in=round(delay, 2),
                            error=str(exc).splitlines()[0][:300])
                self._wait_paused(delay)
                continue
            self.metrics.store_up.labels(store).set(1)
            self._stage_seconds[store] = self._stage_seconds.get(store, 0.0) + time.monotonic() - started
            if attempt:
                self.metrics.retrying.set(0)
                log.info("store_recovered", store=store, attempts=attempt)
            return value

    def _wait_paused(self, seconds: float) -> None:
        """Sleep while staying in the group: paused partitions deliver nothing, poll serves callbacks."""
        consumer = self._consumer
        if self._assignment:
            consumer.pause(self._assignment)
        deadline = time.monotonic() + seconds
        while not self._stop.is_set() and not self._revoked and time.monotonic() < deadline:
            msg = consumer.poll(min(0.5, max(0.0, deadline - time.monotonic())))
            if msg is not None and msg.error() is None:
                # Should not happen while paused; rewind so the message is not skipped.
                consumer.seek(TopicPartition(msg.topic(), msg.partition(), msg.offset()))

    def _resume(self) -> None:
        if self._assignment:
            try:
                self._consumer.resume(self._assignment)
            except KafkaException:
                pass

    def _commit(self, batch: Batch) -> None:
        offsets = [TopicPartition(self.settings.topic_activity, p, last + 1) for p, (_, last) in batch.ranges.items()]
        attempt = 0
        while True:
            if self._revoked:
                raise BatchAbandoned("partitions revoked before commit")
            try:
                self._consumer.commit(offsets=offsets, asynchronous=False)
                return
            except KafkaException as exc:
                err = exc.args[0]
                if err.code() in _LOST_GENERATION:
                    raise BatchAbandoned(f"commit refused: {err.str()}") from exc
                attempt += 1
                self.metrics.store_errors.labels("kafka").inc()
                log.warning("commit_failed", attempt=attempt, error=err.str())
                if self._stop.is_set():
                    raise BatchAbandoned("stop requested") from exc
                self._wait_paused(min(self.options.max_backoff_seconds, 0.25 * 2 ** min(attempt, 10)))

    def _account(self, batch: Batch, started: float) -> None:
        result = batch.result
        m = self.metrics
        n_valid = result.valid.num_rows
        n_new = len(batch.new_ids or ())
        n_dup = n_valid - n_new + len(result.duplicates)
        for _, reason in result.rejected:
            m.validation_failures.labels(str(reason)).inc()
        m.events.inc(n_new)
        m.duplicates.inc(n_dup)
        m.duplicate_rate.set(n_dup / (n_valid + len(result.duplicates)) if n_valid + len(result.duplicates) else 0.0)
        now_us = datetime.now(timezone.utc).timestamp() * 1_000_000
        if n_valid:
            ts = result.valid.column("timestamp").cast("int64").to_numpy()
            m.observe_lag(np.maximum(now_us - ts, 0) / 1_000_000)
        m.durable(n_new)
        m.batch_seconds.observe(time.monotonic() - started)
        self._observe_consumer_lag(batch)
        s = self.stats
        if self._first_batch_at is None:
            self._first_batch_at = started
        s.busy_seconds = time.monotonic() - self._first_batch_at
        s.batches += 1
        s.messages += len(batch.messages)
        s.stored += n_new
        s.duplicates += n_dup
        s.rejected += len(result.rejected)
        log.info("batch_committed", messages=len(batch.messages), stored=n_new, duplicates=n_dup,
                 rejected=len(result.rejected), seconds=round(time.monotonic() - started, 3),
                 stage_seconds={k: round(v, 3) for k, v in self._stage_seconds.items()},
                 partitions={p: list(r) for p, r in batch.ranges.items()})

    def _observe_consumer_lag(self, batch: Batch) -> None:
        for p, (_, last) in batch.ranges.items():
            tp = TopicPartition(self.settings.topic_activity, p)
            try:
                _, high = self._consumer.get_watermark_offsets(tp, cached=True)
            except KafkaException:
                continue
            if high >= 0:
                self.metrics.consumer_lag.labels(str(p)).set(max(high - (last + 1), 0))
