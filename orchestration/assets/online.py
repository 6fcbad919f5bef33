"""The day's feature rows into Redis through Feast. Rows of partition D carry the timestamp
``lake.day_end(D)``, so the window ``(start of D, end of D]`` holds exactly them. Feast's Redis
writer keeps the newer of two timestamps per entity, so a re-run is a no-op and a backfill of
an older day never overwrites fresher values."""


from datetime import timedelta

import dagster as dg
import numpy as np
import pandas as pd

from feedstore.contract.features import BATCH_VIEWS
from orchestration import lake
from orchestration.assets.features import refresh_time
from orchestration.assets.views import VIEW_ASSETS
from orchestration.checks import result
from orchestration.partitions import daily, partition_day
from orchestration.resources import FeastResource, GreatExpectationsResource, S3Resource

# Views every user of the day has a row in (embeddings and candidates need engagement).
SAMPLED_VIEWS = ("user_activity_features", "user_profile_features")
SAMPLE = 200


def materialize_window(day):
    return lake.day_start(day) + timedelta(microseconds=1), lake.day_end(day)


@dg.asset(
    partitions_def=daily, group_name="serving", kinds={"feast", "redis"},
    deps=[VIEW_ASSETS[view] for view in BATCH_VIEWS],
    description="Materialises the partition's feature rows into the Redis online store.",
)
def online_features(context: dg.AssetExecutionContext, feast: FeastResource) -> dg.MaterializeResult:
    day = partition_day(context)
    start, end = materialize_window(day)
    feast.materialize(start, end, list(BATCH_VIEWS))
    return dg.MaterializeResult(metadata={"views": list(BATCH_VIEWS), "start": start.isoformat(),
                                          "end": end.isoformat()})


@dg.asset(
    partitions_def=daily, group_name="serving", kinds={"feast", "redis"}, deps=["user_candidates_refresh"],
    description="Materialises the midday candidates into Redis, half-way through the 12h view's TTL.",
)
def online_candidates_refresh(context: dg.AssetExecutionContext, feast: FeastResource) -> dg.MaterializeResult:
    day = partition_day(context)
    start, end = lake.day_end(day) + timedelta(microseconds=1), refresh_time(day)
    feast.materialize(start, end, ["user_candidates"])
    return dg.MaterializeResult(metadata={"views": ["user_candidates"], "start": start.isoformat(),
                                          "end": end.isoformat()})


def online_sample(feast: FeastResource, s3: S3Resource, day, n: int = SAMPLE) -> pd.DataFrame:
    """Online user features of a sample of the day's users, with the timestamp they were written for."""
    settings = s3.settings()
    users = lake.read_table(lake.feature_prefix("user_profile_features", day), settings, ["user_id"])
    ids = np.sort(users["user_id"].to_numpy())[:n]
    store = feast.store()
    refs = [f"{v}:{f.name}" for v in SAMPLED_VIEWS for f in store.get_feature_view(v).features]
    frame = store.get_online_features(features=refs, entity_rows=[{"user_id": int(u)} for u in ids]).to_df()
    frame["event_timestamp"] = lake.day_end(day)
    return frame


@dg.asset_check(asset=online_features, name="user_features_suite", blocking=True, partitions_def=daily,
                description="Great Expectations suite `user_features` on what Redis serves for a sample of users")
def online_features_suite(context: dg.AssetCheckExecutionContext, feast: FeastResource, s3: S3Resource,
                          gx: GreatExpectationsResource) -> dg.AssetCheckResult:
    day = partition_day(context)
    frame = online_sample(feast, s3, day)
    summary = gx.validate("user_features", frame, views=SAMPLED_VIEWS)
    served = int(frame["interactions_30d"].notna().sum())
    return result(summary, users_sampled=len(frame), users_served=served)


CHECKS = [online_features_suite]
