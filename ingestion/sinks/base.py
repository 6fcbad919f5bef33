"""The one contract between the consumer and a store, after Quix Streams' ``BatchingSink``:
a sink takes a whole batch in ``write`` and says with the error it raises whether waiting may
help (``StoreUnavailable``, Quix's ``SinkBackpressureError``) or not (``PermanentSinkError``).

``write`` must be idempotent for the same batch: the consumer retries a failed stage, and a
crash before the commit replays the batch. A batch is one topic's messages from one poll; its
offset ranges and the (partition, offset) of every valid row are what a sink keys on to make a
replay land on what the first attempt wrote.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pyarrow as pa

from feedstore.contract.rules import DLQ_MAX_KEY_BYTES, DLQ_MAX_VALUE_BYTES


class SinkError(RuntimeError):
    """A store refused the batch; ``store`` is the sink's name, the label of logs and metrics."""

    def __init__(self, store: str, cause: BaseException | str) -> None:
        super().__init__(f"{store}: {cause}")
        self.store = store


class StoreUnavailable(SinkError):
    """Transient: the consumer keeps the batch, waits and retries the stage. ``retry_after``
    (seconds) is the store's own hint; without one the consumer backs off exponentially."""

    def __init__(self, store: str, cause: BaseException | str, retry_after: float | None = None) -> None:
        super().__init__(store, cause)
        self.retry_after = retry_after


class PermanentSinkError(SinkError):
    """Retrying the same batch cannot succeed (bad data, missing schema or rights): the
    consumer stops without committing, so the batch is redelivered once someone has fixed it."""


@dataclass(frozen=True)
class UserCounters:
    """The running hot counters of one user after the update (last-hour window, by TTL)."""

    user_id: int
    total_events: int
    total_dwell_ms: int
    last_item_id: int
    last_event_type: str
    last_activity_ms: int


@dataclass(frozen=True)
class DeadLetter:
    """A refused message, cut to ``DLQ_MAX_VALUE_BYTES`` (and its key to ``DLQ_MAX_KEY_BYTES``) so
    that any message the source topic accepted fits the DLQ; the whole message stays at its source
    offset, which the headers give."""

    value: bytes | None
    key: bytes | None
    reason: str
    topic: str
    partition: int
    offset: int
    value_size: int = 0
    key_size: int = 0
    error: str | None = None
    arrived_ms: int = -1
    """When the message reached Kafka (its record timestamp), -1 when unknown."""

    @classmethod
    def of(cls, value: bytes | None, key: bytes | None, reason: str, topic: str, partition: int, offset: int,
           error: str | None = None, arrived_ms: int = -1) -> DeadLetter:
        return cls(value[:DLQ_MAX_VALUE_BYTES] if value is not None else None,
                   key[:DLQ_MAX_KEY_BYTES] if key is not None else None, reason, topic, partition, offset,
                   len(value) if value is not None else 0, len(key) if key is not None else 0, error, arrived_ms)

    @property
    def truncated(self) -> bool:
        return (self.value is not None and self.value_size > len(self.value)) or \
            (self.key is not None and self.key_size > len(self.key))

    def headers(self) -> list[tuple[str, bytes]]:
        headers = [("reason", self.reason.encode()), ("source_topic", self.topic.encode()),
                   ("source_partition", str(self.partition).encode()), ("source_offset", str(self.offset).encode())]
        if self.error:
            headers.append(("error", self.error.encode()))
        if self.truncated:
            headers += [("truncated", b"true"), ("original_size", str(self.value_size).encode()),
                        ("original_key_size", str(self.key_size).encode())]
        return headers


@dataclass(frozen=True)
class OffsetRange:
    """The offsets one partition contributed to the batch, valid or not; the commit is ``last + 1``."""

    topic: str
    partition: int
    first: int
    last: int


@dataclass
class SinkBatch:
    """What every sink needs from one poll. ``partitions[i]`` and ``offsets[i]`` locate row i of
    ``valid`` in Kafka. Stages leave their results here for the stages after them: Postgres,
    the dedup authority, sets ``accepted`` (and ``first_stored``); Redis sets ``counters``, which
    Feast pushes."""

    valid: pa.Table
    partitions: np.ndarray
    offsets: np.ndarray
    letters: Sequence[DeadLetter]
    ranges: Sequence[OffsetRange]
    accepted: np.ndarray | None = None
    """Row i of ``valid`` is this message's event: stored now, or by an earlier attempt at this same
    message (a replay). A row whose id another message stored first is a duplicate everywhere."""
    first_stored: int = 0
    """How many accepted rows this attempt stored for the first time (the rest are replayed)."""
    counters: list[UserCounters] | None = None

    @property
    def topic(self) -> str:
        return self.ranges[0].topic

    def range_of(self, partition: int) -> OffsetRange:
        return next(r for r in self.ranges if r.partition == partition)

    def has_new_events(self) -> bool:
        return bool(self._accepted().any())

    def accept(self, partitions: np.ndarray, offsets: np.ndarray) -> None:
        """Marks the rows at these (partition, offset) positions accepted (what the dedup stage found)."""
        self.accepted = np.isin(_positions(self.partitions, self.offsets), _positions(partitions, offsets))

    def new_events(self) -> Accepted:
        """The accepted rows with their Kafka positions: what S3 lands and counters count, once."""
        mask = self._accepted()
        if mask.all():
            return Accepted(self.valid, self.partitions, self.offsets)
        return Accepted(self.valid.filter(pa.array(mask)), self.partitions[mask], self.offsets[mask])

    def _accepted(self) -> np.ndarray:
        if self.accepted is None:
            raise RuntimeError("new events asked for before the dedup stage (postgres) ran")
        return self.accepted


@dataclass(frozen=True)
class Accepted:
    table: pa.Table
    partitions: np.ndarray
    offsets: np.ndarray


def _positions(partitions: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """One int64 per (partition, offset): partitions below 2^20, offsets below 2^43."""
    return (np.asarray(partitions, dtype=np.int64) << 43) | np.asarray(offsets, dtype=np.int64)


class BatchingSink(abc.ABC):
    """A store the consumer lands every batch in. ``warm_up`` and ``close`` default to nothing
    so that the consumer can treat all sinks alike."""

    name: ClassVar[str]

    @abc.abstractmethod
    def write(self, batch: SinkBatch) -> None:
        """Make the batch durable in the store, or raise ``StoreUnavailable``/``PermanentSinkError``."""

    def warm_up(self) -> None:
        """Open connections before the first batch, so that it is not the slow one."""

    def reassigned(self) -> None:
        """Forget what the sink remembers of the store: after a rebalance another consumer may
        have written there."""

    def close(self) -> None:
        """Release connections; called once, when the consumer stops."""
