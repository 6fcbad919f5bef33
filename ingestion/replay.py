"""``feedstore dlq replay``: dead letters sent back to the topic they came from, after a fix (the
missing item loaded, the vocabulary extended), effectively once.

The DLQ is read from ``--since`` (or its start) up to its end as the replay begins; each letter
that matches ``--reason`` and was not replayed before (``dlq_replays`` in Postgres) is produced,
byte for byte with its key, to its ``source_topic`` (the retry topic's letters to the activity
topic), and recorded once acknowledged. Cut letters (``truncated``) are not replayed: the whole
message is at its source offset.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

from feedstore.db import connect
from feedstore.logs import get_logger
from feedstore.settings import Settings, get_settings

log = get_logger("feedstore.replay")
CHUNK = 1_000


class ReplayError(RuntimeError):
    """The DLQ or a target topic cannot be reached; nothing unacknowledged was recorded."""


@dataclass
class ReplaySummary:
    scanned: int = 0
    replayed: int = 0
    already: int = 0
    other_reason: int = 0
    truncated: int = 0
    unknown_source: int = 0
    by_topic: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _targets(s: Settings) -> dict[str, str]:
    k = s.kafka
    return {k.topic_activity: k.topic_activity, k.topic_retry: k.topic_activity, k.topic_items: k.topic_items,
            k.topic_users: k.topic_users}


def _ranges(consumer: Consumer, topic: str, since: datetime | None) -> dict[int, tuple[int, int]]:
    """Per partition, [first, end) to read: from ``since`` (or the start) to the end as of now."""
    meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
    if meta is None or meta.error is not None:
        raise ReplayError(f"dead-letter topic {topic!r} not found")
    parts = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(meta.partitions)]
    if since is not None:
        parts = consumer.offsets_for_times(
            [TopicPartition(topic, p.partition, int(since.timestamp() * 1000)) for p in parts], timeout=10)
    out = {}
    for p in parts:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p.partition), timeout=10)
        first = low if p.offset == OFFSET_BEGINNING else p.offset
        if 0 <= first < high:
            out[p.partition] = (max(first, low), high)
    return out


def _done(conn: psycopg.Connection, topic: str) -> set[tuple[int, int]]:
    rows = conn.execute("SELECT dlq_partition, dlq_offset FROM dlq_replays WHERE dlq_topic = %s", (topic,))
    return {(p, o) for p, o in rows}


def _record(conn: psycopg.Connection, topic: str, rows: list[tuple[int, int, str, str]]) -> None:
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany("INSERT INTO dlq_replays (dlq_topic, dlq_partition, dlq_offset, source_topic, reason) "
                        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                        [(topic, p, o, src, reason) for p, o, src, reason in rows])


def replay(settings: Settings | None = None, reason: str | None = None, since: datetime | None = None,
           progress: Callable[[int], None] | None = None) -> ReplaySummary:
    s = (settings or get_settings()).as_component("ingest")  # dead letters go back into ingestion
    topic, targets, summary = s.kafka.topic_dlq, _targets(s), ReplaySummary()
    consumer = Consumer({"bootstrap.servers": s.kafka.bootstrap, "group.id": "feedstore-dlq-replay",
                         "enable.auto.commit": False, "enable.partition.eof": True, "log_level": 3})
    producer = Producer({"bootstrap.servers": s.kafka.bootstrap, "enable.idempotence": True, "acks": "all",
                         "message.max.bytes": s.kafka.message_max_bytes, "log_level": 3})
    try:
        with connect(s) as conn:
            conn.autocommit = True
            done = _done(conn, topic)
            ranges = _ranges(consumer, topic, since)
            if ranges:
                consumer.assign([TopicPartition(topic, p, first) for p, (first, _) in ranges.items()])
            left = set(ranges)
            pending: list[tuple[int, int, str, str]] = []
            failed: list[str] = []

            def report(err, _msg) -> None:
                if err is not None:
                    failed.append(err.str())

            while left:
                msg = consumer.poll(10)
                if msg is None:
                    raise ReplayError(f"reading {topic} timed out")
                if msg.error() or msg.partition() not in left:
                    continue
                if msg.offset() >= ranges[msg.partition()][1] - 1:
                    left.discard(msg.partition())
                if msg.offset() >= ranges[msg.partition()][1]:
                    continue
                summary.scanned += 1
                headers = {k: (v or b"").decode("utf-8", "replace") for k, v in msg.headers() or []}
                letter_reason, source = headers.get("reason", ""), headers.get("source_topic", "")
                if reason is not None and letter_reason != reason:
                    summary.other_reason += 1
                elif (msg.partition(), msg.offset()) in done:
                    summary.already += 1
                elif headers.get("truncated") == "true":
                    summary.truncated += 1
                elif source not in targets:
                    summary.unknown_source += 1
                else:
                    target = targets[source]
                    producer.produce(target, value=msg.value(), key=msg.key(), on_delivery=report)
                    pending.append((msg.partition(), msg.offset(), source, letter_reason))
                    summary.by_topic[target] = summary.by_topic.get(target, 0) + 1
                    if len(pending) >= CHUNK:
                        _flush(producer, conn, topic, pending, summary, failed)
                if progress:
                    progress(summary.scanned)
            _flush(producer, conn, topic, pending, summary, failed)
    except KafkaException as exc:
        raise ReplayError(f"kafka: {exc}") from exc
    finally:
        consumer.close()
    log.info("dlq_replayed", **summary.as_dict())
    return summary


def _flush(producer: Producer, conn: psycopg.Connection, topic: str, pending: list, summary: ReplaySummary,
           failed: list[str]) -> None:
    """Waits for every re-send, then records them; nothing unacknowledged is recorded."""
    if not pending:
        return
    if producer.flush(60) != 0 or failed:
        raise ReplayError(f"re-sent letters not acknowledged ({failed[0] if failed else 'timeout'}); "
                          "run the replay again")
    _record(conn, topic, pending)
    summary.replayed += len(pending)
    pending.clear()
