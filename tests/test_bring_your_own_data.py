"""Done when: a catalog and profile set the generator did not make is loaded, streamed and run
through a daily partition with only the README's commands (``feedstore load``, kcat onto the
topics, ``feedstore ingest --replay``, ``dagster job execute`` of the daily pipeline), then served.

The data is a small MovieLens-shaped set made here: films in 19 genres (not the 16 categories),
MovieLens age bands, users from a country nobody listed, their ratings as events over the two days before today.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from datetime import datetime, time, timedelta, timezone
from pathlib import Path

import numpy as np
import psycopg
import pytest

from feedstore.contract import vocabularies
from feedstore.settings import PROJECT_ROOT

GENRES = ["action", "adventure", "animation", "children", "comedy", "crime", "documentary", "drama", "fantasy",
          "film-noir", "horror", "imax", "musical", "mystery", "romance", "sci-fi", "thriller", "war", "western"]
AGES = ["1", "18", "25", "35", "45", "50", "56"]
FILMS, PEOPLE, RATINGS = 120, 40, 900


@pytest.fixture(scope="module")
def namespace(stack, tmp_path_factory):
    from devtools.sandbox import sandbox

    tmp = tmp_path_factory.mktemp("byod")
    vocab = tmp / "vocabularies.toml"
    vocab.write_text(vocabularies.load(vocabularies.DEFAULT_FILE)
                     .extended(categories=GENRES, age_ranges=AGES, countries=["KR"]).to_toml())
    with sandbox("byod-readme") as s:
        env = {**os.environ, "FEED_CONTRACT_VOCABULARIES": str(vocab), **s.feast_env(),
               "DAGSTER_HOME": str(tmp / "dagster"), "FEED_INGEST_UNKNOWN_GRACE_SECONDS": "0"}
        (tmp / "dagster").mkdir()
        yield s, env, tmp


def dataset(tmp: Path, day) -> tuple[Path, Path, list[str]]:
    rng = random.Random(5)
    films = tmp / "movies.jsonl"
    with films.open("w") as f:
        for i in range(1, FILMS + 1):
            year = rng.randrange(1921, 2000)  # most of them from before 1970
            f.write(json.dumps({"item_id": str(i), "creator_id": str(5000 + i % 17), "category": rng.choice(GENRES),
                                "tags": [f"{year}s"], "media_type": "video", "created_at": f"{year}-06-01T00:00:00Z",
                                "content_embedding": [rng.gauss(0, 1) for _ in range(32)]}) + "\n")
    people = tmp / "users.csv"
    with people.open("w") as f:
        f.write("user_id,created_at,age_range,country,language,categories,following\n")
        for u in range(1, PEOPLE + 1):
            follows = json.dumps([str(rng.randrange(1, PEOPLE + 1)) for _ in range(2)]).replace('"', '""')
            f.write(f'{u},2000-04-25T00:00:00Z,{rng.choice(AGES)},KR,en,"[""{rng.choice(GENRES)}""]","{follows}"\n')
    start = datetime.combine(day - timedelta(days=1), time(0), tzinfo=timezone.utc)
    lines = []
    for _ in range(RATINGS):
        ts = start + timedelta(seconds=rng.randrange(2 * 86_400))
        user = rng.randrange(1, PEOPLE + 1)
        event = {"user_id": str(user), "item_id": str(rng.randrange(1, FILMS + 1)),
                 "event_type": rng.choice(["view", "view", "like", "share", "comment"]),
                 "timestamp": ts.isoformat().replace("+00:00", "Z"), "dwell_time_ms": rng.randrange(0, 90_000)}
        lines.append(f"{user}\t{json.dumps(event)}")
    return films, people, lines


def run(env: dict, *args: str, stdin: str | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(args), cwd=PROJECT_ROOT, env=env, input=stdin, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{args}: {proc.stderr[-3000:]}"
    return proc


@pytest.mark.nightly
def test_a_catalog_the_generator_did_not_make_through_a_daily_partition(namespace):
    from devtools.stack.tools import require

    s, env, tmp = namespace
    day = datetime.now(timezone.utc).date() - timedelta(days=1)
    films, people, events = dataset(tmp, day)
    feedstore = [sys.executable, "-m", "feedstore.cli"]
    run(env, *feedstore, "feast", "apply")
    load_items = json.loads(run(env, *feedstore, "load", "items", str(films), "--json",
                                "--rejects", str(tmp / "r1")).stdout.splitlines()[-1])
    load_users = json.loads(run(env, *feedstore, "load", "users", str(people), "--json",
                                "--rejects", str(tmp / "r2")).stdout.splitlines()[-1])
    assert (load_items["inserted"], load_users["inserted"]) == (FILMS, PEOPLE)

    kcat = require("kcat")
    run(env, kcat, "-b", s.kafka.bootstrap, "-t", s.kafka.topic_activity, "-P", "-K", "\t", stdin="\n".join(events))
    # One film streamed on the item-catalog topic, a profile change on user-profiles.
    streamed = {"item_id": "100001", "creator_id": "1", "category": "film-noir", "media_type": "video",
                "created_at": "1944-09-01T00:00:00Z", "content_embedding": [1.0] * 32}
    run(env, kcat, "-b", s.kafka.bootstrap, "-t", s.kafka.topic_items, "-P", "-K", "\t",
        stdin=f"100001\t{json.dumps(streamed)}")
    run(env, *feedstore, "ingest", "--replay", "--until-idle", "8", timeout=600)
    with psycopg.connect(s.postgres.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM user_activity").fetchone()[0] == RATINGS
        assert conn.execute("SELECT category FROM items WHERE item_id = 100001").fetchone() == ("film-noir",)

    for d in (day - timedelta(days=1), day):  # oldest first, as the README says
        run(env, str(Path(sys.executable).parent / "dagster"), "job", "execute", "-m", "orchestration.definitions",
            "-j", "daily_pipeline", "--tags", json.dumps({"dagster/partition": d.isoformat()}), timeout=900)
    from orchestration import lake

    features = lake.read_table(lake.feature_prefix("item_catalog_features", day), s)
    assert features.num_rows == FILMS + 1 and set(features["category"].to_pylist()) <= set(GENRES)
    users = lake.read_table(lake.feature_prefix("user_activity_features", day), s)
    dist = np.asarray(users["category_dist_30d"].to_pylist())
    categories = vocabularies.load(env["FEED_CONTRACT_VOCABULARIES"]).categories
    assert dist.shape[1] == len(categories) == 16 + len(set(GENRES) - {"comedy"}) and np.allclose(dist.sum(axis=1)[dist.sum(axis=1) > 0], 1, atol=1e-4)
    assert dist[:, 16:].sum() > dist[:, :16].sum(), "the genres nobody listed by default carry the distribution"
    # Day two's training rows join day one's rows point in time: the embeddings as of its end.
    training = lake.read_table(lake.day_prefix(lake.TRAINING + "/ranking_daily", day), s)
    assert training.num_rows > 0 and training["item_embedding"].null_count < training.num_rows / 10
    assert training["category"].null_count < training.num_rows / 10

    probe = ("from feedstore.feast.store import store\n"
             "print(store().get_online_features(features=['item_catalog_features:category', "
             "'item_embedding:item_embedding'], entity_rows=[{'item_id': 100001}, {'item_id': 7}]).to_dict()['category'])")
    out = run(env, sys.executable, "-c", probe).stdout.strip().splitlines()[-1]
    assert out.startswith("['film-noir', '") and "None" not in out
