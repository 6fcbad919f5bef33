"""Ordering between topics: an event for an item that has not landed yet waits for it (the retry
topic) and lands once it has; one whose item never comes is dead-lettered as unknown_item after
the grace window. Through ``feedstore ingest`` and the real Kafka and Postgres."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timezone

import psycopg
import pytest
from confluent_kafka import Producer

from feedstore.settings import PROJECT_ROOT, Settings
from ingestion.events import format_timestamp

from .conftest import USER_IDS, env_of, read_dlq
from .test_load import item

X, Y, Z = 9_800_001, 9_800_002, 9_800_003


@pytest.fixture()
def ordered(catalog: Settings):
    from devtools.stack.kafka import KafkaService
    from feedstore.kafka import admin_client

    tag = uuid.uuid4().hex[:8]
    names = {f"topic_{t}": f"{t}-{tag}" for t in ("activity", "dlq", "items", "users", "retry")}
    s = catalog.replace(kafka={**names, "consumer_group": f"order-{tag}", "session_timeout_ms": 6000},
                        ingest={"sources": "activity,items", "unknown_grace_seconds": 12,
                                "unknown_recheck_seconds": 1.0})
    KafkaService(s).provision()
    yield s
    admin_client(s.kafka.bootstrap).delete_topics(list(names.values()))


def event(item_id: int, n: int) -> bytes:
    return json.dumps({"user_id": str(int(USER_IDS[n])), "item_id": str(item_id), "event_type": "like",
                       "timestamp": format_timestamp(datetime.now(timezone.utc)), "event_id": str(uuid.uuid4())}).encode()


def test_an_event_waits_for_its_item_then_lands_and_an_orphan_is_dead_lettered(ordered):
    s = ordered
    producer = Producer({"bootstrap.servers": s.kafka.bootstrap})
    # X and its event at the same moment; Y's event now, Y itself a few seconds later; Z never.
    producer.produce(s.kafka.topic_items, json.dumps(item(X)).encode(), key=str(X).encode())
    for n, i in enumerate((X, Y, Z)):
        producer.produce(s.kafka.topic_activity, event(i, n), key=b"u")
    assert producer.flush(30) == 0
    proc = subprocess.Popen([sys.executable, "-m", "feedstore.cli", "ingest", "--until-idle", "6"],
                            cwd=PROJECT_ROOT, env={**env_of(s), "FEED_INGEST_CATALOG_ONLINE": "false"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err: list[bytes] = []
    reader = threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True)
    reader.start()
    time.sleep(4)
    producer.produce(s.kafka.topic_items, json.dumps(item(Y)).encode(), key=str(Y).encode())
    assert producer.flush(30) == 0
    assert proc.wait(timeout=180) == 0
    reader.join(5)
    with psycopg.connect(s.postgres.dsn) as conn:
        landed = {r[0] for r in conn.execute("SELECT item_id FROM user_activity WHERE item_id = ANY(%s)",
                                             ([X, Y, Z],))}
    assert landed == {X, Y}, b"".join(err).decode()[-3000:]
    letters = read_dlq(s)
    assert [(h["reason"], json.loads(v)["item_id"]) for v, h in letters] == [("unknown_item", str(Z))]


def test_dlq_replay_after_the_fix_lands_each_letter_once(ordered, tmp_path):
    s = ordered.replace(ingest={"sources": "activity", "unknown_grace_seconds": 0})
    env = {**env_of(s), "FEED_INGEST_CATALOG_ONLINE": "false"}
    producer = Producer({"bootstrap.servers": s.kafka.bootstrap})
    producer.produce(s.kafka.topic_activity, event(Z, 0), key=b"u")
    producer.produce(s.kafka.topic_activity, b"{broken", key=b"u")
    assert producer.flush(30) == 0

    def ingest() -> None:
        proc = subprocess.run([sys.executable, "-m", "feedstore.cli", "ingest", "--until-idle", "3"], cwd=PROJECT_ROOT,
                              env=env, capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, proc.stderr[-2000:]

    def replay(*args: str) -> dict:
        proc = subprocess.run([sys.executable, "-m", "feedstore.cli", "dlq", "replay", *args, "--json"],
                              cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def landed() -> int:
        with psycopg.connect(s.postgres.dsn) as conn:
            return conn.execute("SELECT count(*) FROM user_activity WHERE item_id = %s", (Z,)).fetchone()[0]

    ingest()
    assert sorted(h["reason"] for _, h in read_dlq(s)) == ["bad_json", "unknown_item"] and landed() == 0
    path = tmp_path / "z.jsonl"
    path.write_text(json.dumps(item(Z)) + "\n")
    from ingestion.load import load

    assert load("items", [path], tmp_path / "rejects", s).rejected == 0
    first = replay("--reason", "unknown_item")
    assert (first["replayed"], first["other_reason"]) == (1, 1)
    assert replay("--reason", "unknown_item")["already"] == 1, "a second replay sent the letter again"
    ingest()
    assert landed() == 1
    assert sorted(h["reason"] for _, h in read_dlq(s)) == ["bad_json", "unknown_item"], "nothing new refused"

    bad = subprocess.run([sys.executable, "-m", "feedstore.cli", "dlq", "replay", "--reason", "nonsense"],
                         cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "not a DLQ reason" in bad.stderr and "Traceback" not in bad.stderr
