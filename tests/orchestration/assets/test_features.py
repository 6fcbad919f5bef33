"""Window features read back from S3 and compared with the same numbers computed by hand (pandas)
from the events the fixture generated."""

from datetime import datetime, time, timedelta, timezone

import numpy as np
import pytest

from feedstore.contract.rules import CATEGORIES, ENGAGEMENT_TYPES, LONG_DWELL_MS
from orchestration import lake


def _end(day):
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=timezone.utc)


def _features(view, day, settings):
    return lake.read_table(lake.feature_prefix(view, day), settings).to_pandas()


def test_user_activity_features_by_hand(tiny_feed, pipeline, settings):
    day = tiny_feed.days[-1]
    features = _features("user_activity_features", day, settings).set_index("user_id")
    assert len(features) == len(tiny_feed.users)
    events = tiny_feed.events.merge(tiny_feed.items[["item_id", "category"]], on="item_id")
    active = events[events.timestamp < _end(day)].user_id.value_counts()
    for user_id in active.index[[0, len(active) // 2, len(active) - 1]]:
        mine = events[(events.user_id == user_id) & (events.timestamp < _end(day))]
        week = mine[mine.timestamp >= _end(day) - timedelta(days=7)]
        row = features.loc[user_id]
        assert row.interactions_7d == len(week) and row.interactions_30d == len(mine)
        assert row.unique_items_30d == mine.item_id.nunique()
        assert row.active_days_30d == mine.timestamp.dt.date.nunique()
        likes, views = int((mine.event_type == "like").sum()), int((mine.event_type == "view").sum())
        assert row.like_rate_30d == pytest.approx(min(1.0, likes / max(views, 1)) if likes else 0.0)  # per view
        dwell = week[week.event_type == "view"].dwell_time_ms.dropna()
        assert row.avg_dwell_ms_7d == pytest.approx(dwell.mean() if len(dwell) else 0.0)
        shares = mine.category.value_counts(normalize=True)
        assert np.allclose(row.category_dist_30d, [shares.get(c, 0.0) for c in CATEGORIES], atol=1e-6)
        assert row.top_category_30d == max(CATEGORIES, key=lambda c: (shares.get(c, 0), -CATEGORIES.index(c)))


def test_item_engagement_features_by_hand(tiny_feed, pipeline, settings):
    day = tiny_feed.days[-1]
    features = _features("item_engagement_features", day, settings).set_index("item_id")
    events = tiny_feed.events[tiny_feed.events.timestamp < _end(day)]
    views = events[events.event_type == "view"]
    popular = views.item_id.value_counts().index[:3]
    items = tiny_feed.items.set_index("item_id")
    for item_id in popular:
        row = features.loc[item_id]
        mine = events[events.item_id == item_id]
        assert row.views_1d == (views[views.item_id == item_id].timestamp >= _end(day) - timedelta(days=1)).sum()
        assert row.views_7d == (views.item_id == item_id).sum()
        assert row.unique_viewers_7d == views[views.item_id == item_id].user_id.nunique()
        engaged = mine.event_type.isin(ENGAGEMENT_TYPES).sum()
        assert row.engagement_rate_7d == pytest.approx(min(1.0, engaged / row.views_7d))
        age = (_end(day) - items.loc[item_id, "created_at"]).total_seconds() / 86400
        assert row.freshness_score == pytest.approx(np.exp(-age / 7))
    assert features.engagement_rate_7d.between(0, 1).all()
    assert features.avg_implicit_rating_7d.between(0, 1).all()


def _unit(v):
    return v / np.linalg.norm(v)


def test_embeddings_by_hand(tiny_feed, pipeline, settings):
    day = tiny_feed.days[-1]
    content = dict(zip(tiny_feed.items.item_id, tiny_feed.items.content_embedding, strict=True))
    items = _features("item_embedding", day, settings)
    for r in items.head(5).itertuples():
        assert np.allclose(r.item_embedding, _unit(content[r.item_id]), atol=1e-6)
    users = _features("user_embedding", day, settings).set_index("user_id")
    events = tiny_feed.events[tiny_feed.events.timestamp < _end(day)]
    assert len(users) > 20
    for user_id in users.index[[0, len(users) // 2]]:
        mine = events[events.user_id == user_id]
        total = np.zeros(32)
        weight_sum = 0.0
        for item_id, pair in mine.groupby("item_id"):
            views = pair[pair.event_type == "view"]
            engaged = pair.event_type.isin(ENGAGEMENT_TYPES).any() or (views.dwell_time_ms >= LONG_DWELL_MS).any()
            if engaged:
                w = max(views.dwell_time_ms.sum(), 1000)
                total += w * content[item_id]
                weight_sum += w
        assert np.allclose(users.loc[user_id, "user_embedding"], _unit(total / weight_sum), atol=1e-5)


def test_candidates_are_ranked_unseen_items(tiny_feed, pipeline, settings):
    day = tiny_feed.days[-1]
    candidates = _features("user_candidates", day, settings)
    events = tiny_feed.events[tiny_feed.events.timestamp < _end(day)]
    assert len(candidates) == len(_features("user_embedding", day, settings))
    engagement = _features("item_engagement_features", day, settings)
    pool = set(engagement[engagement.views_7d > 0].item_id)
    for r in candidates.head(10).itertuples():
        seen = set(events[events.user_id == r.user_id].item_id)
        assert len(r.candidate_item_ids) == min(settings.pipeline.candidates_per_user, len(pool - seen))
        assert set(r.candidate_item_ids) <= pool
        assert not seen & set(r.candidate_item_ids)
        assert list(r.candidate_scores) == sorted(r.candidate_scores, reverse=True)
