"""The Dagster code location: ``dagster dev -m orchestration.definitions``."""

from __future__ import annotations

import dagster as dg

from orchestration.assets import archive, features, online, retention, snapshots, training
from orchestration.checks import CHECKS
from orchestration.resources import resources

ASSETS = [
    archive.activity_archive,
    snapshots.item_catalog_snapshot,
    snapshots.user_profile_snapshot,
    *features.ASSETS,
    online.online_features,
    online.online_candidates_refresh,
    training.training_dataset,
    retention.activity_retention,
]

REFRESH = dg.AssetSelection.assets(features.user_candidates_refresh, online.online_candidates_refresh)
DAILY = dg.AssetSelection.all() - REFRESH
daily_job = dg.define_asset_job(
    "daily_pipeline", selection=DAILY,
    description="Yesterday's activity from archive to features, online store and training set.",
)
refresh_job = dg.define_asset_job(
    "candidates_refresh", selection=REFRESH,
    description="Yesterday's candidates recomputed at noon, so the 12h online view is never empty.",
)
daily_schedule = dg.build_schedule_from_partitioned_job(
    daily_job, hour_of_day=1, minute_of_hour=0, default_status=dg.DefaultScheduleStatus.RUNNING,
)
refresh_schedule = dg.build_schedule_from_partitioned_job(
    refresh_job, hour_of_day=12, minute_of_hour=15, default_status=dg.DefaultScheduleStatus.RUNNING,
)

defs = dg.Definitions(
    assets=ASSETS,
    asset_checks=CHECKS,
    jobs=[daily_job, refresh_job],
    schedules=[daily_schedule, refresh_schedule],
    resources=resources(),
    # One process per run: the steps are DuckDB-bound and use every core themselves; running them
    # one after another keeps the peak memory of a seed-scale day to one step's.
    executor=dg.in_process_executor,
)
