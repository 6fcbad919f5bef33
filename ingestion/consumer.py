"""The ingestion loop's Kafka side: poll a batch, have ``BatchProcessor`` land it in every
stage, commit its offsets.

Effectively once: every sink is idempotent for a batch (S3 keys derive from offsets, Postgres
dedups on the event id, the DLQ producer is idempotent), and offsets are committed
synchronously only after the DLQ, S3 and Postgres (then Redis and Feast) have taken the batch.
A crash anywhere before the commit replays the batch; nothing is lost and Postgres holds
each event once. When a store is down the batch is kept, the partitions are paused (the
consumer keeps polling so it stays in the group) and the failing stage is retried with
backoff; stages that already succeeded are not redone. A store that refuses the batch for good
stops the consumer, uncommitted.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import psycopg
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from feedstore.contract import rules
from feedstore.db import connect
from feedstore.ids import ITEMS, USERS
from feedstore.logs import get_logger
from feedstore.settings import Settings
from ingestion import validation
from ingestion.catalog import CatalogIndex
from ingestion.metrics import IngestMetrics
from ingestion.processing import BatchAbandoned, BatchProcessor, Processed, Stage, backoff_seconds, brief
from ingestion.sinks.base import PermanentSinkError, SinkBatch, SinkError
from ingestion.sinks.dlq import DlqSink
from ingestion.sinks.postgres import PostgresSink, store_error
from ingestion.sinks.redis import RedisSink
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


def limits_from(settings: Settings, replay: bool) -> Limits:
    return Limits(
        max_age_seconds=settings.ingest.max_event_age_seconds or rules.MAX_EVENT_AGE_SECONDS,
        max_future_seconds=(rules.MAX_FUTURE_SKEW_SECONDS if settings.ingest.max_future_skew_seconds is None
                            else settings.ingest.max_future_skew_seconds),
        replay=replay,
    )


def default_stages(settings: Settings) -> list[Stage]:
    """Today's stores in today's order: the DLQ, S3 and Postgres take every batch; Redis counts
    and Feast pushes only what Postgres found new. Feast is on with ``settings.ingest.feast_push``
    (FEED_INGEST_FEAST_PUSH)."""
    stages = [Stage(DlqSink(settings)), Stage(S3Sink(settings)), Stage(PostgresSink(settings)),
              Stage(RedisSink(settings), after=("postgres",), new_only=True)]
    if settings.ingest.feast_push:
        from ingestion.sinks.feast_push import FeastPushSink

        stages.append(Stage(FeastPushSink(settings), after=("redis",), new_only=True))
    return stages


class IngestConsumer:
    """``stages`` default to ``default_stages(settings)``; the consumer closes their sinks."""

    def __init__(self, settings: Settings, options: Options | None = None,
                 metrics: IngestMetrics | None = None, stages: Sequence[Stage] | None = None) -> None:
        self.settings = settings
        self.topic = settings.kafka.topic_activity
        """The topic consumed; ``ingestion.catalog_stream.RecordConsumer`` sets its own."""
        self.options = options or Options()
        self.metrics = metrics or IngestMetrics()
        self._stop = threading.Event()
        self._revoked = False
        self._assigned_once = False
        self._assignment: list[TopicPartition] = []
        self._last_activity = time.monotonic()
        timeout = settings.ingest.statement_timeout_ms
        self.users = CatalogIndex(lambda: connect(settings, statement_timeout_ms=timeout), USERS)
        self.items = CatalogIndex(lambda: connect(settings, statement_timeout_ms=timeout), ITEMS)
        self.validator = Validator(self.users.contains, self.items.contains, limits_from(settings, self.options.replay))
        self.processor = BatchProcessor(self._validate, default_stages(settings) if stages is None else stages,
                                        self, self.metrics, max_backoff_seconds=self.options.max_backoff_seconds)
        self.stats = RunStats()
        self._first_batch_at: float | None = None
        self._consumer: Consumer | None = None

    def stop(self) -> None:
        self._stop.set()

    # -- Kafka -------------------------------------------------------------------------------

    def _kafka_config(self) -> dict:
        conf = {
            "bootstrap.servers": self.settings.kafka.bootstrap,
            "group.id": self.settings.kafka.consumer_group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": self.settings.kafka.session_timeout_ms,
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
            for stage in self.processor.stages:
                stage.sink.warm_up()
        except (psycopg.Error, SinkError, OSError) as exc:
            log.warning("warm_up_failed", error=brief(exc))

    def run(self) -> RunStats:
        restore = self._install_signal_handlers()
        self.warm_up()
        consumer = self._consumer = Consumer(self._kafka_config())
        consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        log.info("ingest_started", topic=self.topic, group=self.settings.kafka.consumer_group,
                 replay=self.options.replay, stages=[s.name for s in self.processor.stages])
        timeout = self.settings.ingest.batch_timeout_ms / 1000
        try:
            while not self._stop.is_set():
                messages = consumer.consume(self.settings.ingest.batch_size, timeout)
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
        except PermanentSinkError as exc:
            log.error("ingest_failed", store=exc.store, error=brief(exc),
                      action="fix the store or the data; the batch is not committed and will be redelivered")
            raise
        finally:
            consumer.close()
            self._close_stores()
            restore()
            log.info("ingest_stopped", **self.stats.__dict__)
        return self.stats

    def _close_stores(self) -> None:
        for index in (self.users, self.items):
            index.close()
        for stage in self.processor.stages:
            stage.sink.close()

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

    # -- one batch (the processor's host) -------------------------------------------------------

    def _process(self, messages: list[Message]) -> None:
        started = time.monotonic()
        self._account(self.processor.process(messages), started)

    def _validate(self, payloads: list[bytes | None], arrived_us: np.ndarray) -> Result:
        try:
            return self.validator.validate(payloads, arrived_us=arrived_us)
        except psycopg.Error as exc:
            for index in (self.users, self.items):
                index.close()
            raise store_error("postgres", exc) from exc

    def abandoned(self) -> str | None:
        if self._stop.is_set():
            return "stop requested"
        return "partitions revoked" if self._revoked else None

    def wait(self, seconds: float) -> None:
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

    def commit(self, batch: SinkBatch) -> None:
        offsets = [TopicPartition(r.topic, r.partition, r.last + 1) for r in batch.ranges]
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
                self.wait(backoff_seconds(attempt, self.options.max_backoff_seconds))

    def _account(self, done: Processed, started: float) -> None:
        n_new = len(done.batch.new_ids or ())
        n_dup = done.result.valid.num_rows - n_new + len(done.result.duplicates)
        self._book_metrics(done, n_new, n_dup, started)
        s = self.stats
        if self._first_batch_at is None:
            self._first_batch_at = started
        s.busy_seconds = time.monotonic() - self._first_batch_at
        s.batches += 1
        s.messages += done.messages
        s.stored += n_new
        s.duplicates += n_dup
        s.rejected += len(done.result.rejected)
        log.info("batch_committed", messages=done.messages, stored=n_new, duplicates=n_dup,
                 rejected=len(done.result.rejected), seconds=round(time.monotonic() - started, 3),
                 stage_seconds={k: round(v, 3) for k, v in done.stage_seconds.items()},
                 partitions={r.partition: [r.first, r.last] for r in done.batch.ranges})

    def _book_metrics(self, done: Processed, n_new: int, n_dup: int, started: float) -> None:
        result, m = done.result, self.metrics
        n_valid = result.valid.num_rows
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
        self._observe_consumer_lag(done.batch)

    def _observe_consumer_lag(self, batch: SinkBatch) -> None:
        for r in batch.ranges:
            try:
                _, high = self._consumer.get_watermark_offsets(TopicPartition(r.topic, r.partition), cached=True)
            except KafkaException:
                continue
            if high >= 0:
                self.metrics.consumer_lag.labels(str(r.partition)).set(max(high - (r.last + 1), 0))
