from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ingestion.producer import key_for_line
from tests.ingestion.kafka_reading import high_watermarks, read_between

FEEDSTORE = str(Path(sys.executable).parent / "feedstore")


def _produce(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([FEEDSTORE, "produce", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def _event(i: int, user_id: object = None) -> bytes:
    return json.dumps({"user_id": str(i % 7) if user_id is None else user_id, "item_id": str(i), "event_type": "view",
                       "timestamp": "2025-11-15T10:30:00Z", "context": {"session_id": f"s{i}"},
                       "dwell_time_ms": i}).encode()


@pytest.mark.parametrize("line, key", [
    (b'{"user_id": "12345", "item_id": "1"}', b"12345"),
    (b'{"user_id": 42}', b"42"),
    (b'{"user_id": true}', None),
    (b'{"user_id": null}', None),
    (b'{"item_id": "1"}', None),
    (b'["user_id", "1"]', None),
    (b"not json", None),
    (b"\xff\xfe{\"user_id\": \"1\"}", None),
    (b"", None),
])
def test_key_for_line(line, key):
    assert key_for_line(line) == key


def test_produce_round_trip_keeps_every_line_byte_identical(settings, tmp_path):
    big = json.dumps({"user_id": "99", "item_id": "1", "pad": "x" * 2_000_000}).encode()
    lines = [_event(i) for i in range(300)]
    lines[10:10] = [b"not json at all", b"\xff\xfe\x00 invalid utf-8", b'[1, 2, "array"]', b"", big,
                    b'{"user_id": 7, "item_id": "int user"}', b'{"no_user": true}', b"  \t"]
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")

    before = high_watermarks(settings.kafka.bootstrap, settings.kafka.topic_activity)
    done = _produce("--file", str(path))
    assert done.returncode == 0, done.stderr
    assert f"sent {len(lines)} delivered {len(lines)} failed 0" in done.stdout
    after = high_watermarks(settings.kafka.bootstrap, settings.kafka.topic_activity)

    got = read_between(settings.kafka.bootstrap, settings.kafka.topic_activity, before, after)
    received = [m for part in got.values() for m in part]
    assert sorted(m.value() or b"" for m in received) == sorted(lines)
    position = {line: i for i, line in enumerate(lines)}
    for part in got.values():
        order = [position[m.value() or b""] for m in part]
        assert order == sorted(order)  # per partition, file order
    for m in received:
        assert m.key() == key_for_line(m.value() or b"")
    partitions_of_user = {}
    for p, part in got.items():
        for m in part:
            if m.key() is not None:
                partitions_of_user.setdefault(m.key(), set()).add(p)
    assert all(len(ps) == 1 for ps in partitions_of_user.values())


def test_a_message_over_the_limit_fails_alone(settings, tmp_path):
    lines = [_event(1), json.dumps({"user_id": "1", "pad": "y" * 200_000}).encode(), _event(2)]
    path = tmp_path / "oversize.jsonl"
    path.write_bytes(b"\n".join(lines))  # no final newline: the last line still counts
    before = high_watermarks(settings.kafka.bootstrap, settings.kafka.topic_activity)
    done = _produce("--file", str(path), env={"FEED_KAFKA_MESSAGE_MAX_BYTES": "100000"})
    assert done.returncode == 1
    assert "sent 3 delivered 2 failed 1" in done.stdout and "MSG_SIZE_TOO_LARGE" in done.stderr
    after = high_watermarks(settings.kafka.bootstrap, settings.kafka.topic_activity)
    got = read_between(settings.kafka.bootstrap, settings.kafka.topic_activity, before, after)
    assert sorted(m.value() for part in got.values() for m in part) == sorted([lines[0], lines[2]])


def test_produce_to_an_explicit_topic_and_errors(settings, tmp_path):
    path = tmp_path / "one.jsonl"
    path.write_bytes(_event(3) + b"\n")
    before = high_watermarks(settings.kafka.bootstrap, settings.kafka.topic_dlq)
    done = _produce("--file", str(path), "--topic", settings.kafka.topic_dlq)
    assert done.returncode == 0, done.stderr
    got = read_between(settings.kafka.bootstrap, settings.kafka.topic_dlq, before,
                       high_watermarks(settings.kafka.bootstrap, settings.kafka.topic_dlq))
    assert [m.value() for part in got.values() for m in part] == [_event(3)]

    missing = _produce("--file", str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 2 and "no such file" in missing.stderr and "Traceback" not in missing.stderr
    no_topic = _produce("--file", str(path), "--topic", f"{settings.kafka.topic_activity}-absent")
    assert no_topic.returncode == 2 and "does not exist" in no_topic.stderr
