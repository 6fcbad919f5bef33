"""Putting bytes on the activity topic: batched, with every delivery confirmed and counted.

``produce_file`` replays a JSON-lines file as it is, malformed lines included, because its
use is to feed the consumer exactly what a misbehaving client would send; parsing only
chooses the key (the user id, so one user's events stay in order on one partition).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import KafkaException, Producer
from prometheus_client import Counter as PromCounter

from feedstore.logs import get_logger
from feedstore.settings import Settings, get_settings

log = get_logger(__name__)

MESSAGES = PromCounter("feedstore_producer_messages_total", "Messages handed to Kafka, by outcome", ["outcome"])

FLUSH_TIMEOUT_S = 120
POLL_EVERY = 5_000


class ProducerError(RuntimeError):
    """The topic or broker cannot take messages; the message says which."""


@dataclass
class DeliveryReport:
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    keyed: int = 0
    bytes: int = 0
    errors: Counter = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.delivered == self.sent


def producer_config(settings: Settings | None = None) -> dict:
    s = settings or get_settings()
    return {
        "bootstrap.servers": s.kafka.bootstrap,
        "enable.idempotence": True,  # acks=all, no duplicates or reordering on retry
        "linger.ms": 20,
        "compression.type": "lz4",
        "message.max.bytes": s.kafka.message_max_bytes,
        "partitioner": "murmur2_random",  # same key → partition mapping as Java clients
        "log_level": 0,  # librdkafka's per-connection lines; failed deliveries are counted and reported
    }


def make_producer(settings: Settings | None = None) -> Producer:
    return Producer(producer_config(settings))


def check_topic(topic: str, settings: Settings | None = None, timeout: float = 10) -> int:
    """Number of partitions of ``topic``; raises when the broker is down or the topic is missing."""
    s = settings or get_settings()
    from feedstore.kafka import admin_client

    try:
        metadata = admin_client(s.kafka.bootstrap).list_topics(topic=topic, timeout=timeout)
    except KafkaException as exc:
        raise ProducerError(f"kafka at {s.kafka.bootstrap} is not answering: {exc}") from exc
    info = metadata.topics.get(topic)
    if info is None or info.error is not None:
        raise ProducerError(f"topic {topic!r} does not exist on {s.kafka.bootstrap}")
    return len(info.partitions)


def send(producer: Producer, topic: str, messages: Iterable[tuple[bytes | None, bytes]],
         on_sent: Callable[[int], None] | None = None) -> DeliveryReport:
    """Produce every (key, value), then wait for each delivery report.

    A message the client refuses outright (e.g. larger than ``message.max.bytes``) counts as
    failed; the rest still go.
    """
    report = DeliveryReport()

    def delivered(err, _msg) -> None:
        if err is None:
            report.delivered += 1
        else:
            report.failed += 1
            report.errors[err.name()] += 1

    for key, value in messages:
        report.sent += 1
        report.bytes += len(value)
        report.keyed += key is not None
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
            except KafkaException as exc:
                report.failed += 1
                report.errors[exc.args[0].name()] += 1
                break
        if report.sent % POLL_EVERY == 0:
            producer.poll(0)
            if on_sent:
                on_sent(report.sent)
    undelivered = producer.flush(FLUSH_TIMEOUT_S)
    if undelivered:
        report.failed += undelivered
        report.errors["_FLUSH_TIMEOUT"] += undelivered
    if on_sent:
        on_sent(report.sent)
    MESSAGES.labels("delivered").inc(report.delivered)
    MESSAGES.labels("failed").inc(report.failed)
    log.info("produced", topic=topic, sent=report.sent, delivered=report.delivered, failed=report.failed,
             errors=dict(report.errors))
    return report


def key_for_line(line: bytes) -> bytes | None:
    """The user id of a line that is a JSON object with one (string or integer), else no key."""
    try:
        obj = json.loads(line)
    except ValueError:  # includes JSONDecodeError and UnicodeDecodeError
        return None
    if not isinstance(obj, dict):
        return None
    user_id = obj.get("user_id")
    if isinstance(user_id, str):
        return user_id.encode()
    if isinstance(user_id, int) and not isinstance(user_id, bool):
        return str(user_id).encode()
    return None


def iter_lines(path: Path, on_bytes: Callable[[int], None] | None = None) -> Iterator[tuple[bytes | None, bytes]]:
    """(key, line) per line of the file; the line is sent as read, without its ``\\n``."""
    with open(path, "rb") as fh:
        for raw in fh:
            if on_bytes:
                on_bytes(len(raw))
            line = raw[:-1] if raw.endswith(b"\n") else raw
            yield key_for_line(line), line


def produce_file(path: Path, topic: str | None = None, settings: Settings | None = None,
                 on_bytes: Callable[[int], None] | None = None) -> DeliveryReport:
    s = settings or get_settings()
    topic = topic or s.kafka.topic_activity
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    check_topic(topic, s)
    return send(make_producer(s), topic, iter_lines(path, on_bytes))
