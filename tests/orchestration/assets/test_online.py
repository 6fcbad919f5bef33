"""online_features: what Redis serves after materialising a day equals that day's Parquet rows;
a re-run changes nothing and a backfill of an older day never overwrites fresher values."""

import numpy as np
import pytest

from orchestration import lake
from orchestration.resources import FeastResource
from tests.orchestration.conftest import materialize

USERS = [1, 2, 3, 10, 25]


def _online(user_ids):
    store = FeastResource().store()
    return store.get_online_features(
        features=["user_activity_features:interactions_30d", "user_embedding:user_embedding"],
        entity_rows=[{"user_id": u} for u in user_ids]).to_dict()


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
