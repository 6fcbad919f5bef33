"""Refused messages go to the dead-letter topic byte for byte, with why and where from in headers."""

from __future__ import annotations

from collections.abc import Sequence

from confluent_kafka import KafkaError, KafkaException, Producer

from feedstore.settings import Settings
from ingestion.sinks.base import BatchingSink, DeadLetter, PermanentSinkError, SinkBatch, StoreUnavailable

# Room for headers on top of the largest message the broker takes.
PRODUCER_MAX_BYTES_HEADROOM = 64 * 1024
# Errors that waiting does not cure: the letter (or the topic) is refused as such.
PERMANENT = {KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_MSG_SIZE, KafkaError.INVALID_RECORD,
             KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED, KafkaError.TOPIC_EXCEPTION}


class DlqSink(BatchingSink):
    """An idempotent producer. A letter is durable once acknowledged with ``acks=all``; when
    any letter of a batch is left unacknowledged the stage fails and its retry resends the
    batch's letters (acknowledged ones included, so the DLQ is at-least-once)."""

    name = "dlq"

    def __init__(self, settings: Settings, flush_timeout: float = 30.0) -> None:
        self.settings = settings
        self.flush_timeout = flush_timeout
        self.last_error: str | None = None
        self.permanent = False
        self._producer = Producer({
            "bootstrap.servers": settings.kafka.bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 20,
            "compression.type": "zstd",
            "message.max.bytes": settings.kafka.message_max_bytes + PRODUCER_MAX_BYTES_HEADROOM,
            "log_level": 0,  # librdkafka's per-connection lines; the consumer reports an outage once
        })

    def write(self, batch: SinkBatch) -> None:
        if not batch.letters:
            return
        left = self.send(batch.letters)
        if left and self.permanent:
            raise PermanentSinkError(self.name, f"the DLQ refuses letters: {self.last_error}")
        if left:
            raise StoreUnavailable(self.name, self.last_error or f"{len(left)} dead letters unacknowledged")

    def send(self, letters: Sequence[DeadLetter]) -> list[DeadLetter]:
        """Sends and waits for acknowledgements; returns the letters still not durable (retry those)."""
        errors: list[KafkaError] = []
        delivered: set[int] = set()
        for i, letter in enumerate(letters):
            def report(err: KafkaError | None, _msg, i: int = i) -> None:
                if err is None:
                    delivered.add(i)
                else:
                    errors.append(err)
            self._produce(letter, report, errors)
        self._producer.flush(self.flush_timeout)
        self.last_error = errors[0].str() if errors else None
        self.permanent = any(e.code() in PERMANENT for e in errors)
        return [letter for i, letter in enumerate(letters) if i not in delivered]

    def _produce(self, letter: DeadLetter, report, errors: list[KafkaError]) -> None:
        while True:
            try:
                self._producer.produce(self.settings.kafka.topic_dlq, value=letter.value, key=letter.key,
                                       headers=letter.headers(), on_delivery=report)
                return
            except BufferError:
                self._producer.poll(0.5)
            except KafkaException as exc:  # refused before it left, e.g. larger than the producer allows
                errors.append(exc.args[0])
                return

    def close(self) -> None:
        self._producer.flush(self.flush_timeout)
