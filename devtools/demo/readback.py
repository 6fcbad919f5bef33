"""Every tier read back from the stores themselves, not from what the writers reported, so the
printout shows whether the tiers agree: counts, online values against the lake, and training
rows against a point-in-time join done by hand."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import pandas as pd

from devtools.demo import audit
from devtools.demo.pipeline import refresh_due
from devtools.demo.report import DemoReport
from feedstore.contract import lake as layout
from feedstore.contract.features import BATCH_VIEWS, USER_REALTIME
from feedstore.settings import Settings
from orchestration import lake
from orchestration.assets.features import refresh_prefix

if TYPE_CHECKING:
    from feast import FeatureStore

TRAINING_NAME = "ranking_daily"
USER_FEATURES_SHOWN = [
    "user_activity_features:interactions_7d", "user_activity_features:like_rate_7d",
    "user_activity_features:avg_dwell_ms_7d", "user_activity_features:top_category_30d",
    "user_profile_features:age_range", "user_profile_features:country", "user_profile_features:following_count",
    "user_profile_features:preferred_categories", "user_embedding:user_embedding",
    "user_realtime_features:rt_interactions_1h", "user_realtime_features:rt_last_event_type",
    "user_realtime_features:rt_last_item_id",
]
ITEM_FEATURES_SHOWN = ["item_catalog_features:category", "item_catalog_features:media_type",
                       "item_engagement_features:views_7d", "item_engagement_features:engagement_rate_7d"]
PIT_VIEWS = ["user_activity_features", "user_profile_features", "item_engagement_features"]
ONLINE_SAMPLE = 500
PIT_SAMPLE = 2_000
LIVENESS_MARGIN = timedelta(minutes=5)  # a user active this close to the TTL's edge may expire mid-read


def active_users(settings: Settings, since: datetime, limit: int = 200) -> list[int]:
    """Users with events since ``since``, most active first."""
    from feedstore.db import connect

    with connect(settings) as conn:
        return [int(r[0]) for r in conn.execute(
            'SELECT user_id FROM user_activity WHERE "timestamp" >= %s GROUP BY user_id '
            "ORDER BY count(*) DESC, user_id LIMIT %s", (since, limit)).fetchall()]


def pick_user(settings: Settings, fs: FeatureStore, since: datetime) -> int | None:
    """The most active user since ``since`` with the most views served online (candidates and
    realtime features are the ones with short TTLs)."""
    users = active_users(settings, since, 20)
    if not users:
        return None
    found = fs.get_online_features(
        features=["user_candidates:candidate_item_ids", "user_realtime_features:rt_interactions_1h",
                  "user_activity_features:interactions_7d"],
        entity_rows=[{"user_id": u} for u in users]).to_dict()
    served = [sum(found[n][i] is not None for n in ("candidate_item_ids", "rt_interactions_1h", "interactions_7d"))
              for i in range(len(users))]
    return int(users[max(range(len(users)), key=lambda i: (served[i], -i))])


def online_view(fs: FeatureStore, user_id: int, day: date, settings: Settings,
                top: int = 10) -> tuple[dict[str, Any], pd.DataFrame, str | None]:
    """What serving code gets: the user's features and the top candidates with their item
    features. When the candidates are past their TTL (12 h from the end of the day they were
    computed for), the newest ones in the lake are shown instead, and the third value says so."""
    user = fs.get_online_features(features=[*USER_FEATURES_SHOWN, "user_candidates:candidate_item_ids",
                                            "user_candidates:candidate_scores"],
                                  entity_rows=[{"user_id": user_id}]).to_dict()
    values = {ref: user[ref.split(":", 1)[1]][0] for ref in USER_FEATURES_SHOWN}
    ids, scores, expired = user["candidate_item_ids"][0], user["candidate_scores"][0], None
    if ids is None and (found := _lake_candidates(fs, user_id, day, settings)):
        ids, scores, expired = found
    ids, scores = [int(i) for i in (ids or [])[:top]], [float(x) for x in (scores or [])[:top]]
    return values, _with_item_features(fs, ids, scores), expired


def _lake_candidates(fs: FeatureStore, user_id: int, day: date,
                     settings: Settings) -> tuple[list, list, str] | None:
    """The day's candidates from the lake, and why they are shown: online they have expired."""
    rows = audit.lake_rows("user_candidates", [day], settings)
    rows = rows[rows.user_id == user_id]
    if not len(rows):
        return None
    ttl = fs.get_feature_view("user_candidates").ttl
    stamped = pd.Timestamp(rows.event_timestamp.iloc[0])
    return (list(rows.candidate_item_ids.iloc[0]), list(rows.candidate_scores.iloc[0]),
            f"user_candidates of {day} (event time {stamped:%Y-%m-%d %H:%M} UTC, TTL {ttl}) are past "
            f"their TTL, so get_online_features returns none; these are the lake's")


