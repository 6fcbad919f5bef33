"""Four ``feedstore ingest`` processes share one consumer group over the topic's four partitions,
under load: a fourth joins while three write (every member's partitions revoked with a batch in
flight), two are SIGKILLed at random moments and replaced, one leaves on SIGTERM and another takes
its place. Afterwards every tier holds each event once and the healthy messages are not
dead-lettered."""

from __future__ import annotations

import random
import threading
import time

import pytest

from tests.ingestion.conftest import read_dlq
from tests.ingestion.harness import (
    CliLauncher,
    IngestProcess,
    assert_every_tier_exact,
    clear_counters,
    committed,
    produce_to_partitions,
    resend_stream,
    wait_until,
)

DISTINCT, COPIES, RETIMED, ELSEWHERE = 60_000, 2_000, 2_000, 600
BATCH = 1_000
MEMBERS = 4
PACE = 400  # messages produced every half second while members come and go; the rest at once after


class _Load(threading.Thread):
    """Produces the stream at a steady pace until told to hurry, so the group is under load
    whenever a member joins, dies or leaves."""

    def __init__(self, s, sent: list[tuple[bytes, int]]) -> None:
        super().__init__(daemon=True)
        self.s, self.sent, self.hurry, self.error = s, sent, threading.Event(), None

    def run(self) -> None:
        try:
            at = 0
            while at < len(self.sent):
                step = len(self.sent) if self.hurry.is_set() else PACE
                produce_to_partitions(self.s, self.sent[at:at + step])
                at += step
                self.hurry.wait(0.5)
        except BaseException as exc:  # surfaced by the test after join()
            self.error = exc


def _batches(proc: IngestProcess) -> int:
    return len(proc.events("batch_committed"))


def _after_more_batches(proc: IngestProcess, more: int, what: str) -> None:
    target = _batches(proc) + more
    wait_until(lambda: _batches(proc) >= target or not proc.alive(), 120, what)
    assert proc.alive(), f"{what}: the consumer ended:\n{proc.tail()}"


@pytest.mark.slow
def test_four_consumers_with_kills_and_rebalances_lose_and_double_nothing(ingest_settings):
    s = ingest_settings.replace(ingest={"batch_size": BATCH})
    assert s.kafka.topic_partitions == MEMBERS
    clear_counters(s)
    sent = resend_stream(seed=91, partitions=MEMBERS, distinct=DISTINCT, copies=COPIES, retimed=RETIMED,
                         elsewhere=ELSEWHERE)
    load = _Load(s, sent)
    load.start()
    rng = random.Random(91)
    everyone: list[IngestProcess] = []
    with CliLauncher(s) as launcher:
        def join() -> IngestProcess:
            proc = IngestProcess(s, launcher=launcher)
            everyone.append(proc)
            return proc

        members = [join() for _ in range(MEMBERS - 1)]
        wait_until(lambda: all(_batches(p) >= 1 for p in members), 120, "three members each commit a batch")
        members.append(join())  # joins while the three write: an eager rebalance revokes everything
        assert members[-1].assigned(), members[-1].tail()
        _after_more_batches(members[-1], 1, "the fourth member commits")
        for _ in range(2):
            victim = members.pop(rng.randrange(len(members)))
            _after_more_batches(victim, 1, "the victim writes")
            time.sleep(rng.uniform(0, 0.3))
            victim.kill()
            members.append(join())
        leaver = members.pop(0)
        assert leaver.stop() == 0, leaver.tail()
        members.append(join())
        load.hurry.set()
        load.join(300)
        assert load.error is None and not load.is_alive(), f"producing failed: {load.error}"
        wait_until(lambda: committed(s) >= len(sent), 600, f"the group to commit all {len(sent)} messages")
        for proc in members:
            assert proc.stop() == 0, proc.tail()

    workers = [p for p in everyone if _batches(p) > 0]
    assert len(workers) >= 6, f"only {len(workers)} of {len(everyone)} processes committed a batch"
    revoked = [p for p in everyone[:MEMBERS - 1] if p.events("partitions_revoked")]
    assert revoked, "the fourth member's arrival revoked nobody's partitions"
    assert len({part for p in everyone for r in p.events("partitions_assigned") for part in r["partitions"]}) == MEMBERS
    letters = read_dlq(s)
    assert letters == [], f"{len(letters)} healthy messages dead-lettered: " \
        f"{sorted({h.get('reason') for _, h in letters})}"
    assert_every_tier_exact(s, [line for line, _ in sent])
