"""``feedstore ingest`` SIGKILLed again and again under load: at random moments, and at every
stage boundary, found from outside the process. Its stores sit behind fault proxies, so a kill can
be timed to a write held on its way to the store, or to the store's reply held after the write
was done (Postgres COMMIT, the S3 PUT, the Redis script), and to the log line that follows the
Kafka commit. 100,000 distinct events plus 7,000 re-sends (same event id; half of them with
another timestamp, 1,000 in another partition); afterwards Postgres rows = landed Parquet rows = distinct = produced, the
landed copy of each event is the one Postgres kept, and Redis counts each user's events once."""

from __future__ import annotations

import random
import time

import pytest

from devtools.faults import POSTGRES_COMMIT, REDIS_SCRIPT, S3_PUT, FaultProxy
from tests.ingestion.conftest import produce, read_dlq, stored_event_ids, valid_lines
from tests.ingestion.harness import (
    CliLauncher,
    IngestProcess,
    assert_every_tier_exact,
    clear_counters,
    produce_to_partitions,
    proxied_stores,
    resend_stream,
    wait_until,
)

DISTINCT, COPIES, RETIMED = 100_000, 3_500, 3_500
ELSEWHERE = 1_000  # of the exact copies, sent to another partition than their original
BATCH = 2_000
# (store, how the write is caught): "before" holds the request before it reaches the store,
# "after" lets the store act and holds its reply.
BOUNDARIES = [("postgres", "before", POSTGRES_COMMIT), ("postgres", "after", POSTGRES_COMMIT),
              ("s3", "before", S3_PUT), ("s3", "after", S3_PUT),
              ("redis", "before", REDIS_SCRIPT), ("redis", "after", REDIS_SCRIPT),
              ("kafka", "after", None)]
RANDOM_KILLS = 10


def _arm(proxies: dict[str, FaultProxy], store: str, when: str, pattern) -> FaultProxy | None:
    if store not in proxies:
        return None
    proxy = proxies[store]
    proxy.stall(before=pattern) if when == "before" else proxy.hold_reply(after=pattern)
    return proxy


def _life(via, proxies, launcher: CliLauncher, rng: random.Random, boundary: tuple | None) -> str:
    """One consumer process, killed at ``boundary`` or at a random moment; says where it died."""
    store, when, pattern = boundary or ("random", "", None)
    proxy = _arm(proxies, store, when, pattern)
    proc = IngestProcess(via, "--instance-id", "crash", launcher=launcher)
    try:
        assert proc.assigned(), f"the consumer never got its partitions:\n{proc.tail()}"
        if proxy is not None:
            where = f"{store} {when}" if proxy.tripped.wait(60) else "boundary missed"
        elif store == "kafka":
            where = "after commit" if proc.wait_for("batch_committed", 60) else "boundary missed"
        else:
            batches = rng.randrange(3)
            wait_until(lambda: len(proc.events("batch_committed")) >= batches or not proc.alive(), 60,
                       f"{batches} batches")
            time.sleep(rng.uniform(0, 0.4))
            where = "random"
        assert proc.alive(), f"the consumer ended before it could be killed:\n{proc.tail()}"
        proc.kill()
    finally:
        if proc.alive():
            proc.kill()
        for p in proxies.values():
            assert p.wait_closed(10), f"{p.name}: connections of a dead consumer still open"
            p.pass_through()
    return where


@pytest.mark.slow
def test_sigkills_at_random_moments_and_every_stage_boundary_lose_and_double_nothing(ingest_settings):
    s = ingest_settings.replace(ingest={"batch_size": BATCH})
    clear_counters(s)
    sent = resend_stream(seed=77, partitions=s.kafka.topic_partitions, distinct=DISTINCT, copies=COPIES,
                         retimed=RETIMED, elsewhere=ELSEWHERE)
    lines = [line for line, _ in sent]
    rng = random.Random(77)
    schedule: list[tuple | None] = BOUNDARIES * 2 + [None] * RANDOM_KILLS
    rng.shuffle(schedule)
    with proxied_stores(s) as (via, proxies), CliLauncher(via) as launcher:
        produce_to_partitions(via, sent)
        deaths, progress = [], []
        for boundary in schedule:
            deaths.append(_life(via, proxies, launcher, rng, boundary))
            progress.append(len(stored_event_ids(s)))
        final = IngestProcess(via, "--instance-id", "crash", "--until-idle", "4")  # the CLI itself, start to end
        assert final.wait(300) == 0, final.tail()

    assert len(deaths) >= 20
    for store, when, _ in BOUNDARIES:
        where = "after commit" if store == "kafka" else f"{store} {when}"
        assert deaths.count(where) == 2, f"killed at {deaths}: {where} not reached twice"
    assert progress == sorted(progress) and len(set(progress)) >= 5 and progress[-1] < DISTINCT, \
        f"kills did not land throughout a run under load: stored after each kill {progress}"
    assert_every_tier_exact(s, lines)


def test_kills_while_a_store_hangs_dead_letter_nothing(ingest_settings):
    """The consumer is killed again and again from outside while its Postgres COMMIT hangs (a
    synchronous standby gone, say, and a supervisor restarting what looks stuck): the messages are
    not what kills it, so none of them may be set aside as having crashed it."""
    s = ingest_settings.replace(ingest={"batch_size": 500})
    clear_counters(s)
    lines = valid_lines(3_000, seed=78)
    with proxied_stores(s) as (via, proxies), CliLauncher(via) as launcher:
        produce(via, lines)
        hung = proxies["postgres"]
        for _ in range(12):
            hung.stall(before=POSTGRES_COMMIT)
            proc = IngestProcess(via, "--instance-id", "hung", launcher=launcher)
            try:
                assert proc.assigned(), proc.tail()
                assert hung.tripped.wait(60), f"no COMMIT reached the proxy:\n{proc.tail()}"
            finally:
                proc.kill()
            assert hung.wait_closed(10)
        hung.pass_through()
        final = IngestProcess(via, "--instance-id", "hung", "--until-idle", "4")
        assert final.wait(300) == 0, final.tail()
    letters = read_dlq(s)
    assert letters == [], f"{len(letters)} healthy messages dead-lettered: " \
        f"{sorted({h.get('reason') for _, h in letters})}"
    assert_every_tier_exact(s, lines)
