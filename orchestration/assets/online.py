"""The day's feature rows into Redis through Feast. Rows of partition D carry the timestamp
``lake.day_end(D)``, so the window ``(start of D, end of D]`` holds exactly them. Feast's Redis
writer keeps the newer of two timestamps per entity, so a re-run is a no-op and a backfill of
an older day never overwrites fresher values."""


from datetime import timedelta

import dagster as dg

from feedstore.contract.features import BATCH_VIEWS
from orchestration import lake
from orchestration.assets.features import refresh_time
from orchestration.assets.views import VIEW_ASSETS
from orchestration.partitions import daily, partition_day
from orchestration.resources import FeastResource


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
