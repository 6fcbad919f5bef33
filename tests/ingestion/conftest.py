"""Ingestion test data: a small catalog and valid event lines made here (no generator in the
package yet), plus helpers to produce to and read from the session's topics."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone

import numpy as np
import psycopg
import pytest

from ingestion import rules
from ingestion.events import format_timestamp

USER_IDS = np.arange(1_000, 1_400, dtype=np.int64)
ITEM_IDS = np.arange(500_000, 502_000, 3, dtype=np.int64)


def valid_lines(n: int, *, now: datetime | None = None, seed: int = 1, spread_seconds: int = 1200,
                with_event_id_every: int = 5) -> list[bytes]:
    """Distinct valid events from the test catalog within the last ``spread_seconds``."""
    rng = random.Random(seed)
    now = now or datetime.now(timezone.utc)
    out = []
    for k in range(n):
        ts = now - timedelta(microseconds=rng.randrange(spread_seconds * 1_000_000))
        event = {
            "user_id": str(int(USER_IDS[rng.randrange(USER_IDS.size)])),
            "item_id": str(int(ITEM_IDS[rng.randrange(ITEM_IDS.size)])),
            "event_type": rng.choice(rules.EVENT_TYPES),
            "timestamp": format_timestamp(ts),
            "context": {"device": rng.choice(rules.DEVICES), "platform": rng.choice(rules.PLATFORMS),
                        "session_id": f"s{seed}-{k}"},
            "dwell_time_ms": rng.randrange(0, 60_000),
        }
        if with_event_id_every and k % with_event_id_every == 0:
            event["event_id"] = str(__import__("uuid").UUID(int=rng.getrandbits(128), version=4))
        out.append(json.dumps(event, separators=(",", ":")).encode())
    return out


def seed_catalog(dsn: str) -> None:
    """The test users and items, loaded with COPY; idempotent across tests of one session."""
    now = datetime.now(timezone.utc)
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        if cur.execute("SELECT count(*) FROM users").fetchone()[0] >= USER_IDS.size:
            return
        with cur.copy("COPY users (user_id, created_at) FROM STDIN") as copy:
            for uid in USER_IDS.tolist():
                copy.write_row((uid, now))
        with cur.copy("COPY items (item_id, creator_id, category, media_type, created_at) FROM STDIN") as copy:
            for iid in ITEM_IDS.tolist():
                copy.write_row((iid, 1, "tech", "text", now))


@pytest.fixture(scope="session")
def catalog(settings):
    seed_catalog(settings.postgres_dsn)
    return settings
