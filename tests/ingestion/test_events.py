from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from ingestion.events import derive_event_id, event_id_text, event_ids_text, format_timestamp, format_timestamps_us

pytestmark = pytest.mark.pure


def test_batch_event_ids_equal_the_reference_derivation():
    rng = random.Random(5)
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    rows = []
    for k in range(3000):
        ts = datetime(2001, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=rng.randrange(10**15))
        if k % 3 == 0:
            ts = ts.replace(microsecond=0)
        elif k % 3 == 1:
            ts = ts.replace(microsecond=rng.randrange(1, 100) * 10_000)
        rows.append((rng.randrange(1, 2**63), rng.randrange(1, 2**63), rng.choice(["view", "like"]), ts,
                     rng.choice([None, "", "abc", "a|b"])))
    users, items, types, stamps, sessions = (list(c) for c in zip(*rows))
    ts_us = np.array([(t - epoch) // timedelta(microseconds=1) for t in stamps], dtype=np.int64)
    assert format_timestamps_us(ts_us) == [format_timestamp(t) for t in stamps]
    batch = event_ids_text(users, items, types, ts_us, sessions)
    assert batch == [str(derive_event_id(*r)) for r in rows] == [event_id_text(*r) for r in rows]


def test_format_timestamp_matches_the_seed():
    assert format_timestamp(datetime(2025, 11, 15, 10, 30, tzinfo=timezone.utc)) == "2025-11-15T10:30:00Z"
    ts = datetime(2025, 11, 15, 12, 30, 0, 120000, tzinfo=timezone(timedelta(hours=2)))
    assert format_timestamp(ts) == "2025-11-15T10:30:00.12Z"
