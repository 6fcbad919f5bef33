"""Ordering between topics: an event for a user or item that has not arrived yet waits for it.

The activity consumer does not dead-letter ``unknown_user``/``unknown_item`` at once: such an
event goes to the retry topic (``FEED_TOPIC_RETRY``, CreateTime, stamped with the event's first
arrival) with a ``recheck_after`` header. The retry consumer reads it when due, validates it
again against the catalog (the item or profile may have landed meanwhile) and lands it in every
store like any event; one still unknown is deferred again until the grace window
(``FEED_INGEST_UNKNOWN_GRACE_SECONDS``, 10 minutes) since its first arrival has passed, then
dead-lettered with its reason. Effectively once: a deferred event is produced to the retry
topic before the source offset is committed (a crash re-defers it, and Postgres's event-id
dedup makes a double land once).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from confluent_kafka import KafkaError, Message

from feedstore.contract.rules import Reason
from feedstore.logs import get_logger
from feedstore.settings import Settings
from ingestion.consumer import IngestConsumer, Options, default_stages
from ingestion.metrics import IngestMetrics
from ingestion.processing import Stage
from ingestion.sinks.base import DeadLetter, PermanentSinkError, SinkBatch, StoreUnavailable
from ingestion.sinks.dlq import PERMANENT, DlqSink

log = get_logger("feedstore.ingest")
WAITING = frozenset({str(Reason.UNKNOWN_USER), str(Reason.UNKNOWN_ITEM)})
RECHECK_HEADER = "recheck_after_ms"


class DeferringDlqSink(DlqSink):
    """The DLQ stage, except that unknown-id letters younger than the grace window go to the
    retry topic (same value and key, first-arrival timestamp, ``recheck_after_ms``)."""

    def __init__(self, settings: Settings, clock=time.time) -> None:
        super().__init__(settings)
        self.clock = clock
        self.deferred = 0

    def split(self, letters: Sequence[DeadLetter]) -> tuple[list[tuple[DeadLetter, int]], list[DeadLetter]]:
        now_ms = int(self.clock() * 1000)
        grace_ms = self.settings.ingest.unknown_grace_seconds * 1000
        arrived = [letter.arrived_ms for letter in letters]  # each letter's own: batches overlap
        wait, dead = [], []
        for letter, first in zip(letters, arrived):
            if letter.reason in WAITING and first > 0 and now_ms - first < grace_ms and not letter.truncated:
                wait.append((letter, first))
            else:
                dead.append(letter)
        return wait, dead

    def write(self, batch: SinkBatch) -> None:
        if not batch.letters:
            return
        wait, dead = self.split(batch.letters)
        if wait:
            self._defer(wait)
        if dead:
            left = self.send(dead)
            if left and self.permanent:
                raise PermanentSinkError(self.name, f"the DLQ refuses letters: {self.last_error}")
            if left:
                raise StoreUnavailable(self.name, self.last_error or f"{len(left)} dead letters unacknowledged")
        self.deferred += len(wait)

    def _defer(self, letters: list[tuple[DeadLetter, int]]) -> None:
        errors: list[KafkaError] = []
        recheck = str(int((self.clock() + self.settings.ingest.unknown_recheck_seconds) * 1000)).encode()

        def report(err: KafkaError | None, _msg) -> None:
            if err is not None:
                errors.append(err)

        for letter, first in letters:
            headers = [("reason", letter.reason.encode()), (RECHECK_HEADER, recheck)]
            while True:
                try:
                    self._producer.produce(self.settings.kafka.topic_retry, value=letter.value, key=letter.key,
                                           timestamp=first, headers=headers, on_delivery=report)
                    break
                except BufferError:
                    self._producer.poll(0.5)
        left = self._producer.flush(self.flush_timeout)
        if errors or left:
            kind = PermanentSinkError if any(e.code() in PERMANENT for e in errors) else StoreUnavailable
            raise kind(self.name, errors[0].str() if errors else f"{left} deferred events unacknowledged")


def deferring_stages(settings: Settings) -> list[Stage]:
    """Today's activity stages with the deferring DLQ stage in the DLQ's place."""
    return [Stage(DeferringDlqSink(settings)) if s.name == "dlq" else s for s in default_stages(settings)]


class DeferringConsumer(IngestConsumer):
    """The activity consumer with the grace window (``retry=True``: the retry topic's consumer,
    which also waits until each batch is due)."""

    def __init__(self, settings: Settings, options: Options | None = None, metrics: IngestMetrics | None = None,
                 retry: bool = False) -> None:
        settings = settings.as_component("ingest")  # its sinks too, built before the consumer's own switch
        super().__init__(settings, options, metrics, stages=deferring_stages(settings))
        self.retry = retry
        if retry:
            self.topic = settings.kafka.topic_retry

    def _kafka_config(self) -> dict:
        conf = super()._kafka_config()
        if self.retry:
            conf["group.id"] = f"{self.settings.kafka.consumer_group}-retry"
        return conf

    def _take(self, messages: list[Message]) -> None:
        if self.retry:
            due = max((_recheck_ms(m) for m in messages), default=0) / 1000
            generation = self._generation
            if due > time.time():
                self._finish_pending()
                self.wait(due - time.time())
            if self._stop.is_set() or generation != self._generation:
                return  # uncommitted: redelivered from the same offsets
        super()._take(messages)


def _recheck_ms(message: Message) -> int:
    for name, value in message.headers() or []:
        if name == RECHECK_HEADER:
            try:
                return int(value)
            except ValueError:
                return 0
    return 0
