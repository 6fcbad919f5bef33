from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from psycopg import sql

from devtools.synthetic import generator as gen
from feedstore.contract.events import EVENT_SCHEMA
from feedstore.contract.rules import CATEGORIES, EMBEDDING_DIM, EVENT_TYPES, MAX_DWELL_MS
from ingestion.events import derive_event_id
from tests.ingestion.kafka_reading import high_watermarks, read_between

END = datetime(2025, 11, 16, 6, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def small() -> dict[str, pa.Table]:
    """The demo scale, big enough for distribution checks and still under a second to draw."""
    spec = gen.spec_for("small", seed=7, end=END)
    return {"spec": spec, "users": gen.users_table(spec), "items": gen.items_table(spec),
            "events": gen.events_table(spec), "follows": gen.follows_table(spec)}


def _tiny(seed: int) -> tuple[pa.Table, pa.Table, pa.Table]:
    spec = gen.spec_for("tiny", seed=seed, end=END)
    return gen.users_table(spec), gen.items_table(spec), gen.events_table(spec)


def test_same_seed_same_frames_other_seed_other_frames():
    first, again, other = _tiny(1), _tiny(1), _tiny(2)
    for a, b in zip(first, again, strict=True):
        assert a.equals(b)
    for a, b in zip(first, other, strict=True):
        assert not a.equals(b)


def test_scales_are_the_documented_sizes():
    users, items, events = _tiny(3)
    assert (users.num_rows, items.num_rows) == (200, 2_000)
    assert 4_000 <= events.num_rows <= 6_000
    assert events.schema == EVENT_SCHEMA
    assert gen.SCALES["seed"].items == 10_000_000 and gen.SCALES["seed"].events_per_day == 1_000_000


def test_events_in_window_sorted_and_referencing_existing_users_and_items(small):
    spec, events, items = small["spec"], small["events"], small["items"]
    ts = events["timestamp"].to_numpy().astype("datetime64[us]").astype(np.int64)
    assert ts.min() >= spec.start_ms * 1000 and ts.max() < spec.end_ms * 1000
    assert (np.diff(ts) >= 0).all()
    assert pc.all(pc.is_in(events["user_id"], small["users"]["user_id"])).as_py()
    item_idx = events["item_id"].to_numpy() - 1
    assert (items["item_id"].to_numpy()[item_idx] == events["item_id"].to_numpy()).all()
    created = items["created_at"].to_numpy().astype("datetime64[us]").astype(np.int64)[item_idx]
    assert (created < ts).all()
    assert len(set(events["event_id"].to_pylist())) == events.num_rows


def test_item_popularity_is_heavy_tailed(small):
    counts = np.sort(np.bincount(small["events"]["item_id"].to_numpy()))[::-1]
    counts = counts[counts > 0]
    top = max(1, small["items"].num_rows // 100)
    assert counts[:top].sum() / counts.sum() > 0.3  # top 1% of items: a uniform catalog would give ~1-2%
    ranks = np.arange(1, 201)
    slope = np.polyfit(np.log(ranks), np.log(counts[:200]), 1)[0]
    assert -1.6 < slope < -0.5


def test_dwell_is_positive_and_longer_when_engaged(small):
    events = small["events"]
    dwell = events["dwell_time_ms"].to_numpy()
    assert (dwell > 0).all() and (dwell <= MAX_DWELL_MS).all()
    views = events.filter(pc.equal(events["event_type"], "view"))
    liked = set(zip(*[events.filter(pc.equal(events["event_type"], "like"))[c].to_pylist()
                      for c in ("session_id", "item_id")]))
    is_liked = np.array([k in liked for k in zip(views["session_id"].to_pylist(), views["item_id"].to_pylist())])
    view_dwell = views["dwell_time_ms"].to_numpy()
    assert np.median(view_dwell[is_liked]) > 1.5 * np.median(view_dwell[~is_liked])


def test_users_mostly_consume_their_preferred_categories(small):
    users, events, items = small["users"], small["events"], small["items"]
    preferred = dict(zip(users["user_id"].to_pylist(), users["preferred_categories"].to_pylist()))
    category = items["category"].to_numpy(zero_copy_only=False)[events["item_id"].to_numpy() - 1]
    hits: dict[int, list[bool]] = {}
    for user, cat in zip(events["user_id"].to_pylist(), category):
        hits.setdefault(user, []).append(cat in preferred[user])
    shares = [np.mean(h) for h in hits.values() if len(h) >= 20]
    assert len(shares) > 100
    assert np.median(shares) > 0.7


def test_engagement_follows_a_view_and_has_plausible_rates(small):
    events = small["events"]
    types = events["event_type"].to_pylist()
    n = {t: types.count(t) for t in EVENT_TYPES}
    assert 0.05 < n["like"] / n["view"] < 0.15
    assert 0.01 < n["share"] / n["view"] < 0.04
    assert 0.015 < n["comment"] / n["view"] < 0.06
    seen: set[tuple[str, int]] = set()
    for etype, session, item in zip(types, events["session_id"].to_pylist(), events["item_id"].to_pylist()):
        if etype == "view":
            seen.add((session, item))
        else:
            assert (session, item) in seen


def test_a_session_is_one_user_on_one_client(small):
    df = small["events"].select(["session_id", "user_id", "device", "platform"]).to_pandas()
    per_session = df.groupby("session_id").nunique()
    assert (per_session == 1).all().all()
    assert df.groupby("session_id").size().mean() > 3


def test_embeddings_cluster_by_category(small):
    items = small["items"].slice(0, 5_000)
    emb = np.asarray(items["content_embedding"].to_pylist(), dtype=np.float32)
    assert emb.shape == (5_000, EMBEDDING_DIM)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    cats = np.array(items["category"].to_pylist())
    sim = emb @ emb.T
    same = cats[:, None] == cats[None, :]
    off_diagonal = ~np.eye(len(cats), dtype=bool)
    assert sim[same & off_diagonal].mean() > 0.4
    assert sim[~same].mean() < 0.2
    assert set(cats) == set(CATEGORIES)


def test_follows_and_profile_agree(small):
    users, follows = small["users"], small["follows"]
    pairs = follows.select(["user_id", "followed_id"]).to_pandas()
    assert (pairs.user_id != pairs.followed_id).all()
    assert not pairs.duplicated().any()
    following = users["following"].to_pylist()
    assert sum(map(len, following)) == follows.num_rows
    for lst in users["preferred_categories"].to_pylist():
        assert 1 <= len(lst) <= 4 and len(set(lst)) == len(lst) and set(lst) <= set(CATEGORIES)


def test_event_ids_and_wire_json_match_the_contract():
    _, _, events = _tiny(4)
    lines = gen.event_json(events).to_pylist()
    keys = gen.event_keys(events).to_pylist()
    for row, line, key in zip(events.to_pylist(), lines, keys, strict=True):
        body = json.loads(line)
        assert list(body) == ["user_id", "item_id", "event_type", "timestamp", "context", "dwell_time_ms", "event_id"]
        assert body["user_id"] == str(row["user_id"]) and key == body["user_id"].encode()
        assert body["context"] == {"device": row["device"], "platform": row["platform"],
                                   "session_id": row["session_id"]}
        ts = datetime.fromisoformat(body["timestamp"])
        assert ts == row["timestamp"] and body["timestamp"].endswith("Z")
        expected = derive_event_id(row["user_id"], row["item_id"], row["event_type"], row["timestamp"],
                                   row["session_id"])
        assert body["event_id"] == row["event_id"] == str(expected)


def test_format_timestamps_matches_the_scalar_formatter():
    from ingestion.events import format_timestamp

    us = np.array([0, 120_000, 123_000, 100_000, 1_000_000, 1_763_200_000_010_000], dtype=np.int64)
    arr = pa.array(us, pa.timestamp("us", tz="UTC"))
    assert gen.format_timestamps(arr).to_pylist() == [format_timestamp(t) for t in arr.to_pylist()]


def test_bad_specs_are_refused():
    with pytest.raises(ValueError, match="unknown scale"):
        gen.spec_for("huge")
    with pytest.raises(ValueError, match="days"):
        gen.spec_for("tiny", days=0)
    with pytest.raises(ValueError, match="timezone"):
        gen.spec_for("tiny", end=datetime(2025, 1, 1))


# ---- against the real stack ------------------------------------------------------------------

FEEDSTORE = str(Path(sys.executable).parent / "feedstore")


def _feedstore(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([FEEDSTORE, *args], capture_output=True, text=True, env=os.environ.copy(), timeout=300)


def test_generate_tiny_loads_postgres_s3_and_kafka(settings, pg):
    from devtools.synthetic.seeding import snapshot_prefix
    from feedstore.s3 import arrow_fs, bucket_path

    spec = gen.spec_for("tiny", seed=11, end=END)
    before = high_watermarks(settings.kafka.bootstrap, settings.kafka.topic_activity)
    args = ["generate", "--scale", "tiny", "--seed", "11", "--end", "2025-11-16T06:00:00Z"]
    done = _feedstore(*args)
    assert done.returncode == 0, done.stderr
    after = high_watermarks(settings.kafka.bootstrap, settings.kafka.topic_activity)

    users, items, follows = gen.users_table(spec), gen.items_table(spec), gen.follows_table(spec)
    events = gen.events_table(spec)
    counts = {t: pg.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t))).fetchone()[0]
              for t in ("users", "user_follows", "items")}
    assert counts == {"users": users.num_rows, "user_follows": follows.num_rows, "items": items.num_rows}
    row = pg.execute("SELECT preferred_categories, demographics->>'country', preferences->'categories' "
                     "FROM users WHERE user_id = 1").fetchone()
    assert row[0] == users["preferred_categories"][0].as_py() == row[2]
    assert row[1] == users["country"][0].as_py()
    item = pg.execute("SELECT tags, created_at FROM items WHERE item_id = 5").fetchone()
    assert item == (items["tags"][4].as_py(), items["created_at"][4].as_py())

    fs = arrow_fs(settings)
    snap_users = pq.read_table(bucket_path(snapshot_prefix("users", spec), settings), filesystem=fs)
    snap_items = pq.read_table(bucket_path(snapshot_prefix("items", spec), settings), filesystem=fs)
    assert snap_users.num_rows == users.num_rows and snap_items.num_rows == items.num_rows
    assert snap_items.sort_by("item_id")["content_embedding"].equals(items["content_embedding"])

    got = read_between(settings.kafka.bootstrap, settings.kafka.topic_activity, before, after)
    messages = [m for part in got.values() for m in part]
    assert len(messages) == events.num_rows
    assert sorted(m.value() for m in messages) == sorted(pc.cast(gen.event_json(events), pa.binary()).to_pylist())
    for part in got.values():  # one user's events stay in time order on one partition
        for m in part:
            assert m.key() == json.loads(m.value())["user_id"].encode()
        stamps: dict[bytes, list[str]] = {}
        for m in part:
            stamps.setdefault(m.key(), []).append(json.loads(m.value())["timestamp"])
        assert all(s == sorted(s) for s in stamps.values())

    again = _feedstore(*args, "--events-to", "none")  # truncate-and-load: same rows, no events
    assert again.returncode == 0, again.stderr
    assert pg.execute("SELECT count(*) FROM items").fetchone()[0] == items.num_rows
    assert high_watermarks(settings.kafka.bootstrap, settings.kafka.topic_activity) == after


