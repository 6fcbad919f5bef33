"""Every asset check of the pipeline: one blocking check per asset, mostly the asset's Great
Expectations suite on the partition it just wrote (the archive and retention report theirs with
the asset). A failed check is an ERROR, so Dagster skips everything downstream in the run."""

from collections.abc import Callable
from datetime import date, datetime, timezone
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from feedstore.contract.features import USER_ACTIVITY, USER_CANDIDATES, USER_PROFILE, VIEWS
from orchestration import lake
from orchestration.assets import snapshots
from orchestration.assets.features import refresh_prefix
from orchestration.assets.views import VIEW_ASSETS
from orchestration.partitions import daily, partition_day
from orchestration.resources import FeastResource, GreatExpectationsResource, S3Resource


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

    # Markdown in the UI: the placeholder is code, or it would be read as an HTML tag and vanish.
    @dg.asset_check(asset=asset, name=f"{suite}_suite", blocking=True, partitions_def=daily,
                    description=f"Great Expectations suite `{suite}` on `{shown}`")
    def _check(context: dg.AssetCheckExecutionContext, gx: GreatExpectationsResource,
               s3: S3Resource) -> dg.AssetCheckResult:
        day = partition_day(context)
        target = lake.s3_uri(prefix(day), s3.settings())
        return result(gx.validate(suite, target, **(params(day) if callable(params) else params)))
    return _check


def result(summary, **extra) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=bool(summary.success), severity=dg.AssetCheckSeverity.ERROR,
                               metadata={**summary.to_metadata(), **docs_links(summary.docs), **extra})


def docs_links(docs: str | None) -> dict[str, dg.MetadataValue]:
    """The validation's Data Docs page: its path (copyable in the UI) and a link to open it."""
    if not docs:
        return {}
    if docs.startswith(("s3://", "http://", "https://")):
        return {"data_docs": dg.MetadataValue.url(docs)}
    return {"data_docs": dg.MetadataValue.path(docs), "data_docs_url": dg.MetadataValue.url(Path(docs).as_uri())}


# Views every user of the day has a row in (embeddings and candidates need engagement).
SAMPLED_VIEWS = (USER_ACTIVITY.name, USER_PROFILE.name)
SAMPLE = 200


def online_sample(feast: FeastResource, s3: S3Resource, day, n: int = SAMPLE) -> pd.DataFrame:
    """Online user features of a sample of the day's users, with the timestamp they were written for."""
    settings = s3.settings()
    users = lake.read_table(lake.feature_prefix(USER_PROFILE.name, day), settings, ["user_id"])
    ids = np.sort(users["user_id"].to_numpy())[:n]
    store = feast.store()
    refs = [f"{v}:{f}" for v in SAMPLED_VIEWS for f in VIEWS[v].columns]
    frame = store.get_online_features(features=refs, entity_rows=[{"user_id": int(u)} for u in ids]).to_df()
    frame["event_timestamp"] = lake.day_end(day)
    return frame


@dg.asset_check(asset="online_features", name="user_features_suite", blocking=True, partitions_def=daily,
                description="Great Expectations suite `user_features` on what Redis serves for a sample of users")
def online_features_suite(context: dg.AssetCheckExecutionContext, feast: FeastResource, s3: S3Resource,
                          gx: GreatExpectationsResource) -> dg.AssetCheckResult:
    day = partition_day(context)
    frame = online_sample(feast, s3, day)
    summary = gx.validate("user_features", frame, views=SAMPLED_VIEWS)
    served = int(frame["interactions_30d"].notna().sum())
    return result(summary, users_sampled=len(frame), users_served=served)


@dg.asset_check(asset="online_candidates_refresh", name="candidates_served", blocking=True, partitions_def=daily,
                description="The refreshed candidates of a sample of users are served online, unless past their TTL")
def online_candidates_served(context: dg.AssetCheckExecutionContext, feast: FeastResource,
                             s3: S3Resource) -> dg.AssetCheckResult:
    day = partition_day(context)
    rows = lake.read_table(refresh_prefix(day), s3.settings(), ["user_id", "event_timestamp"]).to_pandas()
    rows = rows.sort_values("user_id").head(SAMPLE)
    served = feast.store().get_online_features(
        features=[f"{USER_CANDIDATES.name}:candidate_item_ids"],
        entity_rows=[{"user_id": int(u)} for u in rows["user_id"]]).to_dict()["candidate_item_ids"]
    live = (rows["event_timestamp"] + USER_CANDIDATES.ttl > datetime.now(timezone.utc)).to_numpy()
    got = np.array([v is not None for v in served], dtype=bool)
    wrong = int((got != live).sum())
    return dg.AssetCheckResult(passed=wrong == 0, severity=dg.AssetCheckSeverity.ERROR, metadata={
        "users_sampled": len(rows), "users_live": int(live.sum()), "users_served": int(got.sum()),
        "served_or_expired_wrongly": wrong})


@dg.asset_check(asset="training_dataset", name="training_dataset_suite", blocking=True, partitions_def=daily,
                description="Great Expectations suite `training_dataset` on the day's rows")
def training_dataset_suite(context: dg.AssetCheckExecutionContext, s3: S3Resource,
                           gx: GreatExpectationsResource) -> dg.AssetCheckResult:
    day, settings = partition_day(context), s3.settings()
    names = [d for d in lake.list_keys(f"{lake.TRAINING}/", settings) if f"/dt={day.isoformat()}/" in d
             and d.endswith(lake.MANIFEST)]
    if not names:
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.ERROR,
                                   description=f"no training set for {day}")
    prefix = names[0].removesuffix(lake.MANIFEST)
    return result(gx.validate("training_dataset", lake.s3_uri(prefix, settings), ds=day.isoformat()))


CHECKS = [*(suite_check(asset, *spec) for asset, spec in SUITES.items()), online_features_suite,
          online_candidates_served, training_dataset_suite]
