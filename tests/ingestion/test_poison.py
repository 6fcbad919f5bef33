"""No message can stop ingestion: pills built to break the parser, a message at the broker's
limit and an exception injected into validation, on every partition, ahead of valid events.
The valid events land, each pill is dead-lettered with its reason, the consumer keeps going."""

from __future__ import annotations

from confluent_kafka import Producer

from feedstore.contract.rules import DLQ_MAX_VALUE_BYTES
from ingestion.consumer import IngestConsumer, Options
from ingestion.validation import Validator
from tests.ingestion.conftest import produce, read_dlq, stored_event_ids, valid_lines

DEEP_ARRAY = b"[" * 1000 + b"]" * 1000
DEEP_OBJECT = b'{"a":' * 1000 + b"1" + b"}" * 1000
AT_THE_LIMIT = b'{"user_id": "1", "pad": "' + b"x" * (16 * 1024 * 1024 - 4096) + b'"}'
BOOM = b'{"inject": "an exception in validation"}'
PILLS = {DEEP_ARRAY: "bad_json", DEEP_OBJECT: "bad_json", AT_THE_LIMIT: "too_large", BOOM: "internal_error"}


def _produce_pills(s, partitions: int) -> None:
    producer = Producer({"bootstrap.servers": s.kafka.bootstrap, "message.max.bytes": 16 * 1024 * 1024})
    for partition in range(partitions):
        for pill in PILLS:
            producer.produce(s.kafka.topic_activity, value=pill, partition=partition)
            producer.poll(0)
    assert producer.flush(60) == 0


def test_pills_are_dead_lettered_and_the_events_behind_them_land(ingest_settings, monkeypatch):
    s = ingest_settings
    original = Validator._check_one

    def faulty(payload, decode):
        if payload == BOOM:
            raise RuntimeError("injected")
        return original(payload, decode)

    monkeypatch.setattr(Validator, "_check_one", staticmethod(faulty))
    _produce_pills(s, s.kafka.topic_partitions)
    lines = valid_lines(400, seed=17)
    produce(s, lines)

    stats = IngestConsumer(s, Options(until_idle=3)).run()

    assert stats.stored == len(lines)
    assert len(stored_event_ids(s)) == len(lines)
    letters = read_dlq(s)
    assert sorted((h["reason"], int(h["source_partition"])) for _, h in letters) == sorted(
        (reason, p) for p in range(s.kafka.topic_partitions) for reason in PILLS.values())
    for value, headers in letters:
        if headers["reason"] == "too_large":
            assert len(value) == DLQ_MAX_VALUE_BYTES and headers["truncated"] == "true"
            assert int(headers["original_size"]) == len(AT_THE_LIMIT)
        elif headers["reason"] == "internal_error":
            assert value == BOOM and headers["error"] == "RuntimeError"
        else:
            assert value in (DEEP_ARRAY, DEEP_OBJECT)


def test_a_backlog_older_than_the_bound_by_the_consumers_clock_lands(ingest_settings):
    """Events fresh when they reached Kafka, consumed after an 'outage' longer than the age bound."""
    import time

    s = ingest_settings.replace(ingest={"max_event_age_seconds": 3})
    lines = valid_lines(300, seed=23, spread_seconds=1)
    produce(s, lines)
    time.sleep(5)  # the outage: every event is now older than the bound by the consumer's clock
    stats = IngestConsumer(s, Options(until_idle=3)).run()
    assert stats.rejected == 0 and stats.stored == len(lines)
    assert len(stored_event_ids(s)) == len(lines)
