"""Every asset check of the pipeline: one blocking check per asset, mostly the asset's Great
Expectations suite on the partition it just wrote (the archive and retention report theirs with
the asset). A failed check is an ERROR, so Dagster skips everything downstream in the run."""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from feedstore.contract.features import BATCH_VIEWS, EVENT_TIMESTAMP, USER_CANDIDATES, VIEWS
from feedstore.feast.online import layout
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


def _snapshot_params(day: date) -> dict:
    """A snapshot of day D holds nothing created after D ended (not "after now": a backfill or a
    replay judges each day by its own end)."""
    return {"as_of": lake.day_end(day)}


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
            (snapshots.SUITES[asset], VIEWS[view].prefix, _snapshot_params)
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


SAMPLE = 200


@dataclass
class Served:
    """How a sample of one view's partition rows fares online: the rows still inside their TTL
    must be served (this partition's values, or a newer partition's), the expired ones must not."""

    view: str
    sampled: int = 0
    live: int = 0
    served_as_written: int = 0
    superseded: int = 0
    wrong: list[str] = field(default_factory=list)
    frame: pd.DataFrame | None = None
    """The served rows of this partition, stamped with their time (for the view's suite)."""


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, list | tuple | np.ndarray) or isinstance(b, list | tuple | np.ndarray):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return bool(np.isclose(a, b, rtol=1e-6, atol=1e-9, equal_nan=True))
    return a == b


def served_partition(store, s3: S3Resource, view: str, day: date, now: datetime, n: int = SAMPLE) -> Served:
    """Reads back ``n`` of the rows partition ``day`` of ``view`` materialised and judges each."""
    spec = VIEWS[view]
    key = spec.entity.join_key
    rows = lake.read_table(lake.feature_prefix(view, day), s3.settings()).to_pandas()
    rows = rows.sort_values(key).head(n).reset_index(drop=True)
    out = Served(view, sampled=len(rows))
    if rows.empty:
        return out
    got = store.get_online_features(features=[f"{view}:{c}" for c in spec.columns],
                                    entity_rows=[{key: int(v)} for v in rows[key]]).to_dict(include_event_timestamps=True)
    first = spec.columns[0]
    written = rows[EVENT_TIMESTAMP].map(lambda t: int(t.timestamp()))
    live = (rows[EVENT_TIMESTAMP] + spec.ttl > now).to_numpy()
    out.live = int(live.sum())
    keep = []
    for i, entity in enumerate(rows[key]):
        stamp = got[f"{first}__ts"][i] or 0
        present = got[first][i] is not None or stamp > 0
        if present and stamp > written[i]:
            out.superseded += 1
        elif present and stamp == written[i]:
            differ = [c for c in spec.columns if not _same(got[c][i], _plain(rows.at[i, c]))]
            if not live[i]:
                out.wrong.append(f"{key}={entity}: served past its TTL")
            elif differ:
                out.wrong.append(f"{key}={entity}: {differ[0]} served {got[differ[0]][i]!r}, "
                                 f"written {_plain(rows.at[i, differ[0]])!r}")
            else:
                out.served_as_written += 1
                keep.append(i)
        elif present:
            out.wrong.append(f"{key}={entity}: served an older row than this partition's")
        elif live[i]:
            out.wrong.append(f"{key}={entity}: not served though inside its TTL")
    out.frame = rows.iloc[keep].reset_index(drop=True)
    return out


def _plain(value):
    return value.tolist() if isinstance(value, np.ndarray) else None if value is pd.NA else value


def now() -> datetime:
    """The checks' clock (the online store's reads judge TTLs on the same one)."""
    return datetime.fromtimestamp(layout.now_micros() / 1e6, tz=timezone.utc)


@dg.asset_check(asset="online_features", name="served_as_materialised", blocking=True, partitions_def=daily,
                description="A sample of each view's rows of the partition is served online as written (or "
                            "superseded by a newer partition) while inside its TTL, and not after; the rows "
                            "served as written pass their entity's features suite")
def online_features_suite(context: dg.AssetCheckExecutionContext, feast: FeastResource, s3: S3Resource,
                          gx: GreatExpectationsResource) -> dg.AssetCheckResult:
    day, store, at = partition_day(context), feast.store(), now()
    results = [served_partition(store, s3, view, day, at) for view in BATCH_VIEWS]
    metadata: dict = {"checked_at": at.isoformat()}
    for r in results:
        metadata[r.view] = {"sampled": r.sampled, "live": r.live, "served_as_written": r.served_as_written,
                            "superseded": r.superseded, "wrong": len(r.wrong), "examples": r.wrong[:3]}
    passed = not any(r.wrong for r in results)
    for r in results:
        if r.frame is None or r.frame.empty:
            continue
        summary = gx.validate(f"{VIEWS[r.view].entity.name}_features", r.frame, views=(r.view,))
        passed = passed and bool(summary.success)
        metadata[f"{r.view}_suite"] = {"success": bool(summary.success), "failed": len(summary.failures)}
    return dg.AssetCheckResult(passed=passed, severity=dg.AssetCheckSeverity.ERROR, metadata=metadata)


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
    live = (rows["event_timestamp"] + USER_CANDIDATES.ttl > now()).to_numpy()
    got = np.array([v is not None for v in served], dtype=bool)
    wrong = int((got != live).sum())
    return dg.AssetCheckResult(passed=wrong == 0, severity=dg.AssetCheckSeverity.ERROR, metadata={
        "users_sampled": len(rows), "users_live": int(live.sum()), "users_served": int(got.sum()),
        "served_or_expired_wrongly": wrong})


@dg.asset_check(asset="training_dataset", name="training_dataset_suite", blocking=True, partitions_def=daily,
                description="Great Expectations suite `training_dataset` on the day's rows (as DuckDB SQL over "
                            "the Parquet unless `FEED_PIPELINE_CHECKS_ENGINE=gx`)")
def training_dataset_suite(context: dg.AssetCheckExecutionContext, s3: S3Resource,
                           gx: GreatExpectationsResource) -> dg.AssetCheckResult:
    day, settings = partition_day(context), s3.settings()
    names = [d for d in lake.list_keys(f"{lake.TRAINING}/", settings) if f"/dt={day.isoformat()}/" in d
             and d.endswith(lake.MANIFEST)]
    if not names:
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.ERROR,
                                   description=f"no training set for {day}")
    prefix = names[0].removesuffix(lake.MANIFEST)
    # The engine is named even when Data Docs are on: GX on pandas takes ~2 min on a seed-scale day.
    return result(gx.validate("training_dataset", lake.s3_uri(prefix, settings), ds=day.isoformat(),
                              engine=settings.pipeline.checks_engine))


CHECKS = [*(suite_check(asset, *spec) for asset, spec in SUITES.items()), online_features_suite,
          online_candidates_served, training_dataset_suite]
