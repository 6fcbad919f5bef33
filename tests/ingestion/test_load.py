"""``feedstore load``: each format through the CLI into the real Postgres and lake; a second run
changes nothing; rejects file and exit code; stale rows change nothing."""

from __future__ import annotations

import json
import subprocess
import sys

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from feedstore.contract import lake
from feedstore.settings import PROJECT_ROOT

from .conftest import env_of

DIM = 32


def item(i: int, *, category: str = "tech", updated: str | None = None, created: str = "2025-06-01T00:00:00Z",
         embedding: float = 0.5) -> dict:
    out = {"item_id": str(i), "creator_id": "77", "category": category, "tags": ["a", "b"], "media_type": "video",
           "created_at": created, "content_embedding": [embedding] * DIM}
    if updated:
        out["updated_at"] = updated
    return out


def user(i: int, *, country: str = "US", following=("5", "6"), updated: str | None = None) -> dict:
    out = {"user_id": str(i), "created_at": "2024-01-15T00:00:00Z",
           "demographics": {"age_range": "25-34", "country": country, "language": "en"},
           "preferences": {"categories": ["tech", "sports"], "following": list(following)}}
    if updated:
        out["updated_at"] = updated
    return out


def run_load(settings, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "feedstore.cli", "load", *args, "--json"], cwd=PROJECT_ROOT,
                          env=env_of(settings), capture_output=True, text=True, timeout=300)


def summary(proc: subprocess.CompletedProcess) -> dict:
    return json.loads(proc.stdout.strip().splitlines()[-1])


def write_jsonl(path, rows, extra_lines=()) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "".join(line + "\n" for line in extra_lines))


def items_rows(pg: psycopg.Connection, ids) -> dict:
    rows = pg.execute("SELECT item_id, category, tags, media_type, created_at, updated_at, ingested_at FROM items "
                      "WHERE item_id = ANY(%s) ORDER BY item_id", (list(ids),)).fetchall()
    return {r[0]: r for r in rows}


def lake_versions(settings, ids) -> list[tuple]:
    from feedstore.s3 import arrow_fs, bucket_path
    from orchestration.lake import parquet_keys

    fs, out = arrow_fs(settings), []
    for key in parquet_keys(lake.EMBEDDINGS + "/", settings):
        t = pq.read_table(bucket_path(key, settings), filesystem=fs)
        out += [(r["item_id"], r["valid_from"], r["content_embedding"][0]) for r in t.to_pylist()
                if r["item_id"] in ids]
    return sorted(out)


def test_jsonl_items_load_twice_changes_nothing_and_rejects_go_to_the_file(settings, pg, tmp_path):
    ids = range(9_100_001, 9_100_011)
    path = tmp_path / "items.jsonl"
    write_jsonl(path, [item(i) for i in ids], ['{"item_id": "9100099", "creator_id": "1"}', "not json",
                                               json.dumps(item(9_100_098, category="no-such-category"))])
    rejects = tmp_path / "rejects.jsonl"
    first = run_load(settings, "items", str(path), "--rejects", str(rejects))
    assert first.returncode == 1, first.stderr
    s = summary(first)
    assert (s["inserted"], s["rejected"]) == (10, 3)
    assert s["reasons"] == {"bad_json": 1, "bad_vocabulary": 1, "missing_field": 1}
    lines = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [(r["row"], r["reason"]) for r in lines] == [(11, "missing_field"), (12, "bad_json"), (13, "bad_vocabulary")]
    assert "no-such-category" in lines[2]["detail"]
    before, versions = items_rows(pg, ids), lake_versions(settings, set(ids))
    assert len(before) == 10 and len(versions) == 10

    second = run_load(settings, "items", str(path), "--rejects", str(rejects))
    assert second.returncode == 1
    s = summary(second)
    assert (s["inserted"], s["updated"], s["unchanged"]) == (0, 0, 10)
    assert items_rows(pg, ids) == before, "a second run rewrote rows"
    assert lake_versions(settings, set(ids)) == versions


