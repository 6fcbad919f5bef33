"""The item-catalog and user-profiles topics through the real Kafka, Postgres, S3 and Redis:
new, updated, stale and invalid records; the item served online seconds later."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import numpy as np
import psycopg
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from feedstore.settings import PROJECT_ROOT, Settings
from ingestion.catalog_stream import RecordConsumer
from ingestion.consumer import Options

from .conftest import env_of
from .test_load import item, lake_versions, user


@pytest.fixture()
def topics(settings: Settings):
    from devtools.stack.kafka import KafkaService
    from feedstore.kafka import admin_client

    tag = uuid.uuid4().hex[:8]
    s = settings.replace(kafka={"topic_items": f"items-{tag}", "topic_users": f"users-{tag}",
                                "topic_dlq": f"dlq-{tag}", "consumer_group": f"g-{tag}", "session_timeout_ms": 6000})
    KafkaService(s).provision()
    yield s
    admin_client(s.kafka.bootstrap).delete_topics([s.kafka.topic_items, s.kafka.topic_users, s.kafka.topic_dlq])


@pytest.fixture(scope="module")
def feast_applied(settings: Settings):
    from feedstore.feast.store import apply, store

    fs = store(settings)
    apply(fs, settings)
    return store(settings)


def send(s: Settings, topic: str, records: list, key: str) -> None:
    producer = Producer({"bootstrap.servers": s.kafka.bootstrap, "enable.idempotence": True})
    for r in records:
        value = r if isinstance(r, bytes) else json.dumps(r).encode()
        producer.produce(topic, value=value, key=str(r[key]).encode() if isinstance(r, dict) else b"x")
    assert producer.flush(30) == 0


def dead_letters(s: Settings) -> list[tuple[bytes, dict]]:
    consumer = Consumer({"bootstrap.servers": s.kafka.bootstrap, "group.id": f"r-{uuid.uuid4().hex}",
                         "enable.partition.eof": True, "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition(s.kafka.topic_dlq, 0, 0)])
    out = []
    while (msg := consumer.poll(10)) is not None and not msg.error():
        out.append((msg.value(), {k: v.decode() for k, v in msg.headers() or []}))
    consumer.close()
    return out


def test_streamed_items_upsert_keep_versions_and_are_served_online(topics, feast_applied, pg):
    s, a, b = topics, 9_500_001, 9_500_002
    send(s, s.kafka.topic_items, [item(a, updated="2025-07-01T00:00:00Z", embedding=1.0), item(b, category="pets"),
                                  {"item_id": "9500003", "creator_id": "1", "media_type": "hologram",
                                   "created_at": "2025-01-01T00:00:00Z"}], "item_id")
    stats = RecordConsumer(s, "items", Options(until_idle=3)).run()
    assert (stats.messages, stats.stored, stats.rejected) == (3, 2, 1)
    send(s, s.kafka.topic_items, [item(a, category="music", updated="2025-08-01T00:00:00Z", embedding=2.0),
                                  item(a, category="news", updated="2025-07-15T00:00:00Z", embedding=3.0)], "item_id")
    stats = RecordConsumer(s, "items", Options(until_idle=3)).run()
    assert (stats.messages, stats.stored) == (2, 1)

    rows = dict(pg.execute("SELECT item_id, category FROM items WHERE item_id = ANY(%s)", ([a, b],)).fetchall())
    assert rows == {a: "music", b: "pets"}, "the stale update (2025-07-15 after 2025-08-01) changed nothing"
    versions = lake_versions(s, {a})
    assert [round(v[2]) for v in versions] == [1, 2], "each accepted version kept, the stale one not"

    letters = dead_letters(s)
    assert len(letters) == 1
    value, headers = letters[0]
    assert headers["reason"] == "bad_vocabulary" and "hologram" in headers["error"]
    assert headers["source_topic"] == s.kafka.topic_items and b"9500003" in value

    online = feast_applied.get_online_features(
        features=["item_catalog_features:category", "item_catalog_features:media_type",
                  "item_embedding:item_embedding"], entity_rows=[{"item_id": a}, {"item_id": b}]).to_dict()
    assert online["category"] == ["music", "pets"]
    vector = np.asarray(online["item_embedding"][0])
    assert vector.shape == (32,) and np.isclose(np.linalg.norm(vector), 1.0)

    again = RecordConsumer(s.replace(kafka={"consumer_group": s.kafka.consumer_group + "-again"}), "items",
                           Options(until_idle=3)).run()
    assert again.stored == 0, "a replay of the whole topic changed rows"
    # Other batch boundaries write other objects; the same version twice is one version to readers.
    assert sorted({(v[1], round(v[2])) for v in lake_versions(s, {a})}) == [(v[1], round(v[2])) for v in versions]


def test_profiles_through_the_cli(topics, pg):
    s, u = topics, 9_600_001
    send(s, s.kafka.topic_users, [user(u, following=("1", "2")),
                                  user(u, country="FR", following=("3",), updated="2025-02-01T00:00:00Z"),
                                  user(u, country="DE", updated="2025-01-01T00:00:00Z"), b"{not json"], "user_id")
    env = {**env_of(s), "FEED_TOPIC_USERS": s.kafka.topic_users, "FEED_TOPIC_ITEMS": s.kafka.topic_items}
    proc = subprocess.run([sys.executable, "-m", "feedstore.cli", "ingest", "--source", "users", "--until-idle", "3"],
                          cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with psycopg.connect(s.postgres.dsn) as conn:
        assert conn.execute("SELECT country FROM users WHERE user_id = %s", (u,)).fetchone() == ("FR",)
        assert conn.execute("SELECT followed_id FROM user_follows WHERE user_id = %s", (u,)).fetchall() == [(3,)]
    assert [h["reason"] for _, h in dead_letters(s)] == ["bad_json"]
