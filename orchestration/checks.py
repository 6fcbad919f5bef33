"""One blocking check per asset: the asset's Great Expectations suite on the partition it just
wrote. A failed check is an ERROR, so Dagster skips everything downstream in the run."""

from collections.abc import Callable
from datetime import date

import dagster as dg

from feedstore.contract.features import VIEWS
from orchestration import lake
from orchestration.assets import snapshots
from orchestration.assets.features import refresh_prefix
from orchestration.assets.views import VIEW_ASSETS
from orchestration.partitions import daily, partition_day
from orchestration.resources import GreatExpectationsResource, S3Resource


def _archive_params(day: date) -> dict:
    """Archived events may arrive late but must belong to their day: the suite's ingestion window
    (ingestion time minus the allowed age, plus the allowed skew) spans the whole day."""
    return {"ingested_at": (lake.day_start(day), lake.day_end(day))}


Where = str | Callable[[date], str]
"""A root with ``dt=<day>/`` folders, or a function of the day giving the day's prefix."""
Params = dict | Callable[[date], dict]


def _view_suite(view: str, where: Where | None = None) -> tuple[str, Where, Params]:
    """A feature table gets its entity's feature suite, limited to the view's columns."""
    return f"{VIEWS[view].entity.name}_features", where or VIEWS[view].prefix, {"views": (view,)}


def _suites() -> dict[str, tuple[str, Where, Params]]:
    """asset -> (suite, where its rows are, extra suite parameters or a function of the day giving them)."""
    suites: dict[str, tuple[str, Where, Params]] = {"activity_archive": ("activity_events", lake.ARCHIVE, _archive_params)}
    for view, asset in VIEW_ASSETS.items():
        suites[asset] = _view_suite(view) if asset not in snapshots.SUITES else \
            (snapshots.SUITES[asset], VIEWS[view].prefix, {})
    suites["user_candidates_refresh"] = _view_suite("user_candidates", refresh_prefix)
    return suites


SUITES = _suites()


def suite_check(asset: str, suite: str, where: Where, params: Params) -> dg.AssetChecksDefinition:
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
