"""One batch from poll to commit, without Kafka: validate it, land it in each stage's sink in
order, then have it committed. The Kafka side (pausing, rebalances, the commit itself) comes
in as a ``Host``, so this loop runs in tests with fake sinks and a fake clock.

A stage that raises ``StoreUnavailable`` is retried, after the store's ``retry_after`` or an
exponential backoff, until it succeeds; stages already done are not redone and nothing is
committed meanwhile. ``PermanentSinkError`` is not retried: it leaves ``process`` uncommitted.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Protocol, TypeVar

import numpy as np
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE

from feedstore.contract.events import EVENT_SCHEMA
from feedstore.logs import get_logger
from ingestion.metrics import VALIDATE, IngestMetrics
from ingestion.sinks.base import (
    BatchingSink,
    DeadLetter,
    OffsetRange,
    PermanentSinkError,
    SinkBatch,
    StoreUnavailable,
)
from ingestion.validation import Result

log = get_logger("feedstore.ingest")

T = TypeVar("T")
Validate = Callable[[list[bytes | None], np.ndarray], Result]
"""Payloads and their arrival times in Kafka (µs) -> the batch's validation."""


class Record(Protocol):
    """The part of a Kafka message a batch is built from (``confluent_kafka.Message`` fits)."""

    def value(self) -> bytes | None: ...
    def key(self) -> bytes | None: ...
    def topic(self) -> str: ...
    def partition(self) -> int: ...
    def offset(self) -> int: ...
    def timestamp(self) -> tuple[int, int]: ...


class Host(Protocol):
    """What the processor needs from the Kafka side."""

    def wait(self, seconds: float) -> None:
        """Sleep between attempts while staying in the group; may return early on stop or revoke."""

    def abandoned(self) -> str | None:
        """Why the unfinished batch must be given up (stop, revoke), or None to keep retrying."""

    def commit(self, batch: SinkBatch) -> None:
        """Commit the batch's offsets; raises ``BatchAbandoned`` if the group moved on."""


class BatchAbandoned(Exception):
    """Stop requested or partitions revoked while the batch was unfinished: it is not committed."""


@dataclass(frozen=True)
class Stage:
    """A sink in the ordered stage list. ``after`` names the stages whose results it reads
    (they must come earlier); ``new_only`` skips it when the dedup stage found nothing new."""

    sink: BatchingSink
    after: tuple[str, ...] = ()
    new_only: bool = False

    @property
    def name(self) -> str:
        return self.sink.name


def checked(stages: Sequence[Stage]) -> tuple[Stage, ...]:
    """Refuses a list whose dependencies point forward, which would run a sink on missing results."""
    seen: set[str] = set()
    for stage in stages:
        missing = set(stage.after) - seen
        if missing or stage.name in seen:
            raise ValueError(f"stage {stage.name!r} listed twice or before {sorted(missing)}")
        seen.add(stage.name)
    return tuple(stages)


def waves(stages: Sequence[Stage]) -> list[tuple[Stage, ...]]:
    """The stages in rounds: each round holds the stages whose inputs earlier rounds made (a
    ``new_only`` stage needs the dedup stage, Postgres), in list order otherwise."""
    rounds: list[tuple[Stage, ...]] = []
    done: set[str] = set()
    left = list(stages)
    while left:
        ready = tuple(s for s in left if set(s.after) <= done and (not s.new_only or "postgres" in done
                                                                   or "postgres" not in {x.name for x in stages}))
        if not ready:
            raise ValueError(f"stages {[s.name for s in left]} wait for each other")
        rounds.append(ready)
        done |= {s.name for s in ready}
        left = [s for s in left if s not in ready]
    return rounds or [()]


@dataclass
class Prepared:
    batch: SinkBatch
    result: Result
    messages: int
    stage_seconds: dict[str, float]


@dataclass
class Processed:
    batch: SinkBatch
    result: Result
    messages: int
    stage_seconds: dict[str, float]


def offset_ranges(messages: Sequence[Record]) -> list[OffsetRange]:
    """Per (topic, partition), in the order first seen: what the commit and S3 keys are made of."""
    spans: dict[tuple[str, int], tuple[int, int]] = {}
    for m in messages:
        tp, o = (m.topic(), m.partition()), m.offset()
        first, last = spans.get(tp, (o, o))
        spans[tp] = (min(first, o), max(last, o))
    return [OffsetRange(t, p, first, last) for (t, p), (first, last) in spans.items()]


def arrivals_us(messages: Sequence[Record]) -> np.ndarray:
    """When each record reached Kafka, in µs (the topic's log-append time, or the producer's create
    time where the topic keeps that); -1 for a record without one."""
    out = np.full(len(messages), -1, dtype=np.int64)
    for i, m in enumerate(messages):
        kind, ms = m.timestamp()
        if kind != TIMESTAMP_NOT_AVAILABLE and ms >= 0:
            out[i] = ms * 1000
    return out


