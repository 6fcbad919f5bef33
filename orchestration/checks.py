"""One blocking check per asset: the asset's Great Expectations suite on the partition it just
wrote. A failed check is an ERROR, so Dagster skips everything downstream in the run."""

from collections.abc import Callable
from datetime import date

import dagster as dg

from feedstore.feast.sources import feature_prefix
from orchestration import lake
from orchestration.assets.features import refresh_prefix
from orchestration.partitions import daily, partition_day
from orchestration.resources import GreatExpectationsResource, S3Resource


def _archive_params(day: date) -> dict:
    """Archived events may arrive late but must belong to their day: the suite's ingestion window
    (ingestion time minus the allowed age, plus the allowed skew) spans the whole day."""
    return {"ingested_at": (lake.day_start(day), lake.day_end(day))}


# asset -> (suite, where its rows are (a root with dt=<day>/ folders, or the day's prefix as a function),
#           extra suite parameters or a function of the day giving them)
SUITES: dict[str, tuple[str, str | Callable[[date], str], dict | Callable[[date], dict]]] = {
    "activity_archive": ("activity_events", lake.ARCHIVE, _archive_params),
    "item_catalog_snapshot": ("items", feature_prefix("item_catalog_features"), {}),
    "user_profile_snapshot": ("users", feature_prefix("user_profile_features"), {}),
    "user_activity_features": ("user_features", feature_prefix("user_activity_features"),
                               {"views": ("user_activity_features",)}),
    "item_engagement_features": ("item_features", feature_prefix("item_engagement_features"),
                                 {"views": ("item_engagement_features",)}),
    "user_embeddings": ("user_features", feature_prefix("user_embedding"), {"views": ("user_embedding",)}),
    "item_embeddings": ("item_features", feature_prefix("item_embedding"), {"views": ("item_embedding",)}),
    "user_candidates": ("user_features", feature_prefix("user_candidates"), {"views": ("user_candidates",)}),
    "user_candidates_refresh": ("user_features", refresh_prefix, {"views": ("user_candidates",)}),
}


def suite_check(asset: str, suite: str, where: str | Callable[[date], str],
                params: dict | Callable[[date], dict]) -> dg.AssetChecksDefinition:
    prefix = where if callable(where) else (lambda day: lake.day_prefix(where, day))
    shown = f"{where}/dt=<partition>/" if isinstance(where, str) else f"{where.__name__}(<partition>)"

    @dg.asset_check(asset=asset, name=f"{suite}_suite", blocking=True, partitions_def=daily,
                    description=f"Great Expectations suite `{suite}` on {shown}")
    def _check(context: dg.AssetCheckExecutionContext, gx: GreatExpectationsResource,
               s3: S3Resource) -> dg.AssetCheckResult:
        day = partition_day(context)
        target = lake.s3_uri(prefix(day), s3.settings())
        return result(gx.validate(suite, target, **(params(day) if callable(params) else params)))
    return _check


def result(summary, **extra) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=bool(summary.success), severity=dg.AssetCheckSeverity.ERROR,
                               metadata={**summary.to_metadata(), **extra})


CHECKS = [suite_check(asset, *spec) for asset, spec in SUITES.items()]
