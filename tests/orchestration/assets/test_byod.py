"""Bring your own data through a daily partition: items loaded with ``feedstore load`` (not the
generator), the catalog snapshot's watermark edges (the boundary instant, items from before
1970, a late record) and content embeddings read point in time."""

from __future__ import annotations

import json
from datetime import date, datetime, timezone

import numpy as np
import pytest

from ingestion.load import load
from feedstore.s3 import duckdb_connection
from orchestration import lake
from orchestration.assets.snapshots import MANIFEST

from ..conftest import materialize

D0, D1 = date(2026, 11, 20), date(2026, 11, 21)
A, B, C, D, E, F = range(7_000_001, 7_000_007)


def one_hot(i: int) -> list[float]:
    v = [0.0] * 32
    v[i] = 3.0
    return v


def item(i: int, created: str, *, category: str = "tech", updated: str | None = None, hot: int = 0) -> dict:
    out = {"item_id": str(i), "creator_id": "9", "category": category, "tags": ["t"], "media_type": "text",
           "created_at": created, "content_embedding": one_hot(hot)}
    return {**out, "updated_at": updated} if updated else out


@pytest.fixture(scope="module")
def own(stack):
    from devtools.sandbox import sandbox

    with sandbox("byod") as isolated:
        yield isolated


def load_items(settings, tmp_path, name: str, rows: list[dict]) -> None:
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = load("items", [path], tmp_path / f"{name}.rejects", settings)
    assert summary.rejected == 0, (tmp_path / f"{name}.rejects").read_text()


def ids(prefix: str, settings) -> set[int]:
    return set(lake.read_table(prefix, settings).column("item_id").to_pylist())


def embedding_of(day: date, item_id: int, settings) -> np.ndarray:
    """The item's row at the day's end (the partition also holds the day's changes, at their time)."""
    rows = lake.read_table(lake.feature_prefix("item_embedding", day), settings).to_pylist()
    return np.asarray(next(r["item_embedding"] for r in rows
                           if r["item_id"] == item_id and r["event_timestamp"] == lake.day_end(day)))


def test_watermark_edges_and_point_in_time_embeddings(own, tmp_path):
    s = own
    load_items(s, tmp_path, "first", [item(A, "1960-05-01T00:00:00Z"), item(B, "1969-12-31T23:59:59.999999Z"),
                                      item(C, "1970-01-01T00:00:00Z"), item(D, "2026-11-20T12:00:00Z"),
                                      item(E, "2026-11-21T00:00:00Z")])
    assert materialize(D0, ["item_catalog_snapshot", "item_embeddings"]).success
    assert lake.get_json(lake.day_prefix(lake.CATALOG_ITEMS, D0) + MANIFEST, s)["full"]
    assert ids(lake.day_prefix(lake.CATALOG_ITEMS, D0), s) == {A, B, C, D}, "items from before 1970 kept"
    assert ids(lake.feature_prefix("item_catalog_features", D0), s) == {A, B, C, D}

    # After the first export: A changes (new category and embedding), F arrives late (created
    # before D0, loaded now); E was created at the very instant D0's export stopped at.
    load_items(s, tmp_path, "second", [item(A, "1960-05-01T00:00:00Z", category="music",
                                            updated="2026-11-21T06:00:00Z", hot=1),
                                       item(F, "2026-11-19T08:00:00Z")])
    assert materialize(D1, ["item_catalog_snapshot", "item_embeddings"]).success
    assert ids(lake.day_prefix(lake.CATALOG_ITEMS, D1), s) >= {A, E, F}
    features = {r["item_id"]: r for r in
                lake.read_table(lake.feature_prefix("item_catalog_features", D1), s).to_pylist()}
    assert set(features) == {A, B, C, D, E, F}
    assert features[A]["category"] == "music"
    assert features[A]["item_age_days"] > 365 * 66

    # Point in time: D0's row has A's first embedding, D1's the one valid from 2026-11-21T06:00.
    assert np.argmax(embedding_of(D0, A, s)) == 0 and np.isclose(np.linalg.norm(embedding_of(D0, A, s)), 1)
    assert np.argmax(embedding_of(D1, A, s)) == 1
    assert np.argmax(embedding_of(D1, F, s)) == 0


def test_versions_are_read_as_of_the_time_asked(own):
    from orchestration import sources

    with duckdb_connection(own) as con:
        sources.content_embeddings(con, own, datetime(2026, 11, 21, 5, tzinfo=timezone.utc))
        before = dict(con.execute("SELECT item_id, list_position(content_embedding, 3.0) FROM content_embeddings "
                                  "WHERE item_id = $a", {"a": A}).fetchall())
        sources.content_embeddings(con, own, datetime(2026, 11, 21, 7, tzinfo=timezone.utc))
        after = dict(con.execute("SELECT item_id, list_position(content_embedding, 3.0) FROM content_embeddings "
                                 "WHERE item_id = $a", {"a": A}).fetchall())
    assert (before, after) == ({A: 1}, {A: 2})


def test_training_reads_the_embedding_valid_at_each_row(own):
    """A's embedding changes at 06:00 on D1: D1's partition holds that version at 06:00 beside its
    end-of-day rows, so Feast's point-in-time join (the training set's path) gives rows before the
    change the old vector, rows at or after it the new one. Items with no version yet (D created at
    12:00 on D0, E at the very start of D1) get null: the row stays, as serving sees the item."""
    import pandas as pd

    from orchestration.resources import FeastResource

    rows = lake.read_table(lake.feature_prefix("item_embedding", D1), own).to_pandas()
    changes = rows[rows.event_timestamp < pd.Timestamp(lake.day_end(D1))]
    assert set(zip(changes.item_id, changes.event_timestamp, strict=True)) == {
        (A, pd.Timestamp("2026-11-21T06:00", tz="UTC")), (E, pd.Timestamp("2026-11-21T00:00", tz="UTC"))}
    at = [(A, "2026-11-21T05:59:59.999999"), (A, "2026-11-21T06:00"), (A, "2026-11-21T23:00"),
          (D, "2026-11-20T11:59:59"), (D, "2026-11-20T12:00"), (E, "2026-11-20T23:59:59"),
          (E, "2026-11-21T00:00")]
    entity = pd.DataFrame({"item_id": [i for i, _ in at],
                           "event_timestamp": pd.to_datetime([t for _, t in at], utc=True, format="ISO8601")})
    feast = FeastResource()
    try:
        got = feast.store().get_historical_features(entity_df=entity, features=["item_embedding:item_embedding"]) \
            .to_df()["item_embedding"].tolist()
    finally:
        feast.close()
    hot = [None if v is None or (isinstance(v, float) and np.isnan(v)) else int(np.argmax(v)) for v in got]
    assert hot == [0, 1, 1, None, 0, None, 0]
