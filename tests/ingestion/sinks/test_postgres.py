"""The warm tier's sink against the real database: a day dropped under a running sink (retention
ran while a replay writes into it) is created again, not retried for ever."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone

import numpy as np
import psycopg

from feedstore.ids import IdIndex
from ingestion.events import format_timestamp
from ingestion.sinks.postgres import PostgresSink
from ingestion.validation import Limits, Validator
from tests.ingestion.conftest import ITEM_IDS, USER_IDS, valid_lines


def parse_timestamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def insert(sink: PostgresSink, table, first_offset: int = 0, topic: str = "t") -> set[str]:
    """The ids the sink accepted for rows at offsets ``first_offset…`` of partition 0."""
    offsets = np.arange(first_offset, first_offset + table.num_rows, dtype=np.int64)
    _, accepted, _ = sink.insert(table, topic, np.zeros(table.num_rows, dtype=np.int64), offsets)
    ids = table.column("event_id").to_pylist()
    return {ids[int(o) - first_offset] for o in accepted}


def test_a_day_dropped_under_the_sink_is_created_again(ingest_settings):
    """On a day of its own, long past: dropping it cannot touch what other tests stored."""
    s = ingest_settings
    day = date.today() - timedelta(days=1000)
    noon = datetime(day.year, day.month, day.day, 12, tzinfo=timezone.utc)
    valid = Validator(IdIndex(USER_IDS).contains, IdIndex(ITEM_IDS).contains, Limits(replay=True)).validate(
        valid_lines(60, seed=31, now=noon, spread_seconds=3600)).valid
    first, second = valid.slice(0, 30), valid.slice(30)
    sink = PostgresSink(s)
    try:
        assert insert(sink, first) == set(first.column("event_id").to_pylist())
        with psycopg.connect(s.postgres.dsn, autocommit=True) as conn:
            dropped = conn.execute("SELECT drop_activity_partitions_before(%s)", (day + timedelta(days=1),)).fetchall()
        assert dropped == [(f"user_activity_p{day:%Y%m%d}",)]
        assert insert(sink, second, 30) == set(second.column("event_id").to_pylist())
        # Past the retention window an id is forgotten with its day.
        assert insert(sink, first.slice(0, 5)) == set(first.slice(0, 5).column("event_id").to_pylist())
    finally:
        sink.close()
    with psycopg.connect(s.postgres.dsn, autocommit=True) as conn:
        stored = [str(r[0]) for r in conn.execute(
            'SELECT event_id FROM user_activity WHERE "timestamp"::date = %s', (day,))]
        conn.execute("SELECT drop_activity_partitions_before(%s)", (day + timedelta(days=1),))
    assert sorted(stored) == sorted(second.column("event_id").to_pylist() + first.slice(0, 5).column("event_id").to_pylist())


def test_one_event_id_is_one_event_whatever_its_timestamp(ingest_settings):
    """A re-send with a corrected timestamp (another day, even) is a duplicate: the first copy wins."""
    s = ingest_settings
    validator = Validator(IdIndex(USER_IDS).contains, IdIndex(ITEM_IDS).contains, Limits(replay=True))
    event = json.loads(valid_lines(1, seed=41, with_event_id_every=1)[0])
    resent = {**event, "timestamp": format_timestamp(parse_timestamp(event["timestamp"]) - timedelta(days=1))}
    first = validator.validate([json.dumps(event).encode()]).valid
    second = validator.validate([json.dumps(resent).encode()]).valid
    sink = PostgresSink(s)
    try:
        assert insert(sink, first) == {event["event_id"]}
        assert insert(sink, second, 1) == set()
    finally:
        sink.close()
    with psycopg.connect(s.postgres.dsn) as conn:
        rows = conn.execute("SELECT event_id::text, \"timestamp\" FROM user_activity").fetchall()
    assert rows == [(event["event_id"], parse_timestamp(event["timestamp"]))]


def test_a_stalled_statement_is_cancelled_and_reported_as_an_outage(ingest_settings):
    """A lock held elsewhere stalls the insert; the consumer's statement timeout turns the stall
    into a transient error (retried with backoff, shown in ``store_up``), not a hang."""
    import threading

    from ingestion.sinks.base import StoreUnavailable

    s = ingest_settings.replace(ingest={"statement_timeout_ms": 300})
    valid = Validator(IdIndex(USER_IDS).contains, IdIndex(ITEM_IDS).contains, Limits(replay=True)).validate(
        valid_lines(10, seed=37)).valid
    sink = PostgresSink(s)
    outcome: list = []
    with psycopg.connect(s.postgres.dsn) as blocker:
        blocker.execute("LOCK TABLE user_activity IN ACCESS EXCLUSIVE MODE")

        def attempt() -> None:
            try:
                outcome.append(insert(sink, valid))
            except StoreUnavailable as exc:
                outcome.append(exc)

        worker = threading.Thread(target=attempt, daemon=True)
        worker.start()
        worker.join(120)  # generous: without the timeout the insert waits for the lock for ever
        assert not worker.is_alive(), "the insert hung behind the lock"
        blocker.rollback()
    try:
        assert isinstance(outcome[0], StoreUnavailable) and "statement timeout" in str(outcome[0])
        assert insert(sink, valid) == set(valid.column("event_id").to_pylist())  # once the lock is gone
    finally:
        sink.close()


def test_a_replayed_message_is_its_own_event_and_a_resend_is_not(ingest_settings):
    """A replay of the same (topic, partition, offset) after the commit (a crash or a lost reply
    before the later tiers) is accepted again, as not stored now; a re-send at another offset of
    the same topic, or the same offset of another topic, is a duplicate."""
    validator = Validator(IdIndex(USER_IDS).contains, IdIndex(ITEM_IDS).contains, Limits(replay=True))
    valid = validator.validate(valid_lines(20, seed=43)).valid
    ids = set(valid.column("event_id").to_pylist())
    sink = PostgresSink(ingest_settings)
    try:
        partitions = np.zeros(20, dtype=np.int64)
        _, offsets, stored = sink.insert(valid, "t", partitions, np.arange(100, 120))
        assert sorted(offsets) == list(range(100, 120)) and stored == 20
        _, offsets, stored = sink.insert(valid, "t", partitions, np.arange(100, 120))
        assert sorted(offsets) == list(range(100, 120)) and stored == 0
        assert insert(sink, valid.slice(5), 105) == set(valid.slice(5).column("event_id").to_pylist())
        assert insert(sink, valid, 200) == set()
        assert insert(sink, valid, 100, topic="other") == set()
    finally:
        sink.close()
    with psycopg.connect(ingest_settings.postgres.dsn) as conn:
        stored = conn.execute("SELECT event_id::text FROM user_activity").fetchall()
    assert sorted(r[0] for r in stored) == sorted(ids)
