"""Catalog and profile snapshots read back from S3 and checked against the rows loaded in Postgres."""

from datetime import datetime, time, timedelta, timezone

import pytest

from orchestration import lake
from orchestration.assets.snapshots import MANIFEST


def _end(day):
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=timezone.utc)


def test_catalog_is_exported_once_then_incrementally(tiny_feed, pipeline, settings):
    d0, d1, d2 = tiny_feed.days
    manifests = [lake.get_json(lake.day_prefix(lake.CATALOG_ITEMS, d) + MANIFEST, settings) for d in (d0, d1, d2)]
    assert [m["full"] for m in manifests] == [True, False, False]
    items = tiny_feed.items
    rows = [lake.read_table(lake.day_prefix(lake.CATALOG_ITEMS, d), settings).num_rows for d in (d0, d1, d2)]
    assert rows[0] == (items.created_at < _end(d0)).sum()
    assert rows[1] == ((items.created_at >= _end(d0)) & (items.created_at < _end(d1))).sum() > 0
    assert rows[2] == ((items.created_at >= _end(d1)) & (items.created_at < _end(d2))).sum()
    base = lake.read_table(lake.day_prefix(lake.CATALOG_ITEMS, d0), settings).to_pandas().set_index("item_id")
    expected = items.set_index("item_id").loc[base.index]
    assert (base.category == expected.category).all()
    assert [list(t) for t in base.tags] == [list(t) for t in expected.tags]


def test_item_catalog_features_cover_every_catalog_item(tiny_feed, pipeline, settings):
    day = tiny_feed.days[-1]
    features = lake.read_table(lake.feature_prefix("item_catalog_features", day), settings).to_pandas()
    items = tiny_feed.items.set_index("item_id")
    touched = set(tiny_feed.events[tiny_feed.events.timestamp >= _end(day) - timedelta(days=7)].item_id)
    assert set(features.item_id) == set(items[items.created_at < _end(day)].index)
    assert len(features) > len(touched), "the long tail nobody touched has its attributes too"
    row = features.iloc[5]
    age = _end(day) - items.loc[row.item_id, "created_at"]
    assert row.item_age_days == pytest.approx(age.total_seconds() / 86400)
    assert row.creator_id == items.loc[row.item_id, "creator_id"]
    assert (features.event_timestamp == _end(day)).all()


def test_user_profiles(tiny_feed, pipeline, settings, pg):
    day = tiny_feed.days[0]
    profiles = lake.read_table(lake.feature_prefix("user_profile_features", day), settings).to_pandas()
    assert len(profiles) == len(tiny_feed.users)
    following = dict(pg.execute("SELECT user_id, count(*) FROM user_follows GROUP BY user_id").fetchall())
    users = tiny_feed.users.set_index("user_id")
    for r in profiles.head(10).itertuples():
        assert r.following_count == following.get(r.user_id, 0)
        assert r.account_age_days == (_end(day) - users.loc[r.user_id, "created_at"]).days
        assert list(r.preferred_categories) == list(users.loc[r.user_id, "preferred_categories"])
        assert r.country == users.loc[r.user_id, "country"]
