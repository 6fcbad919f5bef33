"""Ingestion test data: a small catalog and valid event lines made here (no generator in the
package yet), plus helpers to produce to and read from the session's topics."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone

import numpy as np
import psycopg
import pytest

from feedstore.contract import rules
from ingestion.events import format_timestamp

USER_IDS = np.arange(1_000, 1_400, dtype=np.int64)
ITEM_IDS = np.arange(500_000, 502_000, 3, dtype=np.int64)


def valid_lines(n: int, *, now: datetime | None = None, seed: int = 1, spread_seconds: int = 1200,
                with_event_id_every: int = 5) -> list[bytes]:
    """Distinct valid events from the test catalog within the last ``spread_seconds``."""
    rng = random.Random(seed)
    now = now or datetime.now(timezone.utc)
    out = []
    for k in range(n):
        ts = now - timedelta(microseconds=rng.randrange(spread_seconds * 1_000_000))
        event = {
            "user_id": str(int(USER_IDS[rng.randrange(USER_IDS.size)])),
            "item_id": str(int(ITEM_IDS[rng.randrange(ITEM_IDS.size)])),
            "event_type": rng.choice(rules.EVENT_TYPES),
            "timestamp": format_timestamp(ts),
            "context": {"device": rng.choice(rules.DEVICES), "platform": rng.choice(rules.PLATFORMS),
                        "session_id": f"s{seed}-{k}"},
            "dwell_time_ms": rng.randrange(0, 60_000),
        }
        if with_event_id_every and k % with_event_id_every == 0:
            event["event_id"] = str(__import__("uuid").UUID(int=rng.getrandbits(128), version=4))
        out.append(json.dumps(event, separators=(",", ":")).encode())
    return out


def seed_catalog(dsn: str) -> None:
    """The test users and items, loaded with COPY; idempotent across tests of one session."""
    now = datetime.now(timezone.utc)
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        if cur.execute("SELECT count(*) FROM users").fetchone()[0] >= USER_IDS.size:
            return
        with cur.copy("COPY users (user_id, created_at) FROM STDIN") as copy:
            for uid in USER_IDS.tolist():
                copy.write_row((uid, now))
        with cur.copy("COPY items (item_id, creator_id, category, media_type, created_at) FROM STDIN") as copy:
            for iid in ITEM_IDS.tolist():
                copy.write_row((iid, 1, "tech", "text", now))


@pytest.fixture(scope="session")
def catalog(settings):
    seed_catalog(settings.postgres.dsn)
    return settings


# -- per-test namespaces on the shared stack and readers of what the consumer wrote -------------

import os  # noqa: E402
import uuid  # noqa: E402

import pyarrow.dataset as pads  # noqa: E402
from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402

from feedstore.settings import Settings  # noqa: E402


def env_of(s: Settings) -> dict[str, str]:
    """The FEED_* variables a ``feedstore ingest`` subprocess needs to see ``s``."""
    return {**os.environ, "FEED_POSTGRES_DSN": s.postgres.dsn, "FEED_REDIS_URL": s.redis.url,
            "FEED_KAFKA_BOOTSTRAP": s.kafka.bootstrap, "FEED_S3_ENDPOINT": s.s3.endpoint,
            "FEED_S3_BUCKET": s.s3.bucket, "FEED_TOPIC_ACTIVITY": s.kafka.topic_activity,
            "FEED_TOPIC_DLQ": s.kafka.topic_dlq, "FEED_CONSUMER_GROUP": s.kafka.consumer_group,
            "FEED_KAFKA_SESSION_TIMEOUT_MS": str(s.kafka.session_timeout_ms),
            "FEED_INGEST_BATCH_SIZE": str(s.ingest.batch_size),
            "FEED_TOPIC_ITEMS": s.kafka.topic_items, "FEED_TOPIC_USERS": s.kafka.topic_users,
            "FEED_TOPIC_RETRY": s.kafka.topic_retry, "FEED_INGEST_SOURCES": s.ingest.sources,
            "FEED_INGEST_UNKNOWN_GRACE_SECONDS": str(s.ingest.unknown_grace_seconds),
            "FEED_INGEST_UNKNOWN_RECHECK_SECONDS": str(s.ingest.unknown_recheck_seconds)}


@pytest.fixture()
def ingest_settings(catalog: Settings) -> Settings:
    """Fresh topics and consumer group, and empty activity table and landing prefix."""
    from devtools.stack.kafka import KafkaService

    tag = uuid.uuid4().hex[:8]
    # The activity consumer alone, dead-lettering unknown ids at once, as these tests were written for;
    # the catalog topics and the grace window have tests of their own.
    s = catalog.replace(ingest={"sources": "activity", "unknown_grace_seconds": 0},
                        kafka={"topic_activity": f"{catalog.kafka.topic_activity}-{tag}",
                               "topic_dlq": f"{catalog.kafka.topic_dlq}-{tag}",
                               "consumer_group": f"{catalog.kafka.consumer_group}-{tag}",
                               "session_timeout_ms": 6000})
    KafkaService(s).provision()
    with psycopg.connect(s.postgres.dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE user_activity, activity_event_ids")
    clear_landing(s)
    clear_counters(s)
    yield s
    from feedstore.kafka import admin_client

    admin_client(s.kafka.bootstrap).delete_topics([s.kafka.topic_activity, s.kafka.topic_dlq])


def clear_counters(s: Settings) -> None:
    """The session's Redis database outlives each test: counters another test left for the same
    user ids would be added to this test's (the tests compare them with Postgres exactly)."""
    import redis

    client = redis.Redis.from_url(s.redis.url)
    try:
        keys = list(client.scan_iter(match="user:*", count=1000))
        for i in range(0, len(keys), 1000):
            client.unlink(*keys[i:i + 1000])
    finally:
        client.close()


