"""Prometheus metrics of the ingestion consumer, on their own registry so that several
consumers in one process (tests, benchmarks) do not collide.

Every name starts ``feedstore_ingest_``; the README lists them, ``ops/prometheus`` alerts on
them and ``ops/grafana`` graphs them. Counters with a bounded label set (DLQ reasons, stores)
start at 0 for every label, so ``rate()`` and ``increase()`` see the first failure."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from feedstore.contract.rules import DLQ_REASONS

PREFIX = "feedstore_ingest_"
LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 6 * 3600, 24 * 3600)
BATCH_BUCKETS = (1, 10, 50, 100, 500, 1000, 2000, 5000, 10000, 20000)
# The stage label of validation; the other stages are labelled by their sink's name. Its own
# label so that catalog lookups are not read as Postgres write time.
VALIDATE = "validate"
# The consumer's own store label, beside the sinks' names.
KAFKA = "kafka"


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry | None = None, rate_window_seconds: float = 10.0) -> None:
        self.registry = registry or CollectorRegistry()
        r, p = self.registry, PREFIX
        self.events_per_second = Gauge(p + "events_per_second",
                                       "Valid events made durable per second (sliding window)", registry=r)
        self.validation_failures = Counter(p + "validation_failures", "Events refused (dead-lettered), by reason",
                                           ["reason"], registry=r)
        self.storage_lag = Histogram(p + "storage_lag_seconds", "From event time to durable in all stores",
                                     buckets=LAG_BUCKETS, registry=r)
        self.duplicate_rate = Gauge(p + "duplicate_rate", "Share of the last batch's valid events already stored",
                                    registry=r)
        self.duplicates = Counter(p + "duplicate_events", "Valid events dropped as already stored", registry=r)
        self.events = Counter(p + "events", "Events stored for the first time", registry=r)
        self.consumer_lag = Gauge(p + "consumer_lag", "Messages behind the high watermark, per partition",
                                  ["topic", "group", "partition"], registry=r)
        self.batch_size = Histogram(p + "batch_size", "Messages per polled batch", buckets=BATCH_BUCKETS,
                                    registry=r)
        self.batch_seconds = Histogram(p + "batch_seconds", "Wall time from poll to commit", registry=r)
        self.stage_seconds = Histogram(p + "stage_seconds", "Wall time of a batch's stage (its successful attempt)",
                                       ["stage"], registry=r)
        self.store_errors = Counter(p + "store_errors", "Failed attempts to write a store", ["store"], registry=r)
        self.store_up = Gauge(p + "store_up", "1 when the last attempt on the store succeeded", ["store"],
                              registry=r)
        self.retrying = Gauge(p + "batch_retrying", "1 while a batch waits for a store to come back", registry=r)
        self.last_commit = Gauge(p + "last_commit_timestamp_seconds", "Unix time of the last committed batch",
                                 registry=r)
        self.feast_push = Gauge(p + "feast_push_enabled", "1 when this consumer pushes the realtime features to "
                                "Feast's online store (their only writer)", registry=r)
        for reason in DLQ_REASONS:
            self.validation_failures.labels(str(reason))
        self._window: deque[tuple[float, int]] = deque()
        self._rate_window = rate_window_seconds

    def init_stores(self, stores: Iterable[str]) -> None:
        """Zero error counters for every store the consumer writes (``store_up`` stays absent until
        the first attempt: a guess of 1 would hide a store that never answered)."""
        for store in stores:
            self.store_errors.labels(store)

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        start_http_server(port, addr=addr, registry=self.registry)

    def observe_lag(self, lags_seconds: np.ndarray) -> None:
        """Per-event storage lag; prometheus_client has no bulk observe (~1 µs per event here)."""
        observe = self.storage_lag.observe
        for value in lags_seconds.tolist():
            observe(value)

    def observe_stages(self, seconds: dict[str, float]) -> None:
        for stage, value in seconds.items():
            self.stage_seconds.labels(stage).observe(value)

    def durable(self, n_events: int, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._window.append((now, n_events))
        while self._window and self._window[0][0] < now - self._rate_window:
            self._window.popleft()
        span = max(now - self._window[0][0], 1.0) if len(self._window) > 1 else self._rate_window
        self.events_per_second.set(sum(n for _, n in self._window) / span)
        self.last_commit.set(time.time())
