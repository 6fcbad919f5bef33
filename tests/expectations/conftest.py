"""Clean frames for every suite, small and deterministic; tests break one thing at a time."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pytest

from feedstore.contract import rules
from feedstore.contract.events import EVENT_SCHEMA
from feedstore.contract.features import TRAINING_VIEWS, VIEWS
from ingestion.events import derive_event_id

NOW = datetime(2025, 11, 15, 12, 0, tzinfo=timezone.utc)
N = 200
USER_IDS = np.arange(1, 51, dtype=np.int64)
ITEM_IDS = np.arange(1000, 1100, dtype=np.int64)


def _rng() -> np.random.Generator:
    return np.random.default_rng(7)


def _embedding(rng: np.random.Generator, n: int) -> pa.Array:
    values = rng.standard_normal((n, rules.EMBEDDING_DIM)).astype(np.float32)
    return pa.array(list(values), type=pa.list_(pa.float32()))


def make_events(n: int = N, now: datetime = NOW) -> pa.Table:
    rng = _rng()
    users = rng.choice(USER_IDS, n)
    items = rng.choice(ITEM_IDS, n)
    types = rng.choice(rules.EVENT_TYPES, n)
    stamps = [now - timedelta(seconds=int(s)) for s in rng.integers(0, rules.MAX_EVENT_AGE_SECONDS - 60, n)]
    sessions = [f"s{u}-{i % 7}" for i, u in enumerate(users)]
    ids = [str(derive_event_id(int(u), int(i), str(t), ts, s))
           for u, i, t, ts, s in zip(users, items, types, stamps, sessions)]
    return pa.table({
        "event_id": ids, "user_id": users, "item_id": items, "event_type": types, "timestamp": stamps,
        "dwell_time_ms": rng.integers(0, 60_000, n).astype(np.int32),
        "device": rng.choice(rules.DEVICES, n), "platform": rng.choice(rules.PLATFORMS, n), "session_id": sessions,
    }, schema=EVENT_SCHEMA)


def make_items(n: int = 100, now: datetime = NOW) -> pa.Table:
    rng = _rng()
    return pa.table({
        "item_id": ITEM_IDS[:n], "creator_id": rng.integers(1, 500, n),
        "category": rng.choice(rules.CATEGORIES, n), "media_type": rng.choice(rules.MEDIA_TYPES, n),
        "tags": pa.array([["ai", "python"]] * n, pa.list_(pa.string())),
        "created_at": pa.array([now - timedelta(days=int(d)) for d in rng.integers(0, 300, n)],
                               pa.timestamp("us", tz="UTC")),
        "content_embedding": _embedding(rng, n),
    })


def make_users(n: int = 50, now: datetime = NOW) -> pa.Table:
    rng = _rng()
    return pa.table({
        "user_id": USER_IDS[:n],
        "created_at": pa.array([now - timedelta(days=int(d)) for d in rng.integers(1, 900, n)],
                               pa.timestamp("us", tz="UTC")),
        "age_range": rng.choice(rules.AGE_RANGES, n), "country": rng.choice(rules.COUNTRIES, n),
        "language": rng.choice(rules.LANGUAGES, n),
        "preferred_categories": pa.array([list(rng.choice(rules.CATEGORIES, 2, replace=False)) for _ in range(n)],
                                         pa.list_(pa.string())),
        "user_embedding": _embedding(rng, n),
    })


def _category_dist(rng: np.random.Generator, active: np.ndarray) -> pa.Array:
    raw = rng.random((len(active), len(rules.CATEGORIES)))
    dist = (raw / raw.sum(axis=1, keepdims=True)).astype(np.float32)
    dist[~active] = 0.0
    return pa.array(list(dist), pa.list_(pa.float32()))


def make_user_features(n: int = 50, now: datetime = NOW) -> pa.Table:
    rng = _rng()
    i7 = rng.integers(0, 40, n)
    i30 = i7 + rng.integers(0, 80, n)
    i30[0] = i7[0] = 0
    u7 = np.minimum(i7, rng.integers(0, 40, n))
    u30 = np.maximum(u7, np.minimum(i30, u7 + rng.integers(0, 40, n)))
    a7 = np.minimum(rng.integers(0, 8, n), i7)
    a30 = np.minimum(a7 + rng.integers(0, 23, n), np.maximum(i30, a7))
    rate = lambda: rng.random(n) * (i7 > 0)  # noqa: E731
    cols = {
        "user_id": np.resize(USER_IDS, n), "event_timestamp": pa.array([now] * n, pa.timestamp("us", tz="UTC")),
        "interactions_7d": i7, "interactions_30d": i30, "unique_items_7d": u7, "unique_items_30d": u30,
        "active_days_7d": a7, "active_days_30d": a30,
        "like_rate_7d": rate(), "like_rate_30d": rate(), "share_rate_7d": rate(), "share_rate_30d": rate(),
        "comment_rate_30d": rate(), "avg_dwell_ms_7d": rng.random(n) * 9000, "avg_dwell_ms_30d": rng.random(n) * 9000,
        "category_dist_30d": _category_dist(rng, i30 > 0),
        "top_category_30d": rng.choice(rules.CATEGORIES, n),
    }
    return pa.table(cols)


def make_item_features(n: int = 100, now: datetime = NOW) -> pa.Table:
    rng = _rng()
    v1 = rng.integers(0, 50, n)
    v7 = v1 + rng.integers(0, 200, n)
    v30 = v7 + rng.integers(0, 500, n)
    return pa.table({
        "item_id": np.resize(ITEM_IDS, n), "event_timestamp": pa.array([now] * n, pa.timestamp("us", tz="UTC")),
        "views_1d": v1, "views_7d": v7, "views_30d": v30, "unique_viewers_7d": np.minimum(v7, rng.integers(0, 150, n)),
        "engagement_rate_7d": rng.random(n), "avg_implicit_rating_7d": rng.random(n),
        "freshness_score": np.exp(-rng.random(n) * 30 / 7),
    })


def make_training(n: int = 90, day: datetime = NOW) -> pa.Table:
    rng = _rng()
    start = day.replace(hour=0, minute=0, second=0, microsecond=0)
    sample_type = np.array(rules.SAMPLE_TYPES * (n // 3))
    users = make_user_features(n)
    items = make_item_features(n)
    profile = make_users(n if n <= 50 else 50)
    cols = {
        "user_id": rng.choice(USER_IDS, n), "item_id": rng.choice(ITEM_IDS, n),
        "event_timestamp": pa.array([start + timedelta(seconds=int(s)) for s in rng.integers(0, 86_399, n)],
                                    pa.timestamp("us", tz="UTC")),
        "label": (sample_type == rules.POSITIVE_SAMPLE_TYPE).astype(np.int64), "sample_type": sample_type,
    }
    for view in TRAINING_VIEWS:
        for column in VIEWS[view].columns:
            cols[column] = _training_feature(column, n, users, items, profile, rng)
    return pa.table(cols)


def _training_feature(column, n, users, items, profile, rng):
    for source in (users, items):
        if column in source.column_names:
            return source.column(column)
    if column in profile.column_names:
        values = profile.column(column).to_pylist()
        return pa.array([values[i % len(values)] for i in range(n)], profile.column(column).type)
    if column in ("user_embedding", "item_embedding"):
        return _embedding(rng, n)
    if column in ("account_age_days", "following_count", "creator_id"):
        return pa.array(rng.integers(1, 1000, n), pa.int64())
    if column == "item_age_days":
        return pa.array(rng.random(n) * 100)
    if column == "category":
        return pa.array(rng.choice(rules.CATEGORIES, n))
    if column == "media_type":
        return pa.array(rng.choice(rules.MEDIA_TYPES, n))
    if column == "tags":
        return pa.array([["ai"]] * n, pa.list_(pa.string()))
    if column in ("rt_interactions_1h", "rt_dwell_ms_1h", "rt_last_item_id"):
        return pa.array(rng.integers(1, 1000, n), pa.int64())
    if column == "rt_last_event_type":
        return pa.array(rng.choice(rules.EVENT_TYPES, n))
    raise KeyError(column)


@pytest.fixture()
def events() -> pa.Table:
    return make_events()


def new_uuid() -> str:
    return str(uuid.uuid4())
