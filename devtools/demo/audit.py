"""Cross-checks of one namespace after a run: events per tier, dead letters by reason, online
values against the lake's rows, and training rows against a point-in-time join done by hand.

The demo prints these and its end-to-end test asserts them; each reads the stores directly
rather than trusting what the writers reported, so a disagreement between tiers shows up.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import redis
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from feedstore.db import connect
from feedstore.s3 import duckdb_connection
from feedstore.settings import Settings
from ingestion.sinks.redis import user_key
from orchestration import lake

PROJECT = "feed_ranking"


# ---- Kafka -------------------------------------------------------------------------------------

def _consumer(settings: Settings, group: str | None = None) -> Consumer:
    return Consumer({
        "bootstrap.servers": settings.kafka.bootstrap, "group.id": group or f"feedstore-audit-{uuid.uuid4().hex}",
        "enable.auto.commit": False, "log_level": 3,
        "fetch.message.max.bytes": 32 * 1024 * 1024, "max.partition.fetch.bytes": 32 * 1024 * 1024,
    })


def high_watermarks(settings: Settings, topic: str) -> dict[int, int]:
    consumer = _consumer(settings)
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
    finally:
        consumer.close()


_COORDINATOR_STARTING = {KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                         KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError._WAIT_COORD}


def skip_to_end(settings: Settings, topic: str, group: str) -> dict[int, int]:
    """Commit ``group``'s offsets at the end of ``topic`` (the group must have no live member),
    so the next consumer starts with what is produced from now on."""
    ends = high_watermarks(settings, topic)
    consumer = _consumer(settings, group)
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in ends.items()], asynchronous=False)
                return ends
            except KafkaException as exc:
                # A broker that has just started is still electing the group coordinator.
                error = exc.args[0]
                if not (error.retriable() or error.code() in _COORDINATOR_STARTING) or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    finally:
        consumer.close()


def dead_letter_reasons(settings: Settings, start: dict[int, int], end: dict[int, int],
                        timeout: float = 60) -> Counter:
    """The ``reason`` header of every DLQ message between two sets of offsets."""
    topic = settings.kafka.topic_dlq
    wanted = {p: end[p] - start.get(p, 0) for p in end if end[p] > start.get(p, 0)}
    reasons: Counter = Counter()
    if not wanted:
        return reasons
    seen = dict.fromkeys(wanted, 0)
    consumer = _consumer(settings)
    try:
        consumer.assign([TopicPartition(topic, p, start.get(p, 0)) for p in wanted])
        deadline = time.monotonic() + timeout
        while any(seen[p] < wanted[p] for p in wanted) and time.monotonic() < deadline:
            for msg in consumer.consume(1000, timeout=1):
                if msg.error() is not None or msg.offset() >= end[msg.partition()]:
                    continue
                seen[msg.partition()] += 1
                headers = dict(msg.headers() or [])
                reasons[(headers.get("reason") or b"?").decode()] += 1
    finally:
        consumer.close()
    return reasons


# ---- tiers -------------------------------------------------------------------------------------

@dataclass
class TierCounts:
    postgres_rows: int
    postgres_distinct: int
    landed_rows: int          # consumer files on S3, re-sent duplicates included
    landed_distinct: int
    archive_rows: int         # daily archive, deduplicated
    postgres_archived: int    # Postgres events of the archived (ended) days
    hot_events: int           # sum of the hot counters' totals in Redis
    hot_users: int
    realtime_users: int       # users with a Feast realtime row in Redis
    online_keys: dict[str, int]

    def equal(self, generated: int) -> bool:
        """Each event once in every tier; the archive holds the days that have ended."""
        return (len({generated, self.postgres_rows, self.postgres_distinct, self.landed_distinct,
                     self.hot_events}) == 1 and self.archive_rows == self.postgres_archived)


def postgres_events(settings: Settings, before: datetime | None = None) -> tuple[int, int]:
    query = "SELECT count(*), count(DISTINCT event_id) FROM user_activity"
    with connect(settings) as conn:
        if before is None:
            rows, distinct = conn.execute(query).fetchone()
        else:
            rows, distinct = conn.execute(query + ' WHERE "timestamp" < %s', (before,)).fetchone()
    return int(rows), int(distinct)


def lake_events(settings: Settings, root: str) -> tuple[int, int]:
    """Rows and distinct event ids of every Parquet file under ``root``."""
    keys = lake.parquet_keys(f"{root}/", settings)
    if not keys:
        return 0, 0
    with duckdb_connection(settings) as con:
        rel = con.read_parquet([lake.s3_uri(k, settings) for k in keys], union_by_name=True)
        rel.create_view("events", replace=True)
        rows, distinct = con.execute("SELECT count(*), count(DISTINCT event_id) FROM events").fetchone()
    return int(rows), int(distinct)


def redis_keys(client: redis.Redis, pattern: str) -> list[bytes]:
    return list(client.scan_iter(match=pattern, count=5_000))


def hot_counters(client: redis.Redis) -> tuple[int, int]:
    keys = redis_keys(client, user_key("*"))
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hget(key, "total_events")
    return sum(int(v or 0) for v in pipe.execute()), len(keys)


def online_key_counts(client: redis.Redis) -> dict[str, int]:
    """Entities per feature view in the online store (``feed_ranking:{user_id=42}:<view>``)."""
    counts: Counter = Counter()
    for key in redis_keys(client, f"{PROJECT}:*"):
        counts[key.decode().rsplit(":", 1)[-1]] += 1
    return dict(sorted(counts.items()))


def tier_counts(settings: Settings, archived_until: datetime) -> TierCounts:
    pg_rows, pg_distinct = postgres_events(settings)
    pg_archived, _ = postgres_events(settings, before=archived_until)
    landed_rows, landed_distinct = lake_events(settings, lake.LANDED)
    archive_rows, _ = lake_events(settings, lake.ARCHIVE)
    client = redis.Redis.from_url(settings.redis.url)
    try:
        hot_events, hot_users = hot_counters(client)
        online = online_key_counts(client)
    finally:
        client.close()
    return TierCounts(pg_rows, pg_distinct, landed_rows, landed_distinct, archive_rows, pg_archived, hot_events,
                      hot_users,
                      online.get("user_realtime_features", 0), online)


# ---- online against the lake -------------------------------------------------------------------

def lake_rows(view: str, days: list[date], settings: Settings) -> pd.DataFrame:
    """Every row of ``view`` in the given partitions (those that exist)."""
    parts = []
    for day in days:
        if lake.parquet_keys(lake.feature_prefix(view, day), settings):
            parts.append(lake.read_table(lake.feature_prefix(view, day), settings))
    if not parts:
        return pd.DataFrame()
    return pa.concat_tables(parts, promote_options="default").to_pandas()


def same(a, b) -> bool:
    """Equal values, with null == null and lists compared element-wise (float32 as stored)."""
    a_null = a is None or (np.isscalar(a) and pd.isna(a))
    b_null = b is None or (np.isscalar(b) and pd.isna(b))
    if a_null or b_null:
        return a_null and b_null
    if isinstance(a, (list, tuple, np.ndarray)) or isinstance(b, (list, tuple, np.ndarray)):
        a, b = np.asarray(a), np.asarray(b)
        if a.dtype.kind == "f" or b.dtype.kind == "f":
            return a.shape == b.shape and np.array_equal(a.astype(np.float32), b.astype(np.float32))
        return a.shape == b.shape and bool((a == b).all())
    if isinstance(a, float) or isinstance(b, float):
        return float(a) == float(b)
    return a == b


@dataclass
class OnlineComparison:
    view: str
    entities: int
    values: int
    mismatches: list[tuple[int, str, object, object]]  # (entity, feature, online, lake)
    live: int = 0     # entities whose row is within the view's TTL (the others must be absent)


def compare_online(fs, view: str, day: date, settings: Settings, limit: int | None = None,
                   prefix: str | None = None) -> OnlineComparison:
    """``get_online_features`` for the entities of ``view``'s partition ``day`` (the newest one
    materialised; ``prefix`` for one written elsewhere, the midday candidates), value by value
    against that partition's Parquet rows; a row past the view's TTL must not be served at all."""
    frame = lake.read_table(prefix, settings).to_pandas() if prefix else lake_rows(view, [day], settings)
    fv = fs.get_feature_view(view)
    key = fv.entity_columns[0].name
    if limit is not None:
        frame = frame.sort_values(key).head(limit)
    frame = frame.reset_index(drop=True)
    names = [f.name for f in fv.features]
    online = fs.get_online_features(features=[f"{view}:{n}" for n in names],
                                    entity_rows=[{key: int(k)} for k in frame[key]]).to_dict()
    now = pd.Timestamp.now(tz="UTC")
    live = (pd.to_datetime(frame["event_timestamp"], utc=True) + (fv.ttl or timedelta(0)) > now).tolist() \
        if fv.ttl else [True] * len(frame)
    mismatches = []
    for i, entity in enumerate(frame[key].tolist()):
        for name in names:
            want = frame.at[i, name] if live[i] else None
            if not same(online[name][i], want):
                mismatches.append((int(entity), name, online[name][i], want))
    return OnlineComparison(view, len(frame), len(frame) * len(names), mismatches, sum(live))


@dataclass
class Liveness:
    view: str
    expected: int   # active users (or their candidates' items) with a row in the view's newest partition
    served: int


def liveness(fs, users: list[int], day: date, settings: Settings) -> list[Liveness]:
    """For every view of the ``ranking`` service: of the active ``users`` (and the items of their
    candidates) that have a value, how many get a live one from ``get_online_features``. The
    realtime view is expected for every user active in its TTL (``users`` are)."""
    from feedstore.contract.features import SERVICES, VIEWS

    if not users:
        return []
    served = fs.get_online_features(features=["user_candidates:candidate_item_ids"],
                                    entity_rows=[{"user_id": u} for u in users]).to_dict()["candidate_item_ids"]
    items = sorted({int(i) for ids in served if ids for i in ids[:20]})
    out = []
    for name in SERVICES["ranking"]:
        spec = VIEWS[name]
        key = spec.entity.join_key
        wanted = users if spec.entity.name == "user" else items
        if not spec.pushed:
            rows = lake_rows(name, [day], settings)
            have = set(rows[key].astype(int)) if len(rows) else set()
            wanted = [e for e in wanted if e in have]
        got = fs.get_online_features(features=[f"{name}:{spec.columns[0]}"],
                                     entity_rows=[{key: e} for e in wanted]).to_dict()[spec.columns[0]] if wanted else []
        out.append(Liveness(name, len(wanted), sum(v is not None for v in got)))
    return out


# ---- point in time -----------------------------------------------------------------------------

@dataclass
class PitComparison:
    rows: int
    values: int
    with_features: int
    mismatches: list[tuple[int, str, object, object]]  # (row, feature, training, expected)


def expected_point_in_time(rows: pd.DataFrame, features: pd.DataFrame, key: str, names: list[str],
                           ttl: timedelta) -> pd.DataFrame:
    """For each row, the newest feature row of its entity at or before its ``event_timestamp``
    and no older than ``ttl``: what a point-in-time join must return."""
    left = rows[[key, "event_timestamp"]].assign(_row=np.arange(len(rows))).sort_values("event_timestamp")
    right = features[[key, "event_timestamp", *names]].sort_values("event_timestamp")
    left["event_timestamp"] = left["event_timestamp"].astype("datetime64[us, UTC]")
    right["event_timestamp"] = right["event_timestamp"].astype("datetime64[us, UTC]")
    joined = pd.merge_asof(left, right, on="event_timestamp", by=key, direction="backward",
                           allow_exact_matches=True, tolerance=pd.Timedelta(ttl))
    return joined.sort_values("_row").reset_index(drop=True)


def compare_point_in_time(fs, training: pd.DataFrame, views: list[str], days: list[date],
                          settings: Settings) -> PitComparison:
    """Every feature of ``views`` in the training rows against ``expected_point_in_time``."""
    mismatches: list[tuple[int, str, object, object]] = []
    values = 0
    has_any = np.zeros(len(training), dtype=bool)
    for view in views:
        fv = fs.get_feature_view(view)
        key = fv.entity_columns[0].name
        names = [f.name for f in fv.features]
        expected = expected_point_in_time(training, lake_rows(view, days, settings), key, names, fv.ttl)
        for name in names:
            got, want = training[name].tolist(), expected[name].tolist()
            for i, (g, w) in enumerate(zip(got, want, strict=True)):
                values += 1
                has_any[i] |= not same(w, None)
                if not same(g, w):
                    mismatches.append((i, name, g, w))
    return PitComparison(len(training), values, int(has_any.sum()), mismatches)
