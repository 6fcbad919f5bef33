"""The batch loop without a stack: in-memory sinks, a fake clock and a fake Kafka side show the
order of writes, what is retried after which wait, and that nothing is committed early."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pytest
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE

from feedstore.ids import IdIndex
from feedstore.settings import Settings
from ingestion import consumer as consumer_module
from ingestion.consumer import IngestConsumer, Options
from ingestion.metrics import PREFIX, IngestMetrics
from ingestion.processing import BatchAbandoned, BatchProcessor, Stage, batch_from, checked, waves
from ingestion.sinks.base import BatchingSink, OffsetRange, PermanentSinkError, SinkBatch, StoreUnavailable
from ingestion.validation import Limits, Result, Validator
from tests.ingestion.conftest import ITEM_IDS, USER_IDS, valid_lines

pytestmark = pytest.mark.pure

TOPIC = "activity"
NOW = datetime(2025, 6, 1, 12, tzinfo=timezone.utc)  # fixed, so that a replayed line has the same event id
NAMES = ("dlq", "s3", "postgres", "redis", "feast")


@dataclass(frozen=True)
class FakeMessage:
    payload: bytes | None
    part: int
    off: int

    def value(self) -> bytes | None:
        return self.payload

    def key(self) -> bytes | None:
        return None

    def topic(self) -> str:
        return TOPIC

    def partition(self) -> int:
        return self.part

    def offset(self) -> int:
        return self.off

    def timestamp(self) -> tuple[int, int]:
        return TIMESTAMP_NOT_AVAILABLE, -1

    def error(self) -> None:
        return None


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeSink(BatchingSink):
    """Raises the queued errors first, then writes: each write takes 0.01 s of the fake clock."""

    def __init__(self, name: str, journal: list, clock: FakeClock, failures: list[Exception] | None = None,
                 on_write: Callable[[SinkBatch], None] | None = None) -> None:
        self.name = name
        self.journal = journal
        self.clock = clock
        self.failures = failures or []
        self.on_write = on_write
        self.closed = False

    def write(self, batch: SinkBatch) -> None:
        if self.failures:
            self.journal.append(("fail", self.name))
            raise self.failures.pop(0)
        self.clock.now += 0.01
        self.journal.append(("write", self.name))
        if self.on_write:
            self.on_write(batch)

    def close(self) -> None:
        self.closed = True


class Dedup:
    """Postgres's part: the first batch to carry an event id gets it as new."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def __call__(self, batch: SinkBatch) -> None:
        ids = batch.valid.column("event_id").to_pylist()
        new = np.array([i not in self.seen for i in ids], dtype=bool)
        batch.accept(batch.partitions[new], batch.offsets[new])
        self.seen |= set(ids)


def count_new(batch: SinkBatch) -> None:
    batch.counters = [batch.new_events().table.num_rows]


class FakeHost:
    def __init__(self, journal: list, clock: FakeClock, stop_after_waits: int | None = None) -> None:
        self.journal = journal
        self.clock = clock
        self.stop_after_waits = stop_after_waits
        self.waits: list[float] = []

    def wait(self, seconds: float) -> None:
        assert not any(e[0] == "commit" for e in self.journal)
        self.waits.append(seconds)
        self.journal.append(("wait", seconds))
        self.clock.now += seconds

    def abandoned(self) -> str | None:
        stop = self.stop_after_waits is not None and len(self.waits) >= self.stop_after_waits
        return "stop requested" if stop else None

    def commit(self, batch: SinkBatch) -> None:
        self.journal.append(("commit", tuple((r.partition, r.last + 1) for r in batch.ranges)))


def validator() -> Validator:
    return Validator(IdIndex(USER_IDS).contains, IdIndex(ITEM_IDS).contains, Limits(replay=True))


