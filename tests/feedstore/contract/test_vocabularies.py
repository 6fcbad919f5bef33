"""Open vocabularies: a catalog with a category and a country nobody listed is refused with a clear
reason, then passes validation, the suites and the features once ``vocabularies.toml`` (here a
copy named by FEED_CONTRACT_VOCABULARIES) lists them. Through the CLI on the real stack."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from feedstore.contract import vocabularies
from feedstore.settings import PROJECT_ROOT

from ...ingestion.conftest import env_of


def cli(settings, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "feedstore.cli", *args], cwd=PROJECT_ROOT,
                          env={**env_of(settings), **env}, capture_output=True, text=True, timeout=300)


@pytest.fixture()
def extended(tmp_path):
    path = tmp_path / "vocabularies.toml"
    path.write_text(vocabularies.load(vocabularies.DEFAULT_FILE).extended(categories=["anime"], countries=["KR"])
                    .to_toml())
    return {"FEED_CONTRACT_VOCABULARIES": str(path)}


@pytest.fixture()
def cleaned(settings, pg):
    """The session's other suites read these tables with today's vocabularies."""
    yield settings
    pg.execute("DELETE FROM items WHERE item_id = 9900001")
    pg.execute("DELETE FROM users WHERE user_id = 9900002")


def test_new_category_and_country_fail_before_and_pass_after_the_vocabulary_is_extended(cleaned, tmp_path, extended):
    settings = cleaned
    items = tmp_path / "items.jsonl"
    items.write_text(json.dumps({"item_id": "9900001", "creator_id": "3", "category": "anime", "media_type": "video",
                                 "created_at": "2025-03-01T00:00:00Z"}) + "\n")
    users = tmp_path / "users.jsonl"
    users.write_text(json.dumps({"user_id": "9900002", "created_at": "2025-03-01T00:00:00Z",
                                 "demographics": {"country": "KR"}, "preferences": {"categories": ["anime"]}}) + "\n")
    for kind, path, word in (("items", items, "anime"), ("users", users, "KR")):
        before = cli(settings, {}, "load", kind, str(path), "--rejects", str(tmp_path / f"{kind}.rej"))
        assert before.returncode == 1
        reject = json.loads((tmp_path / f"{kind}.rej").read_text())
        assert reject["reason"] == "bad_vocabulary" and word in reject["detail"]
        after = cli(settings, extended, "load", kind, str(path), "--rejects", str(tmp_path / f"{kind}.rej"))
        assert after.returncode == 0, after.stderr[-1500:]

    refused = cli(settings, {}, "validate", "items", "postgres:items", "--json")
    assert refused.returncode == 1 and "category_in_vocabulary" in refused.stdout
    passed = cli(settings, extended, "validate", "items", "postgres:items", "--json")
    assert passed.returncode == 0, passed.stdout[-2000:]
    assert cli(settings, {}, "validate", "users", "postgres:users", "--json").returncode == 1
    assert cli(settings, extended, "validate", "users", "postgres:users", "--json").returncode == 0

    # The features follow the configured list: one distribution slot per category, "anime" last.
    probe = ("import numpy as np, pyarrow as pa\n"
             "from feedstore.contract.features import USER_ACTIVITY\n"
             "from orchestration.assets.features import category_distribution\n"
             "dim = next(f.dim for f in USER_ACTIVITY.features if f.name == 'category_dist_30d')\n"
             "dist, top = category_distribution(np.array([1]), pa.table({'user_id': [1, 1], "
             "'category': ['anime', 'tech'], 'n': [3, 1]}))\n"
             "print(dim, dist.to_pylist()[0][-1], top.to_pylist()[0])\n")
    out = subprocess.run([sys.executable, "-c", probe], cwd=PROJECT_ROOT, env={**env_of(settings), **extended},
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["17", "0.75", "anime"], out.stderr[-1500:]


@pytest.mark.pure
def test_a_broken_vocabulary_file_is_refused_with_its_name(tmp_path):
    path = tmp_path / "v.toml"
    path.write_text('categories = ["a", "a"]\n')
    with pytest.raises(vocabularies.VocabularyError, match="categories lists a value twice"):
        vocabularies.load(path)
    path.write_text("categories = [")
    with pytest.raises(vocabularies.VocabularyError, match="v.toml"):
        vocabularies.load(path)
