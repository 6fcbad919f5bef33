"""The ingestion loop's Kafka side: poll a batch, have ``BatchProcessor`` land it in every
stage, commit its offsets.

Effectively once: every sink is idempotent for a batch and for a replay however it is cut
(Postgres dedups on the event id and recognises a replayed message's own events by their
recorded source offset, S3 objects are keyed by offset block, Redis keeps an applied-offset mark
per user, the DLQ producer is idempotent), and offsets are committed synchronously only after
every stage has taken the batch. A crash anywhere before the commit replays the batch; nothing
is lost and every tier holds each event once. When a store is down the batch is kept, the partitions are paused (the
consumer keeps polling so it stays in the group) and the failing stage is retried with
backoff; stages that already succeeded are not redone. A store that refuses the batch for good
stops the consumer, uncommitted.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass, replace
from datetime import datetime, timezone

import numpy as np
import psycopg
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from feedstore.contract import rules
from feedstore.contract.features import VIEWS
from feedstore.contract.rules import Reason
from feedstore.db import connect
from feedstore.ids import ITEMS, USERS
from feedstore.logs import get_logger
from feedstore.settings import Settings
from ingestion import validation
from ingestion.bisect import Resume, after_commit, plan
from ingestion.catalog import CatalogIndex
from ingestion.metrics import KAFKA, IngestMetrics
from ingestion.processing import BatchAbandoned, BatchProcessor, Processed, Stage, backoff_seconds, brief
from ingestion.sinks.base import PermanentSinkError, SinkBatch, SinkError
from ingestion.sinks.dlq import DlqSink
from ingestion.sinks.postgres import PostgresSink, store_error
from ingestion.sinks.redis import RedisSink
from ingestion.sinks.s3 import S3Sink
from ingestion.validation import Limits, Result, Validator

log = get_logger("feedstore.ingest")

# Waiting this long for the writer needs no poll; past it the loop pauses its partitions and polls,
# which keeps it in the group and serves rebalances during a long outage.
_QUIET_WAIT_SECONDS = 10.0
FEAST_STAGE = "feast"
PUSHED_VIEWS = tuple(v.name for v in VIEWS.values() if v.pushed)

# Commit failures that mean "the group moved on": the batch is dropped and redelivered.
_LOST_GENERATION = {KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID,
                    KafkaError.REBALANCE_IN_PROGRESS, KafkaError._ASSIGNMENT_LOST}
# How often, while every broker is down, the consumer asks for metadata to notice the return.
_KAFKA_PROBE_SECONDS = 5.0


class KafkaUnreachable(Exception):
    """``--until-idle`` gave up: no broker answered for that long, so nothing was consumed."""


@dataclass(frozen=True)
class Options:
    until_idle: float | None = None
    replay: bool = False
    instance_id: str | None = None
    max_backoff_seconds: float = 15.0


@dataclass(frozen=True)
class Pending:
    future: Future
    started: float
    generation: int
    messages: int


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
        partition_days_back=settings.postgres.partition_days_back,
        partition_days_ahead=settings.postgres.partition_days_ahead,
        keep_repeats=True,
    )


def default_stages(settings: Settings) -> list[Stage]:
    """Today's stores in today's order: the DLQ and Postgres take every batch; S3 lands, Redis
    counts and Feast pushes only the events Postgres accepted for these messages. Feast is on
    with ``settings.ingest.feast_push`` (FEED_INGEST_FEAST_PUSH)."""
    stages = [Stage(DlqSink(settings)), Stage(PostgresSink(settings)),
              Stage(S3Sink(settings), after=("postgres",), new_only=True),
              Stage(RedisSink(settings), after=("postgres",), new_only=True)]
    if settings.ingest.feast_push:
        from ingestion.sinks.feast_push import FeastPushSink

        stages.append(Stage(FeastPushSink(settings), after=("redis",), new_only=True))
    return stages


class IngestConsumer:
    """``stages`` default to ``default_stages(settings)``; the consumer closes their sinks."""

    def __init__(self, settings: Settings, options: Options | None = None,
                 metrics: IngestMetrics | None = None, stages: Sequence[Stage] | None = None) -> None:
        settings = settings.as_component("ingest")  # its own Postgres, Redis and S3 credentials
        self.settings = settings
        self.topic = settings.kafka.topic_activity
        """The topic consumed; ``ingestion.catalog_stream.RecordConsumer`` sets its own."""
        self.options = options or Options()
        self.metrics = metrics or IngestMetrics()
        self._stop = threading.Event()
        self._generation = 0  # raised by every revoke: a batch read before it is given up
        self._revoking = False
        self._pending: Pending | None = None  # the batch being written while the next is read
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-writer")
        self._loop_thread: threading.Thread | None = None
        self._taking = 0  # the generation of the batch being validated
        self._failure: PermanentSinkError | None = None
        self._at: dict[tuple[str, int], tuple[int, Resume]] = {}  # resume offset and what is known there
        self._marked: dict[tuple[str, int], tuple[int, Resume]] = {}  # raised for the batch being read
        self._assigned_once = False
        self._assignment: list[TopicPartition] = []
        self._unplanned: set[tuple[str, int]] = set()  # assigned, no batch read yet
        self._first_marks: set[tuple[str, int]] = set()  # planned, their first batch's mark not yet sent
        self._caps: dict[tuple[str, int], int] = {}
        self._bisecting: dict[tuple[str, int], Resume] = {}
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
        self._kafka_down_since: float | None = None
        self._kafka_probed = 0.0
        self.metrics.init_stores([KAFKA, *(s.name for s in self.processor.stages)])
        self.metrics.feast_push.set(int(self.pushes_to_feast))

    @property
    def pushes_to_feast(self) -> bool:
        return any(s.name == FEAST_STAGE for s in self.processor.stages)

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
            # librdkafka's own log lines (one per refused connection, every second) stay off;
            # errors come through error_cb as one structured line per outage.
            "log_level": 0,
            "error_cb": self._on_kafka_error,
        }
        if self.options.instance_id:
            conf["group.instance.id"] = self.options.instance_id
        return conf

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assignment = list(partitions)
        self._assigned_once = True
        self._unplanned = {(p.topic, p.partition) for p in partitions}
        self._first_marks.clear()
        self._marked.clear()
        self._at.clear()
        self._caps.clear()
        self._bisecting.clear()
        for stage in self.processor.stages:
            stage.sink.reassigned()
        self._last_activity = time.monotonic()
        self._kafka_back()
        log.info("partitions_assigned", partitions=[p.partition for p in partitions])

    def _on_kafka_error(self, err: KafkaError) -> None:
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            if self._kafka_down_since is None:
                self._kafka_down_since = time.monotonic()
                log.warning("kafka_unreachable", bootstrap=self.settings.kafka.bootstrap, error=err.str(),
                            action="retrying; start Kafka or fix FEED_KAFKA_BOOTSTRAP")
            self.metrics.store_up.labels(KAFKA).set(0)
        elif err.code() not in (KafkaError._TRANSPORT, KafkaError._RESOLVE):  # parts of an outage, or a reconnect
            log.warning("kafka_error", error=err.str())

    def _kafka_back(self) -> None:
        self.metrics.store_up.labels(KAFKA).set(1)
        if self._kafka_down_since is not None:
            log.info("kafka_reachable", down_seconds=round(time.monotonic() - self._kafka_down_since, 1))
            self._kafka_down_since = None

    def _check_kafka(self) -> None:
        """While every broker is down: give up under ``--until-idle`` once that long has passed,
        else probe for the brokers' return now and then (an idle topic delivers nothing to show it)."""
        if self._kafka_down_since is None:
            return
        now = time.monotonic()
        down = now - self._kafka_down_since
        if self.options.until_idle is not None and not self._assigned_once and down >= self.options.until_idle:
            raise KafkaUnreachable(f"Kafka at {self.settings.kafka.bootstrap} did not answer for {down:.0f}s "
                                   f"(--until-idle {self.options.until_idle:g}); nothing was consumed")
        if now - self._kafka_probed >= _KAFKA_PROBE_SECONDS:
            self._kafka_probed = now
            try:
                self._consumer.list_topics(self.settings.kafka.topic_activity, timeout=1.0)
            except KafkaException:
                return
            self._kafka_back()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Ends the write in flight before the partitions go (committing it if it completes; a write
        stuck retrying gives up), so that no two consumers write one partition's objects at once."""
        self._revoking = True
        try:
            self._finish_pending(in_revoke=True)
        finally:
            self._revoking = False
        self._generation += 1
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
        if not self.pushes_to_feast:
            log.warning("feast_push_off", views=list(PUSHED_VIEWS),
                        effect="nothing else writes these views: the 'ranking' service serves them as missing once "
                               "their TTL passes", action="run one consumer with --feast-push")
        timeout = self.settings.ingest.batch_timeout_ms / 1000
        self._loop_thread = threading.current_thread()
        try:
            while not self._stop.is_set():
                messages = consumer.consume(self.settings.ingest.batch_size, timeout)
                messages = [m for m in messages if not self._is_error(m)]
                self._check_kafka()
                if not messages:
                    self._finish_pending()
                    if self._idle_long_enough():
                        log.info("ingest_idle_exit", idle_seconds=self.options.until_idle)
                        break
                    continue
                self._last_activity = time.monotonic()
                self._take(messages)
                self._last_activity = time.monotonic()
            self._finish_pending()
            if self._failure is not None:
                raise self._failure
        except PermanentSinkError as exc:
            log.error("ingest_failed", store=exc.store, error=brief(exc),
                      action="fix the store or the data; the batch is not committed and will be redelivered")
            raise
        except KafkaUnreachable as exc:
            log.error("ingest_gave_up", error=str(exc))
            raise
        finally:
            self._stop.set()
            self._finish_pending(in_revoke=True)  # after a failure: the write in flight ends (committed if done)
            consumer.close()
            self._writer.shutdown(wait=True)
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

    def _take(self, messages: list[Message]) -> None:
        """Validates the batch, then hands it to the writer once the previous one is committed:
        the stores take batch k while batch k+1 is polled and validated."""
        started = time.monotonic()
        generation = self._taking = self._generation
        try:
            messages = self._guarded(messages)
            if not messages:
                return
            if self._caps:
                self._finish_pending()  # bisecting: one batch at a time, so that a crash is the committed offset's
            self._mark(messages)
            prepared = self.processor.prepare(messages)
            self._unmark()
            self._finish_pending()
            if generation != self._generation:
                raise BatchAbandoned("partitions revoked")
        except BatchAbandoned as exc:
            self._abandoned(exc, len(messages))
            return
        finally:
            self._resume()
        self._pending = Pending(self._writer.submit(self.processor.write, prepared), started, generation, len(messages))

    def _finish_pending(self, in_revoke: bool = False) -> None:
        """Waits for the batch being written (staying in the group) and commits it. In a rebalance
        callback nothing may poll: it only waits, and a stuck write gives up on its next retry."""
        pending = self._pending
        if pending is None:
            return
        quiet_until = time.monotonic() + _QUIET_WAIT_SECONDS
        try:
            while not in_revoke and not pending.future.done():
                if time.monotonic() < quiet_until:
                    futures_wait([pending.future], timeout=0.25)
                    continue
                self.wait(0.5)  # a long write (a store down): stay in the group meanwhile
                if self._pending is not pending:
                    return  # a rebalance callback during the wait finished it
            self._pending = None
            done = pending.future.result()
            if pending.generation != self._generation:
                raise BatchAbandoned("partitions revoked")
            self.processor.commit(done)
            self._account(done, pending.started)
        except BatchAbandoned as exc:
            self._abandoned(exc, pending.messages)
        except PermanentSinkError as exc:
            if not in_revoke:
                raise
            self._failure = self._failure or exc  # raised by the loop once the callback returns
            self._stop.set()
        finally:
            if not in_revoke:
                self._resume()

    def _abandoned(self, exc: BaseException, messages: int) -> None:
        self.stats.abandoned += 1
        log.warning("batch_abandoned", reason=str(exc), messages=messages)

    # -- crash-loop bisection (ingestion/bisect.py) ----------------------------------------------

    def _guarded(self, messages: list[Message]) -> list[Message]:
        """Leaves out what a crash loop says not to read yet: past a partition's cap (sought back,
        redelivered next), and a message that crashed the process alone (dead-lettered here)."""
        firsts: dict[tuple[str, int], Message] = {}
        for m in messages:
            firsts.setdefault((m.topic(), m.partition()), m)
        try:
            poisoned = self._plan({tp: m.offset() for tp, m in firsts.items() if tp in self._unplanned})
        except KafkaException as exc:  # no evidence read or kept: plan again on the next batch
            log.warning("crash_loop_check_failed", error=brief(exc))
            poisoned = set()
        for tp in poisoned:
            pill = firsts[tp]
            log.error("crash_loop_message_set_aside", topic=tp[0], partition=tp[1], offset=pill.offset(),
                      reason=str(Reason.CRASHED_CONSUMER))
            self.processor.quarantine([pill], str(Reason.CRASHED_CONSUMER))
            self.stats.rejected += 1
            self._caps.pop(tp, None)
            self._bisecting.pop(tp, None)
        limits = {tp: (firsts[tp].offset() + (1 if tp in poisoned else self._caps[tp]))
                  for tp in firsts if tp in poisoned or tp in self._caps}
        if not limits:
            return messages
        kept, rewind = [], {}
        for m in messages:
            tp = (m.topic(), m.partition())
            if tp in limits and m.offset() >= limits[tp]:
                rewind.setdefault(tp, m.offset())  # the first message left out is read again next
            elif tp not in poisoned:
                kept.append(m)
        for (topic, partition), offset in rewind.items():
            self._consumer.seek(TopicPartition(topic, partition, offset))
        return kept

    def _mark(self, messages: list[Message]) -> None:
        """Before reading a batch: raises the crash count at each of its partitions' resume offsets
        (asynchronously; a commit queued before the batch's own is applied before it). The first
        batch after an assignment waits for its mark: a process killed at once would otherwise die
        before the mark leaves, and a crash at the resume offset could go uncounted on every restart."""
        keys = {(m.topic(), m.partition()) for m in messages}
        self._marked = {k: self._at[k] for k in keys if k in self._at}
        first = bool(keys & self._first_marks)
        self._first_marks -= keys
        self._send_marks({k: replace(state, resumes=state.resumes + 1) for k, (_, state) in self._marked.items()},
                         wait=first)

    def _unmark(self) -> None:
        """The batch was read and validated: a death from now on (a hung store, a supervisor that
        kills) is no evidence against its messages."""
        marked, self._marked = self._marked, {}
        self._send_marks({k: state for k, (_, state) in marked.items()}, marked)

    def _send_marks(self, states: dict[tuple[str, int], Resume], at: dict | None = None, wait: bool = False) -> None:
        at = at or self._marked
        offsets = [TopicPartition(t, p, at[(t, p)][0], metadata=state.dumps()) for (t, p), state in states.items()]
        if offsets:
            try:
                self._consumer.commit(offsets=offsets, asynchronous=not wait)
            except KafkaException as exc:
                log.warning("crash_loop_mark_failed", error=brief(exc))

    def _plan(self, starts: dict[tuple[str, int], int]) -> set[tuple[str, int]]:
        """On a partition's first batch after an assignment: reads what its committed metadata says
        about crashes there and returns the partitions whose first message is to be set aside."""
        if not starts:
            return set()
        committed = self._consumer.committed([TopicPartition(t, p) for t, p in starts], timeout=30)
        poisoned = set()
        for tp in committed:
            key = (tp.topic, tp.partition)
            offset = starts[key]
            evidence = Resume.loads(tp.metadata) if tp.offset == offset else Resume()
            decided = plan(evidence, offset, self.settings.ingest.batch_size)
            self._at[key] = (offset, replace(decided.marker, resumes=evidence.resumes))
            if evidence.resumes:
                log.warning("crash_loop_suspected", topic=tp.topic, partition=tp.partition, offset=offset,
                            resumes=evidence.resumes, cap=decided.cap, set_aside=decided.poison)
            if decided.poison:
                poisoned.add(key)
            elif decided.cap is not None:
                self._caps[key] = decided.cap
                self._bisecting[key] = decided.marker
        self._unplanned -= set(starts)
        self._first_marks |= set(starts)
        return poisoned

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
        if threading.current_thread() is not self._loop_thread:
            return "partitions revoked" if self._revoking else None  # the writer, during a rebalance
        return "partitions revoked" if self._taking != self._generation else None

    def wait(self, seconds: float) -> None:
        """Between attempts. The loop's thread sleeps while staying in the group (paused partitions
        deliver nothing, polling serves the callbacks); the writer's thread only sleeps, waking up
        for a stop or a rebalance."""
        deadline = time.monotonic() + seconds
        if threading.current_thread() is not self._loop_thread:
            while not self._stop.is_set() and not self._revoking and time.monotonic() < deadline:
                self._stop.wait(min(0.25, max(0.0, deadline - time.monotonic())))
            return
        if self._marked:
            self._unmark()  # waiting for a store (the catalog) is not reading: a kill now is no evidence
        consumer, generation = self._consumer, self._generation
        if self._assignment:
            consumer.pause(self._assignment)
        while not self._stop.is_set() and generation == self._generation and time.monotonic() < deadline:
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
        offsets, carried = [], {}
        for r in batch.ranges:
            tp = (r.topic, r.partition)
            carried[tp] = state = after_commit(self._bisecting.get(tp), r.last + 1)
            offsets.append(TopicPartition(r.topic, r.partition, r.last + 1, metadata=state.dumps() if state else ""))
        attempt = 0
        while True:
            try:
                self._consumer.commit(offsets=offsets, asynchronous=False)
                self._carry(carried, offsets)
                return
            except KafkaException as exc:
                err = exc.args[0]
                if err.code() in _LOST_GENERATION:
                    raise BatchAbandoned(f"commit refused: {err.str()}") from exc
                attempt += 1
                self.metrics.store_errors.labels("kafka").inc()
                log.warning("commit_failed", attempt=attempt, error=err.str())
                if self._stop.is_set() or self._revoking:
                    raise BatchAbandoned("stop requested" if self._stop.is_set() else "commit failed in a rebalance") \
                        from exc
                self.wait(backoff_seconds(attempt, self.options.max_backoff_seconds))

    def _carry(self, carried: dict[tuple[str, int], Resume | None], offsets: list[TopicPartition]) -> None:
        for tp in offsets:
            self._at[(tp.topic, tp.partition)] = (tp.offset, carried[(tp.topic, tp.partition)] or Resume())
        for tp, state in carried.items():
            if state is None:
                self._bisecting.pop(tp, None)
                self._caps.pop(tp, None)
            else:
                self._bisecting[tp], self._caps[tp] = state, state.cap

    def _account(self, done: Processed, started: float) -> None:
        n_new = int(done.batch.accepted.sum()) if done.batch.accepted is not None else 0
        n_dup = done.result.valid.num_rows - n_new + len(done.result.duplicates)
        self._book_metrics(done, n_new, n_dup, started)
        s = self.stats
        if self._first_batch_at is None:
            self._first_batch_at = started
        s.busy_seconds = time.monotonic() - self._first_batch_at
        self._last_activity = time.monotonic()  # idle counts from the last commit, not from the last poll
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
                self.metrics.consumer_lag.labels(r.topic, self.settings.kafka.consumer_group,
                                                 str(r.partition)).set(max(high - (r.last + 1), 0))
