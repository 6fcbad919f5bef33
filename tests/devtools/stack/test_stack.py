"""The stack lifecycle on a second, private stack (own directory and ports), so the shared
one that other tests use keeps running: up, status, down, up again with the data kept."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from shlex import quote

import psycopg
import pytest
import redis
from confluent_kafka import Consumer, Producer

from devtools.demo.audit import skip_to_end
from devtools.stack.tools import require, venv_program
from feedstore.s3 import s3_client
from feedstore.settings import Settings
from tests.conftest import private_stack


@pytest.fixture()
def private_env(stack: Settings) -> Iterator[dict[str, str]]:
    """The environment a user would export for a second stack of their own."""
    with private_stack(stack) as s:
        yield {
            **os.environ,
            "FEED_STACK_DIR": str(s.stack.dir),
            "FEED_POSTGRES_DSN": s.postgres.dsn,
            "FEED_REDIS_URL": s.redis.url,
            "FEED_KAFKA_BOOTSTRAP": s.kafka.bootstrap,
            "FEED_KAFKA_CONTROLLER_PORT": str(s.stack.kafka_controller_port),
            "FEED_S3_ENDPOINT": s.s3.endpoint,
            "FEED_SEAWEEDFS_PORT_BASE": str(s.stack.seaweedfs_port_base),
            "FEED_S3_BUCKET": s.s3.bucket,
        }


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "feedstore.cli", *args], env=env, capture_output=True, text=True, timeout=300
    )


def _write_marks(s: Settings) -> None:
    with psycopg.connect(s.postgres.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE mark (v TEXT)")
        conn.execute("INSERT INTO mark VALUES ('kept')")
    redis.Redis.from_url(s.redis.url).set("mark", "kept")
    s3_client(s).put_object(Bucket=s.s3.bucket, Key="mark", Body=b"kept")
    producer = Producer({"bootstrap.servers": s.kafka.bootstrap})
    producer.produce(s.kafka.topic_activity, key=b"1", value=b"kept")
    assert producer.flush(30) == 0


def _read_marks(s: Settings) -> list[str]:
    with psycopg.connect(s.postgres.dsn) as conn:
        pg = conn.execute("SELECT v FROM mark").fetchone()[0]
    rd = redis.Redis.from_url(s.redis.url).get("mark").decode()
    s3 = s3_client(s).get_object(Bucket=s.s3.bucket, Key="mark")["Body"].read().decode()
    consumer = Consumer({"bootstrap.servers": s.kafka.bootstrap, "group.id": "marks",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([s.kafka.topic_activity])
    kafka = None
    for _ in range(60):
        msg = consumer.poll(1.0)
        if msg is not None and not msg.error():
            kafka = msg.value().decode()
            break
    consumer.close()
    return [pg, rd, s3, kafka]


def test_up_status_down_up_keeps_data(private_env, monkeypatch):
    for name, value in private_env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    try:
        up = _cli(private_env, "stack", "up")
        assert up.returncode == 0, up.stderr
        # A broker that has just started may still be electing its group coordinator.
        assert skip_to_end(settings, settings.kafka.topic_activity, "fresh-group") == dict.fromkeys(
            range(settings.kafka.topic_partitions), 0)
        status = _cli(private_env, "stack", "status")
        assert status.returncode == 0, status.stdout + status.stderr
        assert status.stdout.count(" up ") == 4

        again = _cli(private_env, "stack", "up")
        assert again.returncode == 0 and again.stderr.count("already running") == 4

        _write_marks(settings)

        down = _cli(private_env, "stack", "down")
        assert down.returncode == 0, down.stderr
        status = _cli(private_env, "stack", "status")
        assert status.returncode == 1
        assert status.stdout.count(" down ") == 4

        assert _cli(private_env, "stack", "up").returncode == 0
        assert _read_marks(settings) == ["kept"] * 4
    finally:
        _cli(private_env, "stack", "down")


def test_env_lines_reach_the_stack(settings):
    """`eval "$(feedstore stack env)"` gives psql, redis-cli, kcat and boto3 what they need."""
    psql, redis_cli, kcat = (quote(require(name)) for name in ("psql", "redis-cli", "kcat"))
    script = (
        f'eval "$({quote(venv_program("feedstore"))} stack env)" && {psql} -tAc "select 1" && {redis_cli} --no-auth-warning -u "$FEED_REDIS_URL" ping && '
        f'{kcat} -L -t "$FEED_TOPIC_ACTIVITY" | grep -c "partition [0-9]" && '
        f'{sys.executable} -c "import boto3; print(len(boto3.client(\'s3\').list_buckets()[\'Buckets\']) > 0)" && '
        'echo "$FEED_TOPIC_DLQ" "$FEED_CONSUMER_GROUP" "$FEED_TOPIC_PARTITIONS"'
    )
    out = subprocess.run([require("bash"), "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    k = settings.kafka
    assert out.stdout.split() == ["1", "PONG", str(k.topic_partitions), "True", k.topic_dlq, k.consumer_group,
                                  str(k.topic_partitions)]


@pytest.mark.parametrize("columns", ["60", "80"])
def test_status_shows_whole_endpoints_at_any_width(settings, columns):
    from devtools.stack import services

    out = subprocess.run([venv_program("feedstore"), "stack", "status"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "COLUMNS": columns})
    assert out.returncode == 0, out.stderr
    for service in services(settings):
        assert service.endpoint() in out.stdout and str(service.log_file) in out.stdout
