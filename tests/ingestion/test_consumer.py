"""The consumer against the real stack: exact results end to end, crash safety under SIGKILL,
and several consumers sharing a group."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections import Counter

import psycopg
import redis

from devtools.synthetic.defects import inject_defects
from feedstore.contract.rules import DLQ_MAX_VALUE_BYTES, Reason
from ingestion.consumer import IngestConsumer, Options
from ingestion.metrics import IngestMetrics
from tests.ingestion.conftest import (
    env_of,
    expected_valid_ids,
    landed_event_ids,
    produce,
    read_dlq,
    stored_event_ids,
    valid_lines,
)

UNKNOWN = 999_999


def _labelled(n: int, seed: int) -> tuple[list[bytes], list]:
    return inject_defects(valid_lines(n, seed=seed), copies=1, duplicates=40, unknown_user_id=UNKNOWN,
                          unknown_item_id=UNKNOWN, seed=seed)


def _assert_stores_exact(s, lines, reasons) -> None:
    want = expected_valid_ids(lines, reasons)
    stored = stored_event_ids(s)
    assert len(stored) == len(set(stored)), "an event is doubled in Postgres"
    assert set(stored) == want
    assert set(landed_event_ids(s)) == want


def test_end_to_end(ingest_settings):
    s = ingest_settings
    lines, reasons = _labelled(30_000, seed=11)
    produce(s, lines)
    metrics = IngestMetrics()
    stats = IngestConsumer(s, Options(until_idle=3), metrics).run()

    _assert_stores_exact(s, lines, reasons)
    # A dead letter carries the message's first DLQ_MAX_VALUE_BYTES (the rest stays at its source offset).
    refused = Counter((line[:DLQ_MAX_VALUE_BYTES], str(r)) for line, r in zip(lines, reasons)
                      if r not in (None, Reason.DUPLICATE))
    dlq = read_dlq(s)
    assert Counter((value, headers["reason"]) for value, headers in dlq) == refused
    assert all(headers["source_topic"] == s.kafka.topic_activity and int(headers["source_offset"]) >= 0
               and 0 <= int(headers["source_partition"]) < s.kafka.topic_partitions for _, headers in dlq)
    assert stats.rejected == sum(refused.values())
    assert stats.stored == len(expected_valid_ids(lines, reasons))
    for reason in {r for _, r in refused}:
        got = metrics.registry.get_sample_value("feedstore_ingest_validation_failures_total", {"reason": reason})
        assert got == sum(n for (_, r), n in refused.items() if r == reason)

    with psycopg.connect(s.postgres.dsn) as conn:
        per_user = conn.execute(
            "SELECT user_id, count(*), count(*) FILTER (WHERE event_type = 'like'), max(\"timestamp\") "
            "FROM user_activity GROUP BY user_id ORDER BY user_id LIMIT 20").fetchall()
    r = redis.Redis.from_url(s.redis.url)
    for user_id, total, likes, _ in per_user:
        counters = r.hgetall(f"user:{user_id}")
        assert int(counters[b"total_events"]) == total
        assert int(counters.get(b"total_likes", 0)) == likes
        assert 0 < r.ttl(f"user:{user_id}") <= 3600


def _spawn(s, instance: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "feedstore.cli", "ingest", "--until-idle", "4", "--instance-id", instance]
    return subprocess.Popen(cmd, env=env_of(s), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_assigned(proc: subprocess.Popen, timeout: float = 60) -> bool:
    """Reads the consumer's log until it owns partitions (stderr keeps draining afterwards)."""
    import threading

    assigned = threading.Event()

    def drain() -> None:
        for line in proc.stderr:
            if b'"partitions_assigned"' in line and b'"partitions": []' not in line:
                assigned.set()

    threading.Thread(target=drain, daemon=True).start()
    return assigned.wait(timeout)


