"""The runner against the real stack: Postgres tables and partitions, Parquet on S3, the CLI,
Data Docs. Frames and defects are covered in test_suites.py."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta

import psycopg
import pyarrow.parquet as pq
import pytest
from psycopg.types.json import Jsonb

from expectations.runner import ValidationError, validate
from feedstore.s3 import arrow_fs, bucket_path, s3_client
from feedstore.settings import Settings
from tests.expectations.conftest import NOW, make_events, make_items, make_training, make_users
from tests.expectations.test_suites import put

FEEDSTORE = [sys.executable, "-m", "feedstore.cli"]


@pytest.fixture(scope="module")
def catalog(settings: Settings) -> None:
    """Users and items of the generated frames, and the events in their daily partition."""
    users, items, events = make_users(), make_items(), make_events()
    with psycopg.connect(settings.postgres.dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE users, items, user_activity, activity_event_ids CASCADE")
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO users (user_id, created_at, age_range, country, language, preferred_categories) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                [(r["user_id"], r["created_at"], r["age_range"], r["country"], r["language"],
                  r["preferred_categories"]) for r in users.to_pylist()])
            cur.executemany(
                "INSERT INTO items (item_id, creator_id, category, tags, media_type, created_at) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                [(r["item_id"], r["creator_id"], r["category"], r["tags"], r["media_type"], r["created_at"])
                 for r in items.to_pylist()])
            conn.execute("SELECT ensure_activity_partitions(%s, %s)", (NOW.date() - timedelta(days=1), NOW.date()))
            cur.executemany(
                "INSERT INTO user_activity (event_id, user_id, item_id, event_type, timestamp, context, "
                "dwell_time_ms, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                [(r["event_id"], r["user_id"], r["item_id"], r["event_type"], r["timestamp"],
                  Jsonb({"device": r["device"], "platform": r["platform"], "session_id": r["session_id"]}),
                  r["dwell_time_ms"], NOW) for r in events.to_pylist()])


PARTITION = f"postgres:user_activity_p{NOW:%Y%m%d}"


def test_postgres_tables_pass_when_clean(catalog) -> None:
    for suite, target in (("activity_events", PARTITION), ("activity_events", "postgres:user_activity"),
                          ("items", "postgres:items"), ("users", "postgres:users")):
        summary = validate(suite, target, as_of=NOW + timedelta(hours=1)) if suite != "activity_events" \
            else validate(suite, target)
        assert summary.success, (suite, summary.failures)
        assert summary.row_count > 0


def test_postgres_defects_found_in_sql(settings: Settings, catalog) -> None:
    """Membership and the window are anti-joins in Postgres: bad rows are counted there."""
    with psycopg.connect(settings.postgres.dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO user_activity (event_id, user_id, item_id, event_type, timestamp, context, created_at) "
            "VALUES (gen_random_uuid(), 1, 424242, 'view', %(ts)s, '{}', %(ts)s), "
            "(gen_random_uuid(), 434343, 1000, 'view', %(ts)s, '{}', %(ts)s), "
            "(gen_random_uuid(), 1, 1000, 'like', %(old)s, %(ctx)s, %(ts)s)",
            {"ts": NOW, "old": NOW - timedelta(hours=3), "ctx": Jsonb({"device": "fridge", "session_id": "a\nb"})})
        conn.execute("UPDATE items SET category = 'astrology' WHERE item_id = 1001")
    try:
        events = validate("activity_events", PARTITION)
        items = validate("items", "postgres:items")
    finally:
        with psycopg.connect(settings.postgres.dsn, autocommit=True) as conn:
            conn.execute("DELETE FROM user_activity WHERE item_id = 424242 OR user_id = 434343 "
                         "OR context->>'device' = 'fridge'")
            conn.execute("UPDATE items SET category = 'tech' WHERE item_id = 1001")
    counts = {f.rule: f.unexpected_count for f in events.failures}
    assert counts == {"item_in_catalog": 1, "user_exists": 1, "timestamp_window": 1, "device_allowed": 1,
                      "session_id_printable": 1}
    assert [(f.rule, f.examples) for f in items.failures] == [("category_in_vocabulary", ["astrology"])]


def test_frame_membership_looked_up_in_postgres(catalog) -> None:
    table = make_events()
    assert validate("activity_events", table, ingested_at=NOW).success
    values = table.column("item_id").to_pylist()
    values[0] = 555_555
    bad = table.set_column(2, "item_id", __import__("pyarrow").array(values, "int64"))
    [failure] = validate("activity_events", bad, ingested_at=NOW).failures
    assert (failure.rule, failure.examples) == ("item_in_catalog", [555_555])


def test_parquet_prefix_on_s3_and_cli(settings: Settings, catalog, tmp_path) -> None:
    fs = arrow_fs(settings)
    events = make_events()
    pq.write_table(events.slice(0, 100), bucket_path("landed/hour=12/a.parquet", settings), filesystem=fs)
    pq.write_table(events.slice(100), bucket_path("landed/hour=12/b.parquet", settings), filesystem=fs)
    target = f"s3://{settings.s3.bucket}/landed/hour=12/"
    summary = validate("activity_events", target, ingested_at=NOW)
    assert summary.success and summary.row_count == events.num_rows

    late = NOW + timedelta(hours=2)
    bad = subprocess.run([*FEEDSTORE, "validate", "activity_events", target, "-p", f"ingested_at={late.isoformat()}",
                          "--docs", str(tmp_path / "docs"), "--docs-s3", "docs/run1", "--json"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1
    failures = json.loads(bad.stdout)["failures"]
    assert [(f["rule"], f["unexpected_count"]) for f in failures] == [("timestamp_window", events.num_rows)]
    assert (tmp_path / "docs" / "index.html").is_file()
    assert any(p.suffix == ".html" and "validations" in p.parts for p in (tmp_path / "docs").rglob("*"))
    head = s3_client(settings).head_object(Bucket=settings.s3.bucket, Key="docs/run1/index.html")
    assert head["ContentType"] == "text/html"


@pytest.mark.parametrize("args, message", [
    (["items", "postgres:no_such_table"], "cannot read postgres:no_such_table"),
    (["items", "postgres:items", "-p", "colour"], "--param wants KEY=VALUE"),
])
def test_cli_bad_arguments_are_one_line(settings: Settings, args, message) -> None:
    result = subprocess.run([*FEEDSTORE, "validate", *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_summary_metadata_is_json(catalog) -> None:
    table = make_events()
    bad = table.set_column(3, "event_type", __import__("pyarrow").array(["poke"] * table.num_rows))
    summary = validate("activity_events", bad, ingested_at=NOW)
    meta = json.loads(json.dumps(summary.to_metadata()))
    assert meta["expectations_failed"] == 1
    assert meta["event_type_allowed:event_type"]["unexpected_count"] == table.num_rows
    assert meta["event_type_allowed:event_type"]["examples"] == ["poke"] * 5


@pytest.mark.parametrize("suite, target, params, message", [
    ("nosuch", "postgres:items", {}, "unknown suite"),
    ("items", "/no/such/dir", {}, "no such file"),
    ("items", "postgres:items;drop", {}, "bad Postgres table name"),
    ("items", "postgres:items", {"colour": "red"}, "unknown parameter"),
    ("training_dataset", "postgres:items", {}, "needs ds="),
    ("activity_events", "postgres:items", {"ingested_at": "yesterday-ish"}, "bad parameter"),
    ("user_features", "postgres:items", {"views": "user_activity_features,nope"}, "unknown feature view"),
])
def test_bad_request_raises(suite, target, params, message) -> None:
    with pytest.raises(ValidationError, match=message):
        validate(suite, target, **params)


def test_cli_engine_option(settings: Settings, tmp_path) -> None:
    """``--engine`` picks the path; both report the same failure of the same training set."""
    path = tmp_path / "training.parquet"
    pq.write_table(put(make_training(), "label", 1, 1), path)
    found = {}
    for engine in ("gx", "duckdb"):
        result = subprocess.run([*FEEDSTORE, "validate", "training_dataset", str(path), "-p", "ds=2025-11-15",
                                 "--engine", engine, "--json"], capture_output=True, text=True, timeout=120)
        assert result.returncode == 1, result.stderr
        summary = json.loads(result.stdout)
        assert summary["engine"] == engine
        found[engine] = [(f["rule"], f["unexpected_count"]) for f in summary["failures"]]
    assert found["gx"] == found["duckdb"] == [("label_matches_sample_type", 1)]
    bad = subprocess.run([*FEEDSTORE, "validate", "training_dataset", str(path), "-p", "ds=2025-11-15",
                          "--engine", "spark"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "unknown engine" in bad.stderr
