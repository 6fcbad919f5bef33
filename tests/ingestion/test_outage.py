"""Stores going away mid-run: Redis, then SeaweedFS, then Postgres are stopped and started
again while the consumer runs. Private instances (own directory and ports) so the shared
stack is never touched; Kafka is the shared broker with topics of this test's own."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
import redis

from devtools.stack.kafka import KafkaService
from devtools.stack.postgres import PostgresService
from devtools.stack.redis import RedisService
from devtools.stack.seaweedfs import SeaweedFSService
from feedstore.kafka import admin_client
from feedstore.migrate import migrate
from feedstore.settings import Settings
from ingestion.consumer import IngestConsumer, Options
from ingestion.metrics import PREFIX, IngestMetrics
from tests.conftest import private_stack
from tests.ingestion.conftest import landed_event_ids, produce, seed_catalog, stored_event_ids, valid_lines
from tests.ingestion.harness import committed


@pytest.fixture()
def private_stores(stack: Settings) -> Iterator[tuple[Settings, dict]]:
    tag = uuid.uuid4().hex[:8]
    with private_stack(stack, s3={"bucket": "outage"}, ingest={"batch_size": 500},
                       kafka={"topic_activity": f"outage-{tag}", "topic_dlq": f"outage-dlq-{tag}",
                              "consumer_group": f"outage-{tag}", "bootstrap": stack.kafka.bootstrap}) as s:
        services = {"postgres": PostgresService(s), "redis": RedisService(s), "s3": SeaweedFSService(s)}
        try:
            for service in services.values():
                service.up()
            KafkaService(s).provision()
            with psycopg.connect(s.postgres.dsn) as conn:
                migrate(conn)
            seed_catalog(s.postgres.dsn)
            yield s, services
        finally:
            for service in services.values():
                service.stop()
            admin_client(s.kafka.bootstrap).delete_topics([s.kafka.topic_activity, s.kafka.topic_dlq])


def _wait(probe: Callable[[], bool], what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if probe():
                return
        except Exception:  # noqa: BLE001 - the store being probed may be down
            pass
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_stores_going_away_and_coming_back(private_stores):
    s, services = private_stores
    metrics = IngestMetrics()
    consumer = IngestConsumer(s, Options(max_backoff_seconds=2), metrics)
    runner = threading.Thread(target=consumer.run, daemon=True)
    runner.start()
    def sample(name, labels=None):
        return metrics.registry.get_sample_value(PREFIX + name, labels)
    sent: list[bytes] = []
    try:
        for wave, store in enumerate(["redis", "s3", "postgres"]):
            lines = valid_lines(1500, seed=100 + wave)
            services[store].stop()
            produce(s, lines)
            sent += lines
            _wait(lambda: sample("store_up", {"store": store}) == 0, f"{store} reported down")
            _wait(lambda: sample("batch_retrying") == 1, "the batch to be held for retry")
            time.sleep(1)
            assert runner.is_alive()
            assert committed(s) == len(sent) - len(lines), "offsets committed while a store was down"
            services[store].up()
            _wait(lambda: len(stored_event_ids(s)) == len(sent), f"all events stored after {store} came back")
            assert sample("store_up", {"store": store}) == 1
            assert sample("store_errors_total", {"store": store}) >= 1
    finally:
        consumer.stop()
        runner.join(60)
    assert not runner.is_alive()

    stored = stored_event_ids(s)
    assert len(stored) == len(set(stored)) == len(sent)
    assert set(landed_event_ids(s)) == set(stored)
    r = redis.Redis.from_url(s.redis.url)
    totals = sum(int(r.hget(k, "total_events")) for k in r.scan_iter("user:*"))
    assert totals == len(sent), "hot counters lost or doubled events across the outages"