def test_sigkill_at_random_moments_loses_and_doubles_nothing(ingest_settings):
    s = ingest_settings.replace(ingest={"batch_size": 200})
    lines, reasons = _labelled(40_000, seed=12)
    produce(s, lines)
    total = len(expected_valid_ids(lines, reasons))
    rng = random.Random(12)
    progress = []
    for _ in range(10):
        proc = _spawn(s, "crash-test")
        assert _wait_assigned(proc), "the consumer never got its partitions"
        time.sleep(rng.uniform(0.2, 1.2))
        assert proc.poll() is None, "the consumer finished before it could be killed; use more events"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        progress.append(len(stored_event_ids(s)))
    assert len(set(progress)) >= 3 and progress[-1] < total, \
        f"kills did not land mid-run: stored counts after each kill {progress}"
    final = _spawn(s, "crash-test")
    _, err = final.communicate(timeout=240)
    assert final.returncode == 0, err.decode()[-2000:]
    _assert_stores_exact(s, lines, reasons)


def test_sigterm_stops_cleanly(ingest_settings):
    s = ingest_settings
    produce(s, valid_lines(200, seed=13))
    proc = subprocess.Popen([sys.executable, "-m", "feedstore.cli", "ingest"], env=env_of(s),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while len(stored_event_ids(s)) < 200 and time.monotonic() < deadline:
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert b"ingest_stopped" in err and b"Traceback" not in err


def test_consumers_in_one_group_share_the_partitions(ingest_settings):
    s = ingest_settings.replace(ingest={"batch_size": 1000})
    lines, reasons = _labelled(12_000, seed=14)
    produce(s, lines)
    procs = [subprocess.Popen([sys.executable, "-m", "feedstore.cli", "ingest", "--until-idle", "5"],
                              env=env_of(s), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for _ in range(2)]
    errs = [p.communicate(timeout=240)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    owners = [{int(x) for line in e.splitlines() if '"partitions_assigned"' in line
               for x in __import__("json").loads(line)["partitions"]} for e in errs]
    assert all(owners), f"one consumer never got a partition: {owners}"
    _assert_stores_exact(s, lines, reasons)
    refused = Counter(str(r) for r in reasons if r not in (None, Reason.DUPLICATE))
    assert Counter(h["reason"] for _, h in read_dlq(s)) == refused


def test_an_event_outside_the_partition_window_is_dead_lettered_and_the_batch_goes_on(ingest_settings):
    """A day the consumer's role may not create a partition for (migration 008's window, here from
    settings.postgres) is one message's problem: it goes to the DLQ, the rest is stored. Under
    --replay too, where the age bound would otherwise let a 61-day-old event through to Postgres."""
    import json
    from datetime import datetime, timedelta, timezone

    from ingestion.events import format_timestamp

    s = ingest_settings
    now = datetime.now(timezone.utc)
    lines = valid_lines(200, seed=5)
    outside = []
    for k, days in enumerate((-(s.postgres.partition_days_back + 1), s.postgres.partition_days_ahead + 1)):
        event = json.loads(lines[k])
        event["timestamp"] = format_timestamp(now + timedelta(days=days))
        outside.append(json.dumps(event, separators=(",", ":")).encode())
    inside = json.loads(lines[2])
    inside["timestamp"] = format_timestamp(now - timedelta(days=s.postgres.partition_days_back - 1))
    lines = [*outside, json.dumps(inside, separators=(",", ":")).encode(), *lines[3:]]
    produce(s, lines)
    stats = IngestConsumer(s, Options(until_idle=3, replay=True), IngestMetrics()).run()

    reasons = [Reason.OUTSIDE_PARTITION_WINDOW] * 2 + [None] * (len(lines) - 2)
    # The past one is outside the window; the one past the window ahead is beyond the future bound first.
    assert sorted(headers["reason"] for _, headers in read_dlq(s)) == ["in_future", "outside_partition_window"]
    assert sorted(value for value, _ in read_dlq(s)) == sorted(outside)
    assert stats.rejected == 2 and stats.stored == len(lines) - 2
    _assert_stores_exact(s, lines, reasons)
