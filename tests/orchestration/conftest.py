"""A tiny feed (60 users, 400 items, three days of events) loaded into the session's isolated
namespace: Postgres rows, content embeddings on S3, and the last two days as landed consumer
files (with replayed duplicates); the first day only in Postgres, as the seed's history is."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from feedstore.s3 import arrow_fs, bucket_path
from ingestion.events import EVENT_SCHEMA, derive_event_id
from ingestion.rules import (
    AGE_RANGES,
    CATEGORIES,
    COUNTRIES,
    DEVICES,
    EMBEDDING_DIM,
    LANGUAGES,
    MEDIA_TYPES,
    PLATFORMS,
)

N_USERS, N_ITEMS, EVENTS_PER_DAY, SEED = 60, 400, 700, 7


@dataclass
class TinyFeed:
    days: list[date]
    users: pd.DataFrame
    items: pd.DataFrame
    events: pd.DataFrame          # unique events, all days
    landed_rows: dict[date, int]  # rows in the landed files, duplicates included


def _events(rng: np.random.Generator, day: date, items: pd.DataFrame) -> pd.DataFrame:
    start = datetime.combine(day, datetime.min.time(), tzinfo=timezone.utc)
    created = items["created_at"].dt.tz_localize(None).to_numpy()
    popularity = 1.0 / (1 + rng.permutation(len(items)))
    rows = []
    for _ in range(EVENTS_PER_DAY // 2):
        ts = start + timedelta(seconds=float(rng.uniform(0, 86_399)))
        eligible = created < np.datetime64(ts.replace(tzinfo=None), "us")
        p = np.where(eligible, popularity, 0)
        item = int(items["item_id"].iloc[rng.choice(len(items), p=p / p.sum())])
        user = int(rng.integers(1, N_USERS + 1))
        session = f"s{rng.integers(1e9)}"
        device, platform = DEVICES[rng.integers(3)], PLATFORMS[rng.integers(3)]
        dwell = int(np.clip(rng.lognormal(8.2, 1.0), 100, 600_000))
        rows.append((user, item, "view", ts, dwell, device, platform, session))
        r = rng.random()
        if r < 0.25:
            kind = ("like", "share", "comment")[int(rng.integers(3))]
            rows.append((user, item, kind, ts + timedelta(milliseconds=dwell), None, device, platform, session))
        elif r < 0.30:  # a second view of the same item, a replay-free near-duplicate
            rows.append((user, item, "view", ts + timedelta(seconds=30), 800, device, platform, session))
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "timestamp", "dwell_time_ms",
                                        "device", "platform", "session_id"])
    frame = frame[frame["timestamp"] < start + timedelta(days=1)]
    frame.insert(0, "event_id", [str(derive_event_id(u, i, t, ts, s)) for u, i, t, ts, s in zip(
        frame.user_id, frame.item_id, frame.event_type, frame.timestamp, frame.session_id, strict=True)])
    return frame.drop_duplicates("event_id").reset_index(drop=True)


def make_feed(today: date) -> TinyFeed:
    rng = np.random.default_rng(SEED)
    days = [today - timedelta(days=3), today - timedelta(days=2), today - timedelta(days=1)]
    first = datetime.combine(days[0], datetime.min.time(), tzinfo=timezone.utc)
    users = pd.DataFrame({
        "user_id": np.arange(1, N_USERS + 1),
        "created_at": [first - timedelta(days=int(d)) for d in rng.integers(1, 700, N_USERS)],
        "age_range": rng.choice(AGE_RANGES, N_USERS), "country": rng.choice(COUNTRIES, N_USERS),
        "language": rng.choice(LANGUAGES, N_USERS),
        "preferred_categories": [list(rng.choice(CATEGORIES, 2, replace=False)) for _ in range(N_USERS)],
    })
    # item ids grow with creation time; the last 20 items appear during the second day
    ages = np.sort(rng.uniform(0.05, 60, N_ITEMS - 20))[::-1]
    created = [first - timedelta(days=float(a)) for a in ages] + \
              [first + timedelta(days=1, hours=float(h)) for h in np.sort(rng.uniform(0, 20, 20))]
    items = pd.DataFrame({
        "item_id": np.arange(1, N_ITEMS + 1), "creator_id": rng.integers(1, N_USERS + 1, N_ITEMS),
        "category": rng.choice(CATEGORIES, N_ITEMS), "media_type": rng.choice(MEDIA_TYPES, N_ITEMS),
        "tags": [[f"t{int(t)}" for t in rng.integers(0, 30, 2)] for _ in range(N_ITEMS)],
        "created_at": pd.to_datetime(created, utc=True),
        "content_embedding": list(rng.normal(size=(N_ITEMS, EMBEDDING_DIM)).astype(np.float32)),
    })
    events = pd.concat([_events(rng, d, items) for d in days], ignore_index=True)
    return TinyFeed(days=days, users=users, items=items, events=events, landed_rows={})


def _event_table(frame: pd.DataFrame) -> pa.Table:
    frame = frame.assign(dwell_time_ms=frame["dwell_time_ms"].astype("Int32"))
    return pa.Table.from_pandas(frame[EVENT_SCHEMA.names], schema=EVENT_SCHEMA, preserve_index=False)


def load_feed(feed: TinyFeed, settings, conn) -> None:
    with conn.cursor() as cur:
        with cur.copy("COPY users (user_id, created_at, age_range, country, language, preferred_categories) "
                      "FROM STDIN") as copy:
            for r in feed.users.itertuples():
                copy.write_row((r.user_id, r.created_at, r.age_range, r.country, r.language,
                                r.preferred_categories))
        with cur.copy("COPY user_follows (user_id, followed_id) FROM STDIN") as copy:
            for u in feed.users.user_id:
                for f in sorted({int(x) for x in np.random.default_rng(int(u)).integers(1, N_USERS + 1, u % 5)}):
                    copy.write_row((int(u), f))
        with cur.copy("COPY items (item_id, creator_id, category, tags, media_type, created_at) FROM STDIN") as copy:
            for r in feed.items.itertuples():
                copy.write_row((r.item_id, r.creator_id, r.category, r.tags, r.media_type, r.created_at))
        cur.execute("SELECT ensure_activity_partitions(%s, %s)", (feed.days[0], feed.days[-1]))
        with cur.copy("COPY user_activity (event_id, user_id, item_id, event_type, \"timestamp\", context, "
                      "dwell_time_ms) FROM STDIN") as copy:
            for r in feed.events.itertuples():
                context = {"device": r.device, "platform": r.platform, "session_id": r.session_id}
                dwell = None if pd.isna(r.dwell_time_ms) else int(r.dwell_time_ms)
                copy.write_row((r.event_id, r.user_id, r.item_id, r.event_type, r.timestamp, json.dumps(context),
                                dwell))
    conn.commit()
    fs = arrow_fs(settings)
    embeddings = pa.Table.from_pandas(feed.items[["item_id", "created_at", "content_embedding"]],
                                      preserve_index=False)
    pq.write_table(embeddings, bucket_path(f"snapshots/items/dt={feed.days[-1]}/part-00000.parquet", settings),
                   filesystem=fs)
    for day in feed.days[1:]:
        frame = feed.events[feed.events.timestamp.dt.date == day]
        replay = frame.sample(n=40, random_state=1)
        landed = pd.concat([frame, replay], ignore_index=True)
        for hour, part in landed.groupby(landed.timestamp.dt.hour):
            half = len(part) // 2
            for i, chunk in enumerate((part.iloc[:half], part.iloc[half:])):
                key = f"events/dt={day}/hour={hour:02d}/user-activity-0-{hour * 10 + i}-{hour * 10 + i}.parquet"
                pq.write_table(_event_table(chunk), bucket_path(key, settings), filesystem=fs)
        feed.landed_rows[day] = len(landed)


@pytest.fixture(scope="session")
def tiny_feed(settings) -> TinyFeed:
    import psycopg

    feed = make_feed(datetime.now(timezone.utc).date())
    with psycopg.connect(settings.postgres_dsn) as conn:
        load_feed(feed, settings, conn)
    return feed


def materialize(day: date, selection: list[str] | None = None, run_config: dict | None = None,
                raise_on_error: bool = True):
    """Run assets (and their blocking checks) for one partition in process, as a job would."""
    import dagster as dg

    from orchestration.definitions import ASSETS, CHECKS
    from orchestration.resources import resources

    return dg.materialize(
        [*ASSETS, *CHECKS], partition_key=day.isoformat(), resources=resources(),
        selection=dg.AssetSelection.assets(*selection) if selection else None,
        run_config=run_config, raise_on_error=raise_on_error,
    )


BATCH_ASSETS = ["activity_archive", "item_catalog_snapshot", "user_profile_snapshot", "user_activity_features",
                "item_engagement_features", "item_embeddings", "user_embeddings", "user_candidates"]


@pytest.fixture(scope="session")
def pipeline(tiny_feed: TinyFeed) -> dict:
    """The archive, snapshots and features of every tiny day, materialised once per session."""
    results = {}
    for day in tiny_feed.days:
        results[day] = materialize(day, BATCH_ASSETS)
    return results
