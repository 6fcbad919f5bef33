"""Each feature as its description in the contract defines it, against an independent computation
written here, on events built for the edge cases: a user who only likes, views without dwell, a
like that carries a dwell, a view and its like in the same second, an idle user, runs of activity
across midnight and across an hour's gap. DuckDB in memory, no store."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from feedstore.contract.events import EVENT_SCHEMA
from feedstore.contract.rules import ENGAGEMENT_TYPES, HOT_COUNTER_TTL_SECONDS, LONG_DWELL_MS
from orchestration.assets.features import item_engagement_table, user_activity_table, user_realtime_table
from orchestration.sources import CATALOG_SCHEMA

pytestmark = pytest.mark.pure
DAY = date(2026, 3, 10)
END = datetime(2026, 3, 11, tzinfo=timezone.utc)


def _at(hours: float, seconds: float = 0) -> datetime:
    return END - timedelta(hours=hours) + timedelta(seconds=seconds)


EVENTS = [
    # user 1 only likes
    (1, 10, "like", _at(30), None), (1, 11, "like", _at(20), None), (1, 12, "like", _at(5), None),
    # user 2: views with and without dwell, a like carrying a dwell, an old share (outside 7 days)
    (2, 10, "view", _at(3), 1_000), (2, 11, "view", _at(2), 3_000), (2, 12, "view", _at(1), None),
    (2, 11, "like", _at(1.5), 50_000), (2, 13, "share", _at(24 * 10), None), (2, 13, "view", _at(24 * 10), 7_000),
    # user 3: a view and its like in the same second; a comment; two more views
    (3, 20, "view", _at(4), 12_000), (3, 20, "like", _at(4, 0.4), None), (3, 21, "comment", _at(50), None),
    (3, 22, "view", _at(50), 500), (3, 23, "view", _at(6), 900),
    # user 5: a run, an hour's gap, another run (realtime); user 6: a run across midnight
    (5, 30, "view", _at(10), 100), (5, 31, "view", _at(10, 600), 200), (5, 32, "like", _at(10, 600), None),
    (5, 33, "view", _at(10, 600 + HOT_COUNTER_TTL_SECONDS), 400), (5, 34, "view", _at(10, 4_300), 800),
    (6, 40, "view", _at(24.5), 1_500), (6, 41, "view", _at(23.75), 2_500),
]
PROFILES = [1, 2, 3, 4, 5, 6]   # user 4 is idle


def _events() -> pd.DataFrame:
    frame = pd.DataFrame(EVENTS, columns=["user_id", "item_id", "event_type", "timestamp", "dwell_time_ms"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    frame["event_id"] = [f"e{i}" for i in range(len(frame))]
    frame["dwell_time_ms"] = frame["dwell_time_ms"].astype("Int32")
    for c in ("device", "platform", "session_id"):
        frame[c] = None
    return frame


@pytest.fixture()
def con():
    events = _events()
    c = duckdb.connect()
    c.execute("SET TimeZone = 'UTC'")
    c.register("activity_arrow", pa.Table.from_pandas(events[EVENT_SCHEMA.names], schema=EVENT_SCHEMA,
                                                      preserve_index=False))
    c.execute("CREATE TEMP VIEW activity AS SELECT * FROM activity_arrow")
    items = sorted(events.item_id.unique())
    created = END - timedelta(days=40)
    c.register("catalog_arrow", pa.table({
        "item_id": items, "creator_id": [1] * len(items), "category": ["tech"] * len(items),
        "tags": [[]] * len(items), "media_type": ["video"] * len(items),
        "created_at": [created] * len(items), "updated_at": [None] * len(items)}, schema=CATALOG_SCHEMA))
    c.execute("CREATE TEMP VIEW catalog AS SELECT * FROM catalog_arrow")
    c.execute("CREATE TEMP VIEW items AS SELECT item_id, created_at FROM catalog")
    c.register("profiles_arrow", pa.table({"user_id": PROFILES}))
    c.execute("CREATE TEMP VIEW profiles AS SELECT * FROM profiles_arrow")
    yield c
    c.close()


def _per_view(n: int, views: int) -> float:
    """An engagement count per view, at most 1; an engagement without views counts as fully engaged."""
    if n == 0:
        return 0.0
    return min(1.0, n / max(views, 1))


def test_user_rates_are_per_view_and_dwell_is_over_views(con):
    got = user_activity_table(con, DAY).to_pandas().set_index("user_id")
    events = _events()
    for user in PROFILES:
        for days in (7, 30):
            mine = events[(events.user_id == user) & (events.timestamp >= END - timedelta(days=days))]
            views = mine[mine.event_type == "view"]
            count = {t: int((mine.event_type == t).sum()) for t in ("like", "share", "comment")}
            row = got.loc[user]
            assert row[f"like_rate_{days}d"] == pytest.approx(_per_view(count["like"], len(views))), (user, days)
            assert row[f"share_rate_{days}d"] == pytest.approx(_per_view(count["share"], len(views))), (user, days)
            dwells = views.dwell_time_ms.dropna()
            assert row[f"avg_dwell_ms_{days}d"] == pytest.approx(float(dwells.mean()) if len(dwells) else 0.0)
            assert row[f"interactions_{days}d"] == len(mine)
            assert row[f"unique_items_{days}d"] == mine.item_id.nunique()
            assert row[f"active_days_{days}d"] == mine.timestamp.dt.date.nunique()
        assert row["comment_rate_30d"] == pytest.approx(_per_view(count["comment"], len(views)))
    # the cases the issue named: one who only likes scores 1; views of 1 s, 3 s and none average 2 s
    assert got.loc[1, "like_rate_7d"] == 1.0
    assert got.loc[2, "avg_dwell_ms_7d"] == 2_000 and got.loc[2, "like_rate_7d"] == pytest.approx(1 / 3)
    assert got.loc[3, "like_rate_7d"] == pytest.approx(1 / 3) == got.loc[3, "comment_rate_30d"]
    assert got.loc[4, ["like_rate_30d", "avg_dwell_ms_30d", "interactions_30d"]].tolist() == [0, 0, 0]
    assert got.loc[4, "top_category_30d"] is None and got.loc[1, "top_category_30d"] == "tech"


def test_item_engagement_as_described(con):
    got = item_engagement_table(con, DAY).to_pandas().set_index("item_id")
    events = _events()
    week = events[events.timestamp >= END - timedelta(days=7)]
    for item, row in got.iterrows():
        mine = week[week.item_id == item]
        views = int((mine.event_type == "view").sum())
        engaged = int(mine.event_type.isin(ENGAGEMENT_TYPES).sum())
        assert row.views_7d == views
        assert row.engagement_rate_7d == pytest.approx(min(1.0, engaged / views) if views else 0.0)
        ratings = []
        for _, pair in mine.groupby("user_id"):
            ratings.append(1.0 if pair.event_type.isin(ENGAGEMENT_TYPES).any()
                           else min(1.0, pair.dwell_time_ms.fillna(0).sum() / LONG_DWELL_MS))
        assert row.avg_implicit_rating_7d == pytest.approx(np.mean(ratings) if ratings else 0.0)
        assert row.freshness_score == pytest.approx(np.exp(-40 / 7))


def _replay_hot_counters(events: pd.DataFrame) -> dict[tuple[int, pd.Timestamp], tuple[int, int]]:
    """What the consumer's Redis hash holds after each event, replayed event by event: counts add
    up while events come less than the hot counter's TTL apart, and start again after."""
    state: dict[int, tuple[pd.Timestamp, int, int]] = {}
    after: dict[tuple[int, pd.Timestamp], tuple[int, int]] = {}
    ttl = pd.Timedelta(seconds=HOT_COUNTER_TTL_SECONDS)
    for ev in events.sort_values("timestamp").itertuples():
        last, n, dwell = state.get(ev.user_id, (None, 0, 0))
        if last is None or ev.timestamp - last >= ttl:
            n, dwell = 0, 0
        n, dwell = n + 1, dwell + (0 if pd.isna(ev.dwell_time_ms) else int(ev.dwell_time_ms))
        state[ev.user_id] = (ev.timestamp, n, dwell)
        after[(ev.user_id, ev.timestamp)] = (n, dwell)
    return after


def test_realtime_rows_replay_the_hot_counters_point_in_time(con):
    got = user_realtime_table(con, DAY).to_pandas()
    events = _events()
    expected = _replay_hot_counters(events[events.timestamp >= END - timedelta(days=2)])
    today = events[events.timestamp >= END - timedelta(days=1)]
    assert len(got) == len(today.groupby(["user_id", "timestamp"]))
    for row in got.itertuples():
        at = row.event_timestamp - pd.Timedelta(microseconds=1)   # stamped just after its events
        assert (row.rt_interactions_1h, row.rt_dwell_ms_1h) == expected[(row.user_id, at)], row
        last = today[(today.user_id == row.user_id) & (today.timestamp == at)]
        assert row.rt_last_item_id in set(last.item_id) and row.rt_last_event_type in set(last.event_type)
    five = got[got.user_id == 5].sort_values("event_timestamp")
    assert five.rt_interactions_1h.tolist() == [1, 3, 1, 2]          # the hour's gap starts a new run
    six = got[got.user_id == 6]
    assert six.rt_interactions_1h.tolist() == [2] and six.rt_dwell_ms_1h.tolist() == [4_000]  # across midnight