def test_newer_version_updates_and_stale_one_changes_nothing(settings, pg, tmp_path):
    i = 9_200_001
    path = tmp_path / "v1.jsonl"
    write_jsonl(path, [item(i, updated="2025-07-01T00:00:00Z", embedding=0.1)])
    assert run_load(settings, "items", str(path), "--rejects", str(tmp_path / "r")).returncode == 0
    write_jsonl(path, [item(i, category="music", updated="2025-08-01T00:00:00Z", embedding=0.2)])
    s = summary(run_load(settings, "items", str(path), "--rejects", str(tmp_path / "r")))
    assert s["updated"] == 1
    write_jsonl(path, [item(i, category="news", updated="2025-07-15T00:00:00Z", embedding=0.3)])
    s = summary(run_load(settings, "items", str(path), "--rejects", str(tmp_path / "r")))
    assert (s["updated"], s["stale"]) == (0, 1)
    assert items_rows(pg, [i])[i][1] == "music"
    versions = lake_versions(settings, {i})
    assert [round(v[2], 3) for v in versions] == [0.1, 0.2], "every accepted version kept, the stale one not"
    assert versions[0][1] < versions[1][1]


def test_parquet_and_csv_items_and_users(settings, pg, tmp_path):
    ids = [9_300_001, 9_300_002]
    table = pa.Table.from_pylist([{**item(i), "created_at": None} for i in ids]).drop_columns(["created_at"])
    ts = pa.array([pa.scalar(1_700_000_000_000_000, pa.timestamp("us", tz="UTC"))] * 2)
    pq.write_table(table.append_column("created_at", ts), tmp_path / "items.parquet")
    s = summary(run_load(settings, "items", str(tmp_path / "items.parquet"), "--rejects", str(tmp_path / "r")))
    assert (s["inserted"], s["rejected"]) == (2, 0)

    csv_rows = pa.table({"item_id": ["9300003"], "creator_id": ["8"], "category": ["art"],
                         "tags": ['["x", "y"]'], "media_type": ["image"], "created_at": ["1965-03-01T00:00:00Z"],
                         "content_embedding": [json.dumps([0.25] * DIM)]})
    pacsv.write_csv(csv_rows, tmp_path / "items.csv")
    s = summary(run_load(settings, "items", str(tmp_path / "items.csv"), "--rejects", str(tmp_path / "r")))
    assert (s["inserted"], s["rejected"]) == (1, 0)
    row = items_rows(pg, [9_300_003])[9_300_003]
    assert row[2] == ["x", "y"] and row[4].year == 1965

    users = pa.table({"user_id": ["9400001", "9400002"], "created_at": ["2024-01-15T00:00:00Z"] * 2,
                      "age_range": ["25-34", "99-100"], "country": ["US", "US"], "language": ["en", "en"],
                      "categories": ['["tech"]', '["tech"]'], "following": ['["11", "12"]', "[]"]})
    pacsv.write_csv(users, tmp_path / "users.csv")
    proc = run_load(settings, "users", str(tmp_path / "users.csv"), "--rejects", str(tmp_path / "ru"))
    assert proc.returncode == 1 and summary(proc)["reasons"] == {"bad_vocabulary": 1}
    follows = pg.execute("SELECT followed_id FROM user_follows WHERE user_id = 9400001 ORDER BY 1").fetchall()
    assert [f[0] for f in follows] == [11, 12]

    path = tmp_path / "users.jsonl"
    write_jsonl(path, [user(9_400_001, following=("13",), updated="2025-01-01T00:00:00Z")])
    assert run_load(settings, "users", str(path), "--rejects", str(tmp_path / "ru")).returncode == 0
    follows = pg.execute("SELECT followed_id FROM user_follows WHERE user_id = 9400001").fetchall()
    assert follows == [(13,)], "the newer profile's following list replaces the old one"


@pytest.mark.parametrize("args, message", [(["items", "/nonexistent.jsonl"], "no such file"),
                                           (["items", "{tmp}/x.txt"], "unknown format")])
def test_bad_arguments_are_one_line(settings, tmp_path, args, message):
    (tmp_path / "x.txt").write_text("{}")
    proc = run_load(settings, *[a.format(tmp=tmp_path) for a in args])
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
