"""Item feature views."""

from datetime import timedelta

from feast import FeatureView, Field
from feast.types import Array, Float32, Float64, Int64, String

from entities import item
from feedstore.feast.sources import parquet_source

item_catalog_features = FeatureView(
    name="item_catalog_features",
    entities=[item],
    ttl=timedelta(days=30),
    source=parquet_source("item_catalog_features"),
    online=True,
    description="Catalog attributes of an item.",
    schema=[
        Field(name="category", dtype=String, description="Catalog category"),
        Field(name="media_type", dtype=String, description="video, image or text"),
        Field(name="creator_id", dtype=Int64, description="User id of the creator"),
        Field(name="tags", dtype=Array(String), description="Free-form tags"),
        Field(name="item_age_days", dtype=Float64, description="Days since the item was created"),
    ],
    tags={"family": "item", "tier": "daily"},
)

item_embedding = FeatureView(
    name="item_embedding",
    entities=[item],
    ttl=timedelta(days=7),
    source=parquet_source("item_embedding"),
    online=True,
    description="Pre-computed content embedding of an item.",
    schema=[
        Field(name="item_embedding", dtype=Array(Float32), description="32-dimensional content embedding"),
    ],
    tags={"family": "item", "tier": "embedding"},
)

item_engagement_features = FeatureView(
    name="item_engagement_features",
    entities=[item],
    ttl=timedelta(days=2),
    source=parquet_source("item_engagement_features"),
    online=True,
    description="How the audience responds to an item, recomputed daily.",
    schema=[
        Field(name="views_1d", dtype=Int64, description="Views in the last day"),
        Field(name="views_7d", dtype=Int64, description="Views in the last 7 days"),
        Field(name="views_30d", dtype=Int64, description="Views in the last 30 days"),
        Field(name="unique_viewers_7d", dtype=Int64, description="Distinct viewers in the last 7 days"),
        Field(name="engagement_rate_7d", dtype=Float64, description="(likes+shares+comments)/views, 7 days, in [0,1]"),
        Field(name="avg_implicit_rating_7d", dtype=Float64, description="Mean implicit rating, 7 days, in [0,1]"),
        Field(name="freshness_score", dtype=Float64, description="exp(-age_days/7), in (0,1]"),
    ],
    tags={"family": "item", "tier": "daily"},
)