def test_generate_events_to_file(settings, tmp_path):
    out = tmp_path / "events.jsonl"
    done = _feedstore("generate", "--scale", "tiny", "--seed", "5", "--end", "2025-11-16T06:00:00",
                      "--days", "1", "--events-to", "file", "--file", str(out))
    assert done.returncode == 0, done.stderr
    events = gen.events_table(gen.spec_for("tiny", seed=5, end=END, days=1))
    assert out.read_bytes().splitlines() == pc.cast(gen.event_json(events), pa.binary()).to_pylist()


@pytest.mark.parametrize("args, message", [
    (["--scale", "huge"], "huge"),
    (["--end", "yesterday"], "ISO-8601"),
    (["--events-to", "file"], "--file"),
])
def test_generate_bad_arguments_are_one_line_errors(args, message):
    done = _feedstore("generate", *args)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


def test_generate_without_schema_says_migrate(settings):
    from urllib.parse import urlsplit

    import psycopg

    name = f"{urlsplit(settings.postgres.dsn).path.lstrip('/')}_empty"
    from devtools.stack.postgres import PostgresService

    admin = PostgresService(settings).admin_dsn()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
            sql.Identifier(name), sql.Identifier(urlsplit(settings.postgres.dsn).username)))
    try:
        env = {**os.environ, "FEED_POSTGRES_DSN": urlsplit(settings.postgres.dsn)._replace(path=f"/{name}").geturl()}
        done = subprocess.run([FEEDSTORE, "generate", "--scale", "tiny", "--events-to", "none"],
                              capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 2 and "feedstore migrate" in done.stderr
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