def batch_from(messages: Sequence[Record], result: Result, arrived_us: np.ndarray | None = None) -> SinkBatch:
    arrived_us = arrivals_us(messages) if arrived_us is None else arrived_us
    letters = [DeadLetter.of(messages[i].value(), messages[i].key(), str(reason), messages[i].topic(),
                             messages[i].partition(), messages[i].offset(), result.errors.get(i),
                             int(arrived_us[i]) // 1000 if arrived_us[i] > 0 else -1)
               for i, reason in result.rejected]
    rows = result.valid_index.tolist()
    partitions = np.fromiter((messages[i].partition() for i in rows), dtype=np.int64, count=len(rows))
    offsets = np.fromiter((messages[i].offset() for i in rows), dtype=np.int64, count=len(rows))
    return SinkBatch(result.valid, partitions, offsets, letters, offset_ranges(messages))


def backoff_seconds(attempt: int, cap: float) -> float:
    """Doubling from half a second, so a short blip costs little and a long outage is not hammered."""
    return min(cap, 0.25 * 2 ** min(attempt, 10))


def brief(exc: BaseException) -> str:
    """An error's first line, short enough for one log field."""
    return (str(exc).splitlines() or [""])[0][:300]


class BatchProcessor:
    """``catalog_store`` is the store validation's catalog lookups read, the label its failures
    are booked under (validation time itself is booked under ``metrics.VALIDATE``). ``parallel``
    runs the stages of one wave side by side (off: in list order, for deterministic tests)."""

    def __init__(self, validate: Validate, stages: Sequence[Stage], host: Host, metrics: IngestMetrics, *,
                 max_backoff_seconds: float = 15.0, catalog_store: str = "postgres",
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None,
                 parallel: bool = True) -> None:
        self.validate = validate
        self.stages = checked(stages)
        self.host = host
        self.metrics = metrics
        self.max_backoff_seconds = max_backoff_seconds
        self.catalog_store = catalog_store
        self.clock = clock
        self.rng = rng or random.Random()
        self.waves = waves(self.stages)
        self.parallel = parallel
        self._pool = ThreadPoolExecutor(max_workers=max(len(w) for w in self.waves), thread_name_prefix="stage")

    def process(self, messages: Sequence[Record]) -> Processed:
        """The whole batch, poll to commit, in the calling thread."""
        done = self.write(self.prepare(messages))
        self.commit(done)
        return done

    def prepare(self, messages: Sequence[Record]) -> Prepared:
        """Validation (retried while the catalog store is down) and the batch the stages take."""
        seconds: dict[str, float] = {}
        self.metrics.batch_size.observe(len(messages))
        payloads, arrived = [m.value() for m in messages], arrivals_us(messages)  # once, not per retry
        result = self._until_done(VALIDATE, self.catalog_store, lambda: self.validate(payloads, arrived), seconds)
        return Prepared(batch_from(messages, result, arrived), result, len(messages), seconds)

    def quarantine(self, messages: Sequence[Record], reason: str) -> Processed:
        """Dead-letters messages unread (they crashed the process) and commits past them."""
        result = Result(EVENT_SCHEMA.empty_table(), np.empty(0, dtype=np.int64),
                        rejected=[(i, reason) for i in range(len(messages))])
        done = self.write(Prepared(batch_from(messages, result), result, len(messages), {}))
        self.commit(done)
        return done

    def write(self, prepared: Prepared) -> Processed:
        """Every stage, those whose inputs are ready side by side (S3 and Redis both wait only for
        Postgres); nothing is committed here, so a caller may write one batch while it polls and
        validates the next."""
        batch, seconds = prepared.batch, dict(prepared.stage_seconds)
        for wave in self.waves:
            due = [s for s in wave if not s.new_only or batch.has_new_events()]
            if len(due) == 1 or not self.parallel:
                for stage in due:
                    self._run_stage(stage, batch, seconds)
            elif due:
                futures = [self._pool.submit(self._run_stage, s, batch, seconds) for s in due]
                errors = [f.exception() for f in futures]
                if first := next((e for e in errors if e is not None), None):
                    raise first
        return Processed(batch, prepared.result, prepared.messages, seconds)

    def commit(self, done: Processed) -> None:
        self.host.commit(done.batch)
        self.metrics.observe_stages(done.stage_seconds)

    def _run_stage(self, stage: Stage, batch: SinkBatch, seconds: dict[str, float]) -> None:
        self._until_done(stage.name, stage.name, partial(stage.sink.write, batch), seconds)

    def _until_done(self, label: str, store: str, fn: Callable[[], T], seconds: dict[str, float]) -> T:
        """Runs one stage until it succeeds; only its successful attempt is booked under ``label``."""
        attempt = 0
        while True:
            if attempt and (reason := self.host.abandoned()):
                raise BatchAbandoned(reason)
            started = self.clock()
            try:
                value = fn()
            except StoreUnavailable as exc:
                attempt += 1
                self.host.wait(self._failed(exc, attempt))
                continue
            except PermanentSinkError as exc:
                self._count_failure(exc.store)
                raise
            seconds[label] = self.clock() - started
            if label != VALIDATE or attempt:  # validation mostly reads memory: only its recovery says "up"
                self._succeeded(store, attempt)
            return value

    def _failed(self, exc: StoreUnavailable, attempt: int) -> float:
        """Books the failure and says how long to wait: the store's hint, else a jittered backoff."""
        self._count_failure(exc.store)
        self.metrics.retrying.set(1)
        delay = exc.retry_after if exc.retry_after is not None else self._backoff(attempt)
        log.warning("store_unavailable", store=exc.store, attempt=attempt, retry_in=round(delay, 2),
                    error=brief(exc))
        return delay

    def _backoff(self, attempt: int) -> float:
        """Jittered so that consumers hit by one outage do not all retry in step."""
        return backoff_seconds(attempt, self.max_backoff_seconds) * self.rng.uniform(0.7, 1.0)

    def _count_failure(self, store: str) -> None:
        self.metrics.store_errors.labels(store).inc()
        self.metrics.store_up.labels(store).set(0)

    def _succeeded(self, store: str, attempts: int) -> None:
        self.metrics.store_up.labels(store).set(1)
        if attempts:
            self.metrics.retrying.set(0)
            log.info("store_recovered", store=store, attempts=attempts)
