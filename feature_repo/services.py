from feast import FeatureService

from item_features import item_catalog_features, item_embedding, item_engagement_features
from user_features import (
    user_activity_features,
    user_candidates,
    user_embedding,
    user_profile_features,
    user_realtime_features,
)

ranking = FeatureService(
    name="ranking",
    features=[
        user_activity_features, user_profile_features, user_embedding, user_realtime_features,
        user_candidates, item_catalog_features, item_embedding, item_engagement_features,
    ],
    description="Everything the online ranker reads for one (user, candidate item) pair.",
)

training = FeatureService(
    name="training",
    features=[
        user_activity_features, user_profile_features, user_embedding,
        item_catalog_features, item_embedding, item_engagement_features,
    ],
    description="Point-in-time features for training sets (no stream-only or candidate views).",
)
