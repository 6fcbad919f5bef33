"""The feature computations that need no store, called directly on small tables built for their
edge cases, against independent computations written here."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pytest

from feedstore.contract.rules import CATEGORIES, EMBEDDING_DIM
from orchestration.assets.features import POPULARITY_BLEND, category_distribution, l2_normalise, rank_candidates

pytestmark = pytest.mark.pure
TS = datetime(2026, 11, 25, tzinfo=timezone.utc)


def test_category_distribution_shares_top_and_idle_users():
    counts = pa.table({"user_id": [1, 1, 2, 3], "category": ["tech", "music", "not-a-category", "music"],
                       "n": [3, 1, 5, 2]})
    dist, top = category_distribution(np.array([1, 2, 3, 4]), counts)
    rows = dist.to_pylist()
    assert all(len(r) == len(CATEGORIES) for r in rows)
    expected_1 = [0.0] * len(CATEGORIES)
    expected_1[CATEGORIES.index("tech")], expected_1[CATEGORIES.index("music")] = 0.75, 0.25
    assert rows[0] == pytest.approx(expected_1)
    assert rows[1] == [0.0] * len(CATEGORIES)          # only an unknown category: as idle
    assert rows[2][CATEGORIES.index("music")] == 1.0
    assert rows[3] == [0.0] * len(CATEGORIES)          # no activity at all
    assert top.to_pylist() == ["tech", None, "music", None]


def test_l2_normalise_keeps_zero_rows_zero():
    out = l2_normalise(np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32))
    assert out.tolist() == [pytest.approx([0.6, 0.8]), [0.0, 0.0]]


def _embeddings(rows: list[list[float]]) -> pa.Array:
    return pa.array([r + [0.0] * (EMBEDDING_DIM - len(r)) for r in rows], pa.list_(pa.float32()))


def test_rank_candidates_blends_similarity_and_popularity_and_skips_seen_items():
    users = pa.table({"user_id": [10, 20], "user_embedding": _embeddings([[1.0, 0.0], [0.0, 1.0]])})
    pool = pa.table({"item_id": [1, 2, 3, 4], "views_7d": [100, 1, 10, 0],
                     "item_embedding": _embeddings([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.6, 0.8]])})
    seen = pa.table({"user_id": [10, 99], "item_id": [2, 1]})  # user 99 is not in the run: ignored
    out = rank_candidates(users, pool, seen, k=2, ts=TS).to_pydict()

    items = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.6, 0.8]])
    popularity = np.log1p([100, 1, 10, 0]) / np.log1p(100)
    for user, vector, excluded, got_ids, got_scores in zip(
            [10, 20], ([1.0, 0.0], [0.0, 1.0]), ({2}, set()), out["candidate_item_ids"], out["candidate_scores"]):
        scores = (1 - POPULARITY_BLEND) * items @ np.array(vector) + POPULARITY_BLEND * popularity
        ranked = [i + 1 for i in np.argsort(-scores) if i + 1 not in excluded][:2]
        assert got_ids == ranked, user
        assert got_scores == pytest.approx([scores[i - 1] for i in ranked], rel=1e-5)
    assert out["user_id"] == [10, 20]
    assert set(out["event_timestamp"]) == {TS}
