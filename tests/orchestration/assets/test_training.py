"""Training rows: labels from the day's engagement, negatives that are really negatives, the
configured balance, determinism; and point-in-time features through Feast."""

from datetime import datetime, time, timedelta, timezone

import pandas as pd
import pytest

from feedstore.contract.rules import ENGAGEMENT_TYPES, LONG_DWELL_MS, SHORT_DWELL_MS
from orchestration.assets.training import TrainingConfig, sample_rows
from orchestration.lake import duckdb_connection


def _end(day):
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=timezone.utc)


def _sample(day, settings, **config) -> pd.DataFrame:
    with duckdb_connection(settings) as con:
        return sample_rows(con, day, settings, TrainingConfig(**config)).to_pandas()


@pytest.fixture(scope="module")
def day(tiny_feed):
    return tiny_feed.days[-1]


@pytest.fixture(scope="module")
def rows(pipeline, settings, day):
    return _sample(day, settings, seed=3, negatives_per_positive=4, hard_negatives_per_positive=1)


def _engaged(events: pd.DataFrame) -> pd.Series:
    return events.event_type.isin(ENGAGEMENT_TYPES) | ((events.event_type == "view") &
                                                       (events.dwell_time_ms >= LONG_DWELL_MS))


def test_positives_are_the_days_engaged_pairs(tiny_feed, rows, day):
    events = tiny_feed.events
    today = events[(events.timestamp >= _end(day) - timedelta(days=1)) & (events.timestamp < _end(day))]
    engaged = today[_engaged(today)].groupby(["user_id", "item_id"]).timestamp.min()
    positives = rows[rows.sample_type == "positive"].set_index(["user_id", "item_id"]).event_timestamp
    assert len(positives) == len(engaged) > 20
    assert (positives.sort_index() == engaged.sort_index()).all()
    assert (rows.label == (rows.sample_type == "positive")).all()


def test_label_balance_is_as_configured(rows):
    counts = rows.sample_type.value_counts()
    assert counts["random_negative"] == 4 * counts["positive"]
    assert counts["hard_negative"] == counts["positive"]
    assert rows.label.mean() == pytest.approx(1 / 6)


def test_negatives_were_not_interacted_with(tiny_feed, rows, day):
    events = tiny_feed.events[tiny_feed.events.timestamp < _end(day)]
    touched = set(zip(events.user_id, events.item_id, strict=True))
    random = rows[rows.sample_type == "random_negative"]
    assert not touched & set(zip(random.user_id, random.item_id, strict=True))
    negatives = rows[rows.label == 0]
    for _, group in negatives.groupby(["user_id", "event_timestamp"]):
        assert group.item_id.is_unique  # no item twice for one positive


def test_hard_negatives_are_popular_and_unengaged(tiny_feed, rows, day):
    events = tiny_feed.events[tiny_feed.events.timestamp < _end(day)].merge(
        tiny_feed.items[["item_id", "category"]], on="item_id")
    week = events[(events.event_type == "view") & (events.timestamp >= _end(day) - timedelta(days=7))]
    views = week.groupby(["category", "item_id"]).size().rename("views").reset_index()
    views["rank"] = views.sort_values(["views", "item_id"], ascending=[False, True]).groupby("category").cumcount()
    popular = set(views[views["rank"] < TrainingConfig().popular_items_per_category].item_id)
    engaged = set(zip(events[_engaged(events)].user_id, events[_engaged(events)].item_id, strict=True))
    hard = rows[rows.sample_type == "hard_negative"]
    assert len(hard) > 0
    assert set(hard.item_id) <= popular
    assert not engaged & set(zip(hard.user_id, hard.item_id, strict=True))
    # they sit well above the median item's popularity
    assert views.set_index("item_id").views.loc[hard.item_id].median() > views.views.median()
    skipped = events[(events.event_type == "view") & (events.dwell_time_ms < SHORT_DWELL_MS)]
    assert set(zip(skipped.user_id, skipped.item_id, strict=True)) & set(zip(hard.user_id, hard.item_id, strict=True))


def test_deterministic_for_a_seed(settings, rows, day):
    again = _sample(day, settings, seed=3, negatives_per_positive=4, hard_negatives_per_positive=1)
    pd.testing.assert_frame_equal(rows, again)
    other = _sample(day, settings, seed=4, negatives_per_positive=4, hard_negatives_per_positive=1)
    assert not other[other.sample_type == "random_negative"].item_id.reset_index(drop=True).equals(
        rows[rows.sample_type == "random_negative"].item_id.reset_index(drop=True))


@pytest.fixture(scope="module")
def training_run(tiny_feed, pipeline):
    from tests.orchestration.conftest import materialize

    day = tiny_feed.days[-1]
    materialize(tiny_feed.days[-2], ["online_features"])
    config = {"ops": {"training_dataset": {"config": {"name": "pit_test", "seed": 3}}}}
    result = materialize(day, ["online_features", "training_dataset"], run_config=config)
    assert result.success
    return day, result


def test_training_set_is_written_registered_and_point_in_time(training_run, settings, pg, tiny_feed):
    from orchestration import lake

    day, result = training_run
    prefix = lake.day_prefix("training/pit_test", day)
    table = lake.read_table(prefix, settings).to_pandas()
    manifest = lake.get_json(prefix + "_manifest.json", settings)
    assert manifest["rows"] == len(table) and manifest["config"]["seed"] == 3
    row = pg.execute("SELECT row_count, positive_count, hard_negative_count, feature_service FROM training_datasets "
                     "WHERE name = 'pit_test' AND ds = %s", (day,)).fetchone()
    assert row == (len(table), int(table.label.sum()), int((table.sample_type == "hard_negative").sum()), "training")
    assert table.label.mean() == pytest.approx(1 / 6)
    # every row was joined to the previous day's rows (stamped at its end), never to its own day's
    before = lake.read_table(lake.feature_prefix("user_activity_features", tiny_feed.days[-2]), settings).to_pandas()
    after = lake.read_table(lake.feature_prefix("user_activity_features", day), settings).to_pandas()
    assert (before.event_timestamp <= table.event_timestamp.min()).all()
    assert (after.event_timestamp > table.event_timestamp.max()).all()
    expected = table.user_id.map(before.set_index("user_id").interactions_30d)
    leaked = table.user_id.map(after.set_index("user_id").interactions_30d)
    assert (table.interactions_30d == expected).all()
    assert (table.interactions_30d != leaked).any()
    items = lake.read_table(lake.feature_prefix("item_engagement_features", tiny_feed.days[-2]), settings).to_pandas()
    known = table.item_id.isin(items.item_id)
    assert (table.views_7d[known] == table.item_id[known].map(items.set_index("item_id").views_7d)).all()
    # items without a row that day fall back to the day before (still inside the 2-day TTL)
    older = lake.read_table(lake.feature_prefix("item_engagement_features", tiny_feed.days[-3]), settings).to_pandas()
    fallback = ~known & table.item_id.isin(older.item_id)
    assert (table.views_7d[fallback] == table.item_id[fallback].map(older.set_index("item_id").views_7d)).all()
    assert table.views_7d[~known & ~fallback].isna().all()
