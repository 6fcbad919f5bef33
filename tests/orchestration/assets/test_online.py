"""online_features: what Redis serves after materialising a day equals that day's Parquet rows;
a re-run changes nothing and a backfill of an older day never overwrites fresher values."""

import numpy as np
import pytest

from orchestration import lake
from orchestration.resources import FeastResource
from tests.orchestration.conftest import materialize

USERS = [1, 2, 3, 10, 25]


def _online(user_ids):
    feast = FeastResource()
    try:
        return feast.store().get_online_features(
            features=["user_activity_features:interactions_30d", "user_embedding:user_embedding"],
            entity_rows=[{"user_id": u} for u in user_ids]).to_dict()
    finally:
        feast.close()


def _offline(day, settings):
    activity = lake.read_table(lake.feature_prefix("user_activity_features", day), settings).to_pandas()
    embedding = lake.read_table(lake.feature_prefix("user_embedding", day), settings).to_pandas()
    return activity.set_index("user_id"), embedding.set_index("user_id")


@pytest.fixture(scope="module")
def online_day(tiny_feed, pipeline):
    day = tiny_feed.days[-1]
    result = materialize(day, ["online_features"])
    assert result.success
    return day, result


def test_online_values_match_the_partition(online_day, settings):
    day, result = online_day
    assert all(e.passed for e in result.get_asset_check_evaluations())
    activity, embedding = _offline(day, settings)
    served = _online(USERS)
    assert served["interactions_30d"] == [int(activity.loc[u, "interactions_30d"]) for u in USERS]
    for u, vector in zip(USERS, served["user_embedding"], strict=True):
        assert np.allclose(vector, embedding.loc[u, "user_embedding"], atol=1e-6)


def test_rerun_and_backfill_keep_the_freshest_values(online_day, tiny_feed, settings):
    day, _ = online_day
    before = _online(USERS)
    older = tiny_feed.days[-2]
    assert materialize(older, ["online_features"]).success
    assert materialize(day, ["online_features"]).success
    assert _online(USERS) == before
    old_activity, _ = _offline(older, settings)
    assert before["interactions_30d"] != [int(old_activity.loc[u, "interactions_30d"]) for u in USERS]


def test_midday_refresh_drops_what_users_touched_since_and_reaches_redis(online_day, tiny_feed, settings):
    import uuid

    import pandas as pd
    import psycopg

    from orchestration.assets.features import refresh_prefix, refresh_time
    from tests.orchestration.conftest import _event_table, load_events

    day, _ = online_day
    daily = lake.read_table(lake.feature_prefix("user_candidates", day), settings).to_pandas().set_index("user_id")
    user = int(daily.index[0])
    touched = int(daily.loc[user, "candidate_item_ids"][0])
    event = tiny_feed.events.iloc[[0]].assign(
        event_id=str(uuid.uuid4()), user_id=user, item_id=touched, event_type="like", dwell_time_ms=None,
        timestamp=pd.Timestamp(lake.day_end(day)) + pd.Timedelta(hours=3))
    with psycopg.connect(settings.postgres.dsn) as conn:
        conn.execute("SELECT ensure_activity_partitions(%s, %s)", (lake.day_end(day).date(), lake.day_end(day).date()))
        load_events(_event_table(event), conn)
        try:
            result = materialize(day, ["user_candidates_refresh", "online_candidates_refresh"])
        finally:
            conn.execute("DELETE FROM user_activity WHERE event_id = %s", (event.event_id.iloc[0],))
    assert result.success and all(e.passed for e in result.get_asset_check_evaluations())
    refreshed = lake.read_table(refresh_prefix(day), settings).to_pandas().set_index("user_id")
    assert (refreshed.event_timestamp == pd.Timestamp(refresh_time(day))).all()
    assert touched not in refreshed.loc[user, "candidate_item_ids"]
    others = daily.index[1:]
    assert [list(v) for v in refreshed.loc[others, "candidate_item_ids"]] == \
        [list(v) for v in daily.loc[others, "candidate_item_ids"]]
    feast = FeastResource()
    served = feast.store().get_online_features(
        features=["user_candidates:candidate_item_ids"], entity_rows=[{"user_id": user}]).to_dict()
    feast.close()
    assert served["candidate_item_ids"][0] == list(refreshed.loc[user, "candidate_item_ids"])


def test_online_check_judges_its_own_partition(online_day, settings, redis_client):
    """The check's verdicts, and the failures that break them: a live row not served, a row served
    past its TTL; rows of an older partition superseded by newer ones are no failure."""
    from datetime import timedelta

    from orchestration.checks import now, served_partition
    from orchestration.resources import S3Resource

    day, _ = online_day
    store, s3 = FeastResource().store(), S3Resource()
    good = served_partition(store, s3, "user_activity_features", day, now())
    assert good.sampled > 0 and good.wrong == [] and good.served_as_written == good.live == good.sampled
    older = served_partition(store, s3, "user_activity_features", day - timedelta(days=1), now())
    assert older.wrong == [] and older.superseded == older.sampled
    # a day later than its TTL allows, what Redis still holds would be served too late
    late = served_partition(store, s3, "user_activity_features", day, now() + timedelta(days=3))
    assert late.live == 0 and len(late.wrong) == late.sampled and "past its TTL" in late.wrong[0]
    rows = lake.read_table(lake.feature_prefix("user_activity_features", day), settings).to_pandas()
    first = int(rows.user_id.min())
    key = f"feed_ranking:{{user_id={first}}}:user_activity_features"
    assert redis_client.delete(key) == 1
    try:
        gone = served_partition(store, s3, "user_activity_features", day, now())
        assert gone.wrong == [f"user_id={first}: not served though inside its TTL"]
    finally:
        assert materialize(day, ["online_features"]).success


def test_feast_cli_materializes_every_view(online_day, tiny_feed, settings):
    """``feast materialize`` and ``materialize-incremental`` over every view, the pushed one too
    (its offline side is the replayed counters)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from feedstore.contract.features import VIEWS
    from feedstore.settings import PROJECT_ROOT

    day, _ = online_day
    feast = str(Path(sys.executable).parent / "feast")
    env = {**os.environ, **settings.feast_env()}
    start, end = lake.day_start(tiny_feed.days[0]).strftime("%Y-%m-%dT%H:%M:%S"), lake.day_end(day)
    for args in (["materialize", start, end.strftime("%Y-%m-%dT%H:%M:%S")],
                 ["materialize-incremental", end.strftime("%Y-%m-%dT%H:%M:%S")]):
        done = subprocess.run([feast, "-c", str(PROJECT_ROOT / "feature_repo"), *args], env=env,
                              capture_output=True, text=True, timeout=600, check=False)
        assert done.returncode == 0, (args, done.stderr[-3000:])
        for view in VIEWS:
            assert view in done.stdout, (args, view, done.stdout[-2000:])
    assert "No files found" not in done.stderr
