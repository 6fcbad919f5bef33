"""Crash-loop bisection as a sequence of restarts: a message that kills the process is isolated and
dead-lettered in a bounded number of crashes, and nothing else is set aside."""

from __future__ import annotations

import pytest

from ingestion.bisect import Resume, after_commit, plan

pytestmark = pytest.mark.pure


def simulate(pill: int, end: int, batch_size: int, limit: int = 200) -> tuple[list[int], int]:
    """Restarts a consumer over offsets [0, end) where the message ``pill`` kills it; returns the
    offsets dead-lettered and the crashes it took."""
    committed, metadata, crashes, lettered = 0, "", 0, []
    while committed < end and crashes < limit:
        p = plan(Resume.loads(metadata), committed, batch_size)
        metadata = p.marker.dumps()                       # committed before reading
        if p.poison:
            lettered.append(committed)
            committed, metadata = committed + 1, ""
            continue
        state = p.marker if p.marker.cap is not None else None
        cap = p.cap
        while committed < end:
            size = min(cap or batch_size, end - committed)
            if committed <= pill < committed + size:
                crashes += 1                               # the process dies; metadata stays as is
                break
            committed += size
            state = after_commit(state, committed)
            metadata = state.dumps() if state else ""
            cap = state.cap if state else None
    return lettered, crashes


@pytest.mark.parametrize("pill", [0, 1, 699, 4_999, 5_000, 12_345])
def test_a_pill_is_isolated_and_only_it_is_set_aside(pill):
    lettered, crashes = simulate(pill, 20_000, 5_000)
    assert lettered == [pill]
    assert crashes <= 2 * 14  # two at full size, then about one per halving


def test_one_crash_is_retried_as_it_was():
    p = plan(Resume(resumes=1), 100, 5_000)
    assert p.cap is None and not p.poison and p.marker.resumes == 2


def test_a_clean_stream_never_bisects():
    assert simulate(pill=-1, end=30_000, batch_size=5_000) == ([], 0)


@pytest.mark.parametrize("metadata", ["", "garbage", "[1]", '{"resumes": "x"}', "null"])
def test_unreadable_metadata_is_no_evidence(metadata):
    assert Resume.loads(metadata) == Resume()


def test_metadata_round_trips():
    r = Resume(3, 250, 10_000)
    assert Resume.loads(r.dumps()) == r and Resume().dumps() == ""
