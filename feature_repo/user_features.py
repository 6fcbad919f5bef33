"""User feature views: TTL per family (the online store expires each view on its own)."""

from datetime import timedelta

from feast import FeatureView, Field, PushSource
from feast.types import Array, Float32, Float64, Int64, String

from entities import user
from feedstore.feast.sources import parquet_source

user_activity_features = FeatureView(
    name="user_activity_features",
    entities=[user],
    ttl=timedelta(days=2),
    source=parquet_source("user_activity_features"),
    online=True,
    description="Windowed engagement aggregates of a user's activity, recomputed daily.",
    schema=[
        Field(name="interactions_7d", dtype=Int64, description="Events of any type in the last 7 days"),
        Field(name="interactions_30d", dtype=Int64, description="Events of any type in the last 30 days"),
        Field(name="unique_items_7d", dtype=Int64, description="Distinct items interacted with, 7 days"),
        Field(name="unique_items_30d", dtype=Int64, description="Distinct items interacted with, 30 days"),
        Field(name="active_days_7d", dtype=Int64, description="Days with at least one event, of the last 7"),
        Field(name="active_days_30d", dtype=Int64, description="Days with at least one event, of the last 30"),
        Field(name="like_rate_7d", dtype=Float64, description="likes / views, 7 days"),
        Field(name="like_rate_30d", dtype=Float64, description="likes / views, 30 days"),
        Field(name="share_rate_7d", dtype=Float64, description="shares / views, 7 days"),
        Field(name="share_rate_30d", dtype=Float64, description="shares / views, 30 days"),
        Field(name="comment_rate_30d", dtype=Float64, description="comments / views, 30 days"),
        Field(name="avg_dwell_ms_7d", dtype=Float64, description="Mean dwell time of views in ms, 7 days"),
        Field(name="avg_dwell_ms_30d", dtype=Float64, description="Mean dwell time of views in ms, 30 days"),
        Field(name="category_dist_30d", dtype=Array(Float32),
              description="Share of events per category (ingestion.rules.CATEGORIES order), sums to 1; zeros if idle"),
        Field(name="top_category_30d", dtype=String, description="Most frequent category over 30 days"),
    ],
    tags={"family": "user", "tier": "daily"},
)

user_profile_features = FeatureView(
    name="user_profile_features",
    entities=[user],
    ttl=timedelta(days=7),
    source=parquet_source("user_profile_features"),
    online=True,
    description="Profile snapshot of a user: demographics and declared preferences.",
    schema=[
        Field(name="age_range", dtype=String, description="Declared age bucket, e.g. 25-34"),
        Field(name="country", dtype=String, description="ISO country code"),
        Field(name="language", dtype=String, description="ISO language code"),
        Field(name="account_age_days", dtype=Int64, description="Days since the account was created"),
        Field(name="following_count", dtype=Int64, description="Creators the user follows"),
        Field(name="preferred_categories", dtype=Array(String), description="Categories the user picked"),
    ],
    tags={"family": "user", "tier": "daily"},
)

user_embedding = FeatureView(
    name="user_embedding",
    entities=[user],
    ttl=timedelta(hours=24),
    source=parquet_source("user_embedding"),
    online=True,
    description="User taste vector in the item-embedding space.",
    schema=[
        Field(name="user_embedding", dtype=Array(Float32), description="32-dimensional user embedding"),
    ],
    tags={"family": "user", "tier": "embedding"},
)

user_candidates = FeatureView(
    name="user_candidates",
    entities=[user],
    ttl=timedelta(hours=12),
    source=parquet_source("user_candidates"),
    online=True,
    description="Top candidate items per user from the retrieval stage.",
    schema=[
        Field(name="candidate_item_ids", dtype=Array(Int64), description="Candidate item ids, best first"),
        Field(name="candidate_scores", dtype=Array(Float32), description="Retrieval score per candidate"),
    ],
    tags={"family": "user", "tier": "candidates"},
)

user_realtime_push = PushSource(
    name="user_realtime_push",
    batch_source=parquet_source("user_realtime_features"),
    description="Pushed by the ingestion consumer for every batch of new events.",
)

user_realtime_features = FeatureView(
    name="user_realtime_features",
    entities=[user],
    ttl=timedelta(hours=1),
    source=user_realtime_push,
    online=True,
    description="Counters over the user's last hour, pushed by the stream consumer.",
    schema=[
        Field(name="rt_interactions_1h", dtype=Int64, description="Events in the last hour"),
        Field(name="rt_dwell_ms_1h", dtype=Int64, description="Total dwell time in ms in the last hour"),
        Field(name="rt_last_item_id", dtype=Int64, description="Item of the most recent event"),
        Field(name="rt_last_event_type", dtype=String, description="Type of the most recent event"),
    ],
    tags={"family": "user", "tier": "realtime"},
)
