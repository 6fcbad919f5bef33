"""Each store behind a fault proxy while ``feedstore ingest`` runs: refused, stalled, and a lost
acknowledgement (the request reached the server, its reply did not reach the consumer). While
a store is down the consumer says so (``store_unavailable`` in its log, ``store_up{store}`` 0 on
its metrics) and commits nothing; once the fault clears every tier holds each event once:
Postgres rows = landed Parquet rows = distinct = produced, Redis ``total_events`` per user =
produced per user."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from devtools.faults import HTTP_FINAL_STATUS, POSTGRES_COMMIT, REDIS_SCRIPT, S3_PUT, FaultProxy
from feedstore.settings import Settings
from tests.ingestion.conftest import produce, valid_lines
from tests.ingestion.harness import (
    STORES,
    IngestProcess,
    assert_every_tier_exact,
    clear_counters,
    committed,
    proxied_stores,
    wait_until,
)

# The bar: a stalled store shows in the log and in store_up "within seconds".
SHOWN_WITHIN_SECONDS = 20
# What each store's write looks like on the wire, and the reply that acknowledges it.
WRITES = {"postgres": (POSTGRES_COMMIT, None), "redis": (REDIS_SCRIPT, None), "s3": (S3_PUT, HTTP_FINAL_STATUS)}
BATCH = 250


@pytest.fixture()
def proxied(ingest_settings: Settings) -> Iterator[tuple[Settings, Settings, dict[str, FaultProxy]]]:
    """(direct settings for reading back, the consumer's settings through the proxies, the proxies)."""
    direct = ingest_settings.replace(ingest={"batch_size": BATCH})
    clear_counters(direct)
    with proxied_stores(direct) as (via, proxies):
        yield direct, via, proxies


def _start(via: Settings, direct: Settings, first: list[bytes]) -> IngestProcess:
    """A consumer that has taken ``first`` through every tier, all stores healthy."""
    produce(via, first)
    proc = IngestProcess(via, "--instance-id", "faults", env={"FEED_INGEST_STATEMENT_TIMEOUT_MS": "5000"})
    wait_until(lambda: committed(direct) == len(first) or not proc.alive(), 120,
               "the healthy first wave to be committed")
    assert proc.alive(), proc.tail()
    return proc


def _finish(proc: IngestProcess, proxies: dict[str, FaultProxy], direct: Settings, total: int) -> None:
    wait_until(lambda: committed(direct) == total or not proc.alive(), 120,
               "every event to be committed once the fault cleared")
    assert proc.alive(), f"the consumer exited:\n{proc.tail()}"


@pytest.mark.parametrize("fault", ["refused", "stalled"])
@pytest.mark.parametrize("store", STORES)
def test_a_store_down_holds_the_batch_and_then_lands_it_once(proxied, store, fault):
    direct, via, proxies = proxied
    first, second = valid_lines(500, seed=301), valid_lines(1000, seed=302)
    proc = _start(via, direct, first)
    try:
        mark = len(proc.records)
        proxies[store].refuse() if fault == "refused" else proxies[store].stall()
        produce(via, second)
        shown = proc.wait_for("store_unavailable", SHOWN_WITHIN_SECONDS, lambda r: r.get("store") == store, mark)
        assert shown is not None, f"{store} {fault}: no store_unavailable line within {SHOWN_WITHIN_SECONDS} s " \
            f"of the fault:\n{proc.tail()}"
        assert proc.metric("store_up", {"store": store}) == 0
        assert proc.metric("batch_retrying") == 1
        time.sleep(2)
        assert committed(direct) == len(first), f"offsets committed while {store} was {fault}"
        assert proc.alive(), f"the consumer exited while {store} was {fault}:\n{proc.tail()}"
        proxies[store].pass_through()
        _finish(proc, proxies, direct, len(first) + len(second))
        assert proc.metric("store_up", {"store": store}) == 1
        assert proc.metric("store_errors_total", {"store": store}) >= 1
    finally:
        for proxy in proxies.values():
            proxy.pass_through()
        assert proc.stop() == 0, proc.tail()
    assert_every_tier_exact(direct, first + second)


@pytest.mark.parametrize("store", STORES)
def test_a_lost_acknowledgement_is_neither_lost_nor_doubled(proxied, store):
    """Three writes reach the store and are acted on; each time the reply is swallowed and the
    consumer's connection reset, so it cannot know its write happened."""
    direct, via, proxies = proxied
    first, second = valid_lines(500, seed=311), valid_lines(1500, seed=312)
    proc = _start(via, direct, first)
    request, reply = WRITES[store]
    try:
        proxies[store].reset_after_request(times=3, request=request, reply=reply)
        produce(via, second)
        wait_until(lambda: proxies[store].resets == 3 or not proc.alive(), 90,
                   f"three {store} replies to be lost")
        _finish(proc, proxies, direct, len(first) + len(second))
    finally:
        for proxy in proxies.values():
            proxy.pass_through()
        assert proc.stop() == 0, proc.tail()
    assert proxies[store].resets == 3
    assert_every_tier_exact(direct, first + second)