def clear_landing(s: Settings) -> None:
    from feedstore.s3 import s3_client

    client = s3_client(s)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=s.s3.bucket, Prefix="events/"):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=s.s3.bucket, Delete={"Objects": keys})


def produce(s: Settings, lines: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": s.kafka.bootstrap, "linger.ms": 20,
                         "message.max.bytes": 16 * 1024 * 1024, "enable.idempotence": True})
    for line in lines:
        try:
            key = str(json.loads(line)["user_id"]).encode()
        except Exception:  # noqa: BLE001 - defect lines have no usable key
            key = None
        while True:
            try:
                producer.produce(s.kafka.topic_activity, value=line, key=key)
                break
            except BufferError:
                producer.poll(0.2)
    assert producer.flush(60) == 0


def read_dlq(s: Settings) -> list[tuple[bytes, dict[str, str]]]:
    consumer = Consumer({"bootstrap.servers": s.kafka.bootstrap, "group.id": f"dlq-reader-{uuid.uuid4().hex}",
                         "enable.partition.eof": True, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(s.kafka.topic_dlq, 0, 0)])
    out = []
    try:
        while True:
            msg = consumer.poll(10)
            assert msg is not None, "DLQ read timed out"
            if msg.error():
                break
            out.append((msg.value() or b"", {k: v.decode() for k, v in (msg.headers() or [])}))
    finally:
        consumer.close()
    return out


def stored_event_ids(s: Settings) -> list[str]:
    with psycopg.connect(s.postgres.dsn) as conn:
        return [str(r[0]) for r in conn.execute("SELECT event_id FROM user_activity")]


def landed_event_ids(s: Settings) -> list[str]:
    from feedstore.s3 import arrow_fs, bucket_path

    dataset = pads.dataset(bucket_path("events/", s), filesystem=arrow_fs(s), format="parquet")
    return dataset.to_table(columns=["event_id"]).column("event_id").to_pylist()


def expected_valid_ids(lines: list[bytes], reasons: list) -> set[str]:
    """Event ids of the lines that must be stored (the catalog and clock are not re-checked)."""
    from ingestion.validation import Limits, Validator

    def anything(ids):
        return np.ones(len(ids), dtype=bool)

    keep = [line for line, reason in zip(lines, reasons) if reason is None]
    return set(Validator(anything, anything, Limits(replay=True)).validate(keep).valid.column("event_id").to_pylist())
