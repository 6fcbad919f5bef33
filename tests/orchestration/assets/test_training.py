"""Training rows: labels from the day's engagement, negatives that are really negatives, the
configured balance, determinism; and point-in-time features through Feast."""

from datetime import datetime, time, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from feedstore.contract.rules import ENGAGEMENT_TYPES, LONG_DWELL_MS, SHORT_DWELL_MS
from orchestration.assets.training import TrainingConfig, sample_rows
from feedstore.s3 import duckdb_connection


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
    pairs = today[_engaged(today)][["user_id", "item_id"]].drop_duplicates()
    first = today.groupby(["user_id", "item_id"]).timestamp.min()   # the pair's first event of the day
    engaged = first.loc[pd.MultiIndex.from_frame(pairs)]
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


def _archived(settings) -> pd.DataFrame:
    """The events as the pipeline sees them (other tests of the session archive days of their own)."""
    from orchestration import lake

    days = lake.partition_days(lake.ARCHIVE, settings)
    return pd.concat([lake.read_table(lake.day_prefix(lake.ARCHIVE, d), settings).to_pandas() for d in days])


def test_hard_negatives_are_popular_and_unengaged(tiny_feed, rows, day, settings):
    events = _archived(settings).merge(tiny_feed.items[["item_id", "category"]], on="item_id")
    views = events[events.event_type == "view"]
    engaged = set(zip(events[_engaged(events)].user_id, events[_engaged(events)].item_id, strict=True))
    hard = rows[rows.sample_type == "hard_negative"]
    assert len(hard) > 0
    top = TrainingConfig().popular_items_per_category
    above_median = []
    for hour, group in hard.groupby(hard.event_timestamp.dt.floor("h")):
        # popular as of the start of the row's hour: the 7 days before it, nothing later
        known = views[(views.timestamp >= hour - timedelta(days=7)) & (views.timestamp < hour)]
        counts = known.groupby(["category", "item_id"]).size().rename("views").reset_index()
        counts["rank"] = counts.sort_values(["views", "item_id"], ascending=[False, True]).groupby("category").cumcount()
        assert set(group.item_id) <= set(counts[counts["rank"] < top].item_id), hour
        per_item = counts.set_index("item_id").views
        above_median.append(per_item.loc[group.item_id].median() > per_item.median())
    assert np.mean(above_median) > 0.9
    assert not engaged & set(zip(hard.user_id, hard.item_id, strict=True))
    skipped = events[(events.event_type == "view") & (events.dwell_time_ms < SHORT_DWELL_MS)]
    assert set(zip(skipped.user_id, skipped.item_id, strict=True)) & set(zip(hard.user_id, hard.item_id, strict=True))


def test_no_negative_pair_twice_in_the_day(rows):
    negatives = rows[rows.label == 0]
    assert not negatives.duplicated(["user_id", "item_id"]).any()


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
    # the realtime counters: the newest row strictly before the training row, within the view's hour
    realtime = pd.concat([lake.read_table(lake.feature_prefix("user_realtime_features", d), settings).to_pandas()
                          for d in (tiny_feed.days[-2], day)])
    merged = pd.merge_asof(table[["user_id", "event_timestamp"]].reset_index().sort_values("event_timestamp"),
                           realtime.rename(columns={"event_timestamp": "rt_ts"}).sort_values("rt_ts"),
                           left_on="event_timestamp", right_on="rt_ts", by="user_id",
                           tolerance=pd.Timedelta(hours=1)).set_index("index").sort_index()
    expected = merged.rt_interactions_1h.where(merged.rt_ts >= merged.event_timestamp - pd.Timedelta(hours=1))
    assert expected.notna().sum() > 0
    assert table.rt_interactions_1h.fillna(-1).tolist() == expected.fillna(-1).astype(int).tolist()
    # a positive's own events are never in its row: its item is not the "last item" of its counters
    positives = table[table.label == 1]
    assert (positives.rt_last_item_id != positives.item_id).all()


def test_the_training_check_runs_the_suite_on_duckdb(training_run):
    """The blocking check takes the fast path by default (FEED_PIPELINE_CHECKS_ENGINE)."""
    _, result = training_run
    check = next(e for e in result.get_asset_check_evaluations() if e.check_name == "training_dataset_suite")
    assert check.passed, check.metadata
    assert check.metadata["engine"].value == "duckdb"
    assert check.metadata["row_count"].value > 0


def test_every_row_has_the_embedding_valid_at_its_time(training_run, settings, tiny_feed):
    """Each row, positive or negative, carries its item's content embedding as valid at the row's
    time (an as-of join over the generator's versions written here). The tiny feed has no row of an
    item created that day; the mid-day change itself is test_byod's."""
    from orchestration import lake

    day, _ = training_run
    table = lake.read_table(lake.day_prefix("training/pit_test", day), settings).to_pandas()
    items = tiny_feed.items[["item_id", "created_at", "content_embedding"]].rename(columns={"created_at": "valid_from"})
    items = items.assign(valid_from=items.valid_from.astype("datetime64[us, UTC]")).sort_values("valid_from")
    rows = table[["item_id", "event_timestamp"]].assign(_row=np.arange(len(table)))
    rows = rows.assign(event_timestamp=rows.event_timestamp.astype("datetime64[us, UTC]")).sort_values("event_timestamp")
    expected = pd.merge_asof(rows, items, left_on="event_timestamp", right_on="valid_from", by="item_id",
                             direction="backward").sort_values("_row")
    assert expected.content_embedding.notna().all()
    for got, want in zip(table.item_embedding, expected.content_embedding, strict=True):
        assert np.allclose(got, np.asarray(want) / np.linalg.norm(want), atol=1e-6)