def messages(n_valid: int = 6, bad: tuple[bytes, ...] = (b"{not json", b"[]"), seed: int = 3) -> list[FakeMessage]:
    """Valid lines then bad ones, dealt round-robin over two partitions from offset 100."""
    lines = valid_lines(n_valid, now=NOW, seed=seed) + list(bad)
    return [FakeMessage(line, i % 2, 100 + i // 2) for i, line in enumerate(lines)]


@dataclass
class Rig:
    processor: BatchProcessor
    journal: list
    host: FakeHost
    sinks: dict[str, FakeSink]
    metrics: IngestMetrics
    clock: FakeClock

    def sample(self, name: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(PREFIX + name, labels)


def rig(failures: dict[str, list[Exception]] | None = None, stop_after_waits: int | None = None,
        max_backoff_seconds: float = 15.0) -> Rig:
    """Five fake sinks in today's stages; validation takes 0.2 s and first raises ``failures["validate"]``."""
    journal: list = []
    clock = FakeClock()
    failures = failures or {}
    catalog_failures = failures.get("validate", [])

    def validate(payloads: list[bytes | None], arrived_us=None) -> Result:
        if catalog_failures:
            raise catalog_failures.pop(0)
        clock.now += 0.2
        return validator().validate(payloads)

    effects: dict[str, Callable[[SinkBatch], None]] = {"postgres": Dedup(), "redis": count_new}
    sinks = {n: FakeSink(n, journal, clock, failures.get(n), effects.get(n)) for n in NAMES}
    stages = [Stage(sinks["dlq"]), Stage(sinks["s3"]), Stage(sinks["postgres"]),
              Stage(sinks["redis"], after=("postgres",), new_only=True),
              Stage(sinks["feast"], after=("redis",), new_only=True)]
    host = FakeHost(journal, clock, stop_after_waits)
    metrics = IngestMetrics()
    processor = BatchProcessor(validate, stages, host, metrics,
                               max_backoff_seconds=max_backoff_seconds, clock=clock, rng=random.Random(5),
                               parallel=False)
    return Rig(processor, journal, host, sinks, metrics, clock)


def writes(*names: str) -> list[tuple[str, str]]:
    return [("write", n) for n in names]


COMMIT = ("commit", ((0, 104), (1, 104)))


def test_the_batch_carries_valid_rows_dead_letters_and_offsets():
    msgs = messages()
    batch = batch_from(msgs, validator().validate([m.value() for m in msgs]))

    assert batch.ranges == [OffsetRange(TOPIC, 0, 100, 103), OffsetRange(TOPIC, 1, 100, 103)]
    assert [(d.topic, d.partition, d.offset) for d in batch.letters] == [(TOPIC, 0, 103), (TOPIC, 1, 103)]
    assert [d.value for d in batch.letters] == [b"{not json", b"[]"]
    where = {json.loads(m.value())["context"]["session_id"]: (m.partition(), m.offset()) for m in msgs[:6]}
    assert batch.valid.num_rows == 6
    for row, session in enumerate(batch.valid.column("session_id").to_pylist()):
        assert (int(batch.partitions[row]), int(batch.offsets[row])) == where[session]


def test_stages_write_in_order_and_the_commit_comes_last():
    r = rig()
    done = r.processor.process(messages())

    assert r.journal == writes(*NAMES) + [COMMIT]
    assert done.batch.counters == [6], "redis saw the events postgres found new"
    assert r.sample("store_up", store="feast") == 1


def test_stages_run_in_waves_of_what_their_inputs_allow():
    from feedstore.settings import Settings
    from ingestion.consumer import default_stages

    names = [[s.name for s in wave] for wave in waves(default_stages(Settings.defaults().replace(
        ingest={"feast_push": True})))]
    assert names == [["dlq", "postgres"], ["s3", "redis"], ["feast"]]


def test_the_stages_of_a_wave_run_side_by_side():
    """Two stages that each wait for the other finish only if they run at the same time."""
    import threading

    barrier = threading.Barrier(2, timeout=10)
    journal: list = []
    clock = FakeClock()

    def meet(batch: SinkBatch) -> None:
        barrier.wait()

    sinks = [FakeSink(n, journal, clock, None, meet) for n in ("s3", "redis")]
    dedup = FakeSink("postgres", journal, clock, None, Dedup())
    stages = [Stage(dedup)] + [Stage(s, after=("postgres",), new_only=True) for s in sinks]
    processor = BatchProcessor(lambda p, a=None: validator().validate(p), stages, FakeHost(journal, clock),
                               IngestMetrics())
    processor.process(messages())
    assert sorted(journal[1:3]) == writes("redis", "s3") and journal[-1] == COMMIT


def test_a_transient_error_retries_only_that_stage_after_its_retry_after():
    r = rig({"s3": [StoreUnavailable("s3", "slow down", retry_after=7.5)] * 2})
    r.processor.process(messages())

    assert r.journal == writes("dlq") + [("fail", "s3"), ("wait", 7.5)] * 2 + writes(*NAMES[1:]) + [COMMIT]
    assert r.sample("store_errors_total", store="s3") == 2
    assert r.sample("store_up", store="s3") == 1
    assert r.sample("batch_retrying") == 0


def test_nothing_is_committed_while_a_stage_keeps_failing():
    r = rig({"postgres": [StoreUnavailable("postgres", "connection refused")] * 4}, max_backoff_seconds=1.0)
    done = r.processor.process(messages())

    assert [e for e in r.journal if e[0] != "wait"] == (writes("dlq", "s3") + [("fail", "postgres")] * 4
                                                       + writes("postgres", "redis", "feast") + [COMMIT])
    assert len(r.host.waits) == 4 and all(0.35 <= w <= 1.0 for w in r.host.waits), "jittered, capped backoff"
    assert r.host.waits[0] <= 0.5 and r.host.waits[1] >= 0.7, "the backoff doubles"
    assert done.stage_seconds["postgres"] == pytest.approx(0.01), "waits are not booked as write time"


def test_a_permanent_error_stops_the_batch_without_retry_or_commit():
    r = rig({"redis": [PermanentSinkError("redis", "WRONGTYPE")]})
    with pytest.raises(PermanentSinkError):
        r.processor.process(messages())

    assert r.journal == writes("dlq", "s3", "postgres") + [("fail", "redis")]
    assert r.sample("store_up", store="redis") == 0
    assert r.sample("store_errors_total", store="redis") == 1


def test_a_stop_during_the_retries_abandons_the_batch_uncommitted():
    r = rig({"s3": [StoreUnavailable("s3", "down")] * 10}, stop_after_waits=2)
    with pytest.raises(BatchAbandoned, match="stop requested"):
        r.processor.process(messages())

    assert r.journal[-1][0] == "wait" and len(r.host.waits) == 2
    assert not any(e[0] == "commit" or e == ("write", "postgres") for e in r.journal)


def test_stages_for_new_events_are_skipped_when_postgres_found_nothing_new():
    r = rig()
    r.processor.process(messages())
    r.journal.clear()
    done = r.processor.process(messages())

    assert not done.batch.accepted.any()
    assert r.journal == writes("dlq", "s3", "postgres") + [COMMIT]


def test_validation_is_booked_under_its_own_stage_label():
    r = rig({"validate": [StoreUnavailable("postgres", "catalog lookup failed")]})
    done = r.processor.process(messages())

    assert done.stage_seconds["validate"] == pytest.approx(0.2)
    assert done.stage_seconds["postgres"] == pytest.approx(0.01)
    assert r.sample("stage_seconds_sum", stage="validate") == pytest.approx(0.2)
    assert r.sample("store_errors_total", store="postgres") == 1, "the catalog's failure is the store's"
    assert r.journal[0][0] == "wait" and r.journal[1:] == writes(*NAMES) + [COMMIT]


def test_a_stage_listed_before_what_it_reads_is_refused():
    journal: list = []
    redis, feast = (FakeSink(n, journal, FakeClock()) for n in ("redis", "feast"))
    with pytest.raises(ValueError, match="feast"):
        checked([Stage(feast, after=("redis",)), Stage(redis)])
    with pytest.raises(ValueError, match="redis"):
        checked([Stage(redis), Stage(redis)])


def test_new_events_are_unknown_before_the_dedup_stage():
    msgs = messages()
    batch = batch_from(msgs, validator().validate([m.value() for m in msgs]))
    with pytest.raises(RuntimeError, match="dedup"):
        batch.new_events()


# -- the consumer with its stages given and a fake Kafka client ----------------------------------


class FakeKafka:
    """Hands out the queued batches, then nothing; records commits."""

    def __init__(self, batches: list[list[FakeMessage]]) -> None:
        self.batches = batches
        self.commits: list[list[tuple[int, int]]] = []
        self.closed = False

    def subscribe(self, topics, on_assign, on_revoke) -> None:
        on_assign(self, [])

    def consume(self, n: int, timeout: float) -> list[FakeMessage]:
        return self.batches.pop(0) if self.batches else []

    def commit(self, offsets, asynchronous: bool) -> None:
        self.commits.append([(tp.partition, tp.offset) for tp in offsets])

    def get_watermark_offsets(self, tp, cached: bool) -> tuple[int, int]:
        return 0, 104

    def poll(self, timeout: float) -> None:
        import time

        time.sleep(min(timeout, 0.01))

    def pause(self, partitions) -> None:
        pass

    resume = pause

    def close(self) -> None:
        self.closed = True


class RecordingLog:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []

    def _record(self, event: str, **fields) -> None:
        self.events.append((event, fields))

    info = warning = error = _record


def consumer_with(stages: list[Stage], kafka: FakeKafka, monkeypatch) -> tuple[IngestConsumer, RecordingLog]:
    log = RecordingLog()
    monkeypatch.setattr(consumer_module, "Consumer", lambda conf: kafka)
    monkeypatch.setattr(consumer_module, "log", log)
    consumer = IngestConsumer(Settings(), Options(until_idle=0.01), IngestMetrics(), stages=stages)
    consumer.validator = validator()
    monkeypatch.setattr(consumer, "warm_up", lambda: None)
    return consumer, log


def test_the_consumer_lands_commits_and_closes_the_sinks_it_was_given(monkeypatch):
    journal: list = []
    sinks = [FakeSink("s3", journal, FakeClock()), FakeSink("postgres", journal, FakeClock(), on_write=Dedup())]
    kafka = FakeKafka([messages()])
    consumer, _ = consumer_with([Stage(s) for s in sinks], kafka, monkeypatch)
    stats = consumer.run()

    assert sorted(journal) == writes("postgres", "s3")  # one wave: side by side
    assert kafka.commits == [[(0, 104), (1, 104)]] and kafka.closed
    assert stats.batches == 1 and stats.stored == 6 and stats.rejected == 2
    assert all(s.closed for s in sinks)


def test_a_permanent_error_stops_the_consumer_with_one_clear_log_line(monkeypatch):
    journal: list = []
    sink = FakeSink("postgres", journal, FakeClock(), [PermanentSinkError("postgres", "permission denied")])
    kafka = FakeKafka([messages(), messages(seed=4)])
    consumer, log = consumer_with([Stage(sink)], kafka, monkeypatch)
    with pytest.raises(PermanentSinkError):
        consumer.run()

    assert kafka.commits == [] and kafka.closed and sink.closed
    # The next batch may have been polled and validated meanwhile; it is never written.
    assert journal == [("fail", "postgres")], "no batch written after the failure"
    failed = [fields for event, fields in log.events if event == "ingest_failed"]
    assert len(failed) == 1 and failed[0]["store"] == "postgres" and "permission denied" in failed[0]["error"]


def test_a_slow_write_is_not_taken_for_idleness(monkeypatch):
    """``--until-idle`` counts from the last commit: a poll that comes back empty while a batch is
    still being written (a slow store) must not end the run with messages left to read."""
    import time

    journal: list = []
    slow = iter([0.2])
    dedup = Dedup()

    def write(batch: SinkBatch) -> None:
        time.sleep(next(slow, 0.0))  # the first batch's write outlasts until_idle many times over
        dedup(batch)

    sink = FakeSink("postgres", journal, FakeClock(), on_write=write)
    kafka = FakeKafka([messages(), [], messages(seed=4)])
    consumer, _ = consumer_with([Stage(sink)], kafka, monkeypatch)
    stats = consumer.run()

    assert stats.batches == 2 and stats.messages == 16, "the run ended before the second batch"