def _with_item_features(fs: FeatureStore, ids: list[int], scores: list[float]) -> pd.DataFrame:
    items = pd.DataFrame({"item_id": ids, "score": scores})
    if ids:
        found = fs.get_online_features(features=ITEM_FEATURES_SHOWN,
                                       entity_rows=[{"item_id": int(i)} for i in ids]).to_df()
        items = items.merge(found, on="item_id", how="left")
    return items


def read_training(days: list[date], settings: Settings) -> pd.DataFrame:
    parts = []
    for day in days:
        prefix = lake.day_prefix(f"{lake.TRAINING}/{TRAINING_NAME}", day)
        if lake.parquet_keys(prefix, settings):
            parts.append(lake.read_table(prefix, settings).to_pandas().assign(ds=day.isoformat()))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def label_balance(training: pd.DataFrame) -> pd.DataFrame:
    counts = training.pivot_table(index="ds", columns="sample_type", values="label", aggfunc="size", fill_value=0)
    counts["rows"] = counts.sum(axis=1)
    counts["positive_share"] = counts.get("positive", 0) / counts["rows"]
    return counts.reset_index()


def read_back(report: DemoReport, settings: Settings) -> None:
    from feedstore.feast.store import store

    fs = store(settings)
    report.tiers = audit.tier_counts(settings, archived_until=lake.day_end(report.days[-1]))
    last = report.days[-1]
    refreshed = refresh_due(last)
    report.online = [audit.compare_online(fs, view, last, settings, limit=ONLINE_SAMPLE,
                                          prefix=refresh_prefix(last) if refreshed and view == "user_candidates" else None)
                     for view in BATCH_VIEWS]
    # active = an event within the realtime view's TTL of now (the read), not of the feed's end
    since = datetime.now(timezone.utc) - USER_REALTIME.ttl + LIVENESS_MARGIN
    report.liveness = audit.liveness(fs, active_users(settings, since), last, settings)
    report.user_id = pick_user(settings, fs, report.window[1] - timedelta(hours=1))
    if report.user_id is not None:
        report.user_features, report.candidates, report.candidates_note = online_view(
            fs, report.user_id, last, settings)
    _read_training_back(report, fs, settings)
    report.lake_uris = {name: lake.s3_uri(f"{root}/", settings) for name, root in (
        ("landed events", lake.LANDED), ("daily archive", lake.ARCHIVE), ("features", layout.FEATURES),
        ("training sets", f"{lake.TRAINING}/{TRAINING_NAME}"))}


def _read_training_back(report: DemoReport, fs: FeatureStore, settings: Settings) -> None:
    training = read_training(report.days, settings)
    if training.empty:
        raise RuntimeError("no training rows were written")
    report.training_counts = label_balance(training)
    newest = training[training.ds == training.ds.max()]
    report.training_sample = newest.sample(n=min(8, len(newest)), random_state=0).sort_values("event_timestamp")
    sample = training.sample(n=min(PIT_SAMPLE, len(training)), random_state=1).reset_index(drop=True)
    report.pit = audit.compare_point_in_time(fs, sample, PIT_VIEWS, report.days, settings)
