"""The demo end to end at ``tiny`` scale, in a namespace of its own (the demo clears the one it
runs in, which would pull the session namespace from under other tests). The assertions read
the stores themselves and hold the demo's printout to what they find."""

from __future__ import annotations

import io
import re
from datetime import timedelta

import numpy as np
import pandas as pd
import psycopg
import pytest
from rich.console import Console

from devtools.demo import DemoOptions, render, run
from devtools.demo.readback import read_training
from devtools.sandbox import sandbox
from orchestration import lake


@pytest.fixture(scope="module")
def demo(stack, tmp_path_factory):
    with sandbox("demo") as settings:
        console = Console(file=io.StringIO(), record=True, width=200)
        report = run(DemoOptions(scale="tiny", log_dir=tmp_path_factory.mktemp("demo")), console, settings)
        render(report, console, settings)
        yield settings, report, console.export_text()


def _printed_int(text: str, pattern: str) -> int:
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in the demo's output"
    return int(match.group(1).replace(",", ""))


def test_each_step_reports_success_and_writes_a_log(demo):
    _, report, text = demo
    for title in ("Local stack", "Clear the previous", "feast apply", "Generate the tiny feed", "Send malformed",
                  "Consume into", "Dagster daily assets", "Read every tier back"):
        assert title in text
    assert "✗" not in text and "demo complete" in text
    logs = sorted(p.name for p in report.log_dir.glob("*.log"))
    assert logs[0] == "01-stack.log" and len(logs) == 8


def test_counts_are_equal_across_tiers(demo):
    settings, report, text = demo
    generated = _printed_int(text, r"generated\s*│ tiny feed\s*│ ([\d,]+)")
    with psycopg.connect(settings.postgres.dsn) as conn:
        rows, distinct = conn.execute("SELECT count(*), count(DISTINCT event_id) FROM user_activity").fetchone()
        archived_days = conn.execute('SELECT count(*) FROM user_activity WHERE "timestamp" < %s',
                                     (lake.day_end(report.days[-1]),)).fetchone()[0]
    assert generated == report.events > 0
    assert rows == distinct == generated
    assert _printed_int(text, r"warm\s*│ Postgres \S+\s*│ ([\d,]+)") == distinct
    assert _printed_int(text, r"cold \(landed\)\s*│ \S+\s*│ ([\d,]+)") == generated
    assert _printed_int(text, r"hot\s*│ Redis user:\* counters\s*│ ([\d,]+)") == generated
    assert 0 < _printed_int(text, r"cold \(archive\)\s*│ \S+\s*│ ([\d,]+)") == archived_days
    assert report.consumed["duplicates"] == report.resent > 0  # re-sent events were recognised, not stored twice
    assert f"every tier holds each of the {generated:,} generated events once" in text
    assert sum(report.dlq.values()) == sum(report.bad_events_sent.values()) > 0
    assert report.dlq == report.bad_events_sent


def test_online_values_equal_the_materialised_rows(demo):
    settings, report, text = demo
    from feedstore.feast.store import store

    fs = store(settings)
    day = report.days[-1]
    rows = lake.read_table(lake.feature_prefix("user_activity_features", day), settings).to_pandas()
    names = [f.name for f in fs.get_feature_view("user_activity_features").features]
    online = fs.get_online_features(features=[f"user_activity_features:{n}" for n in names],
                                    entity_rows=[{"user_id": int(u)} for u in rows.user_id]).to_df()
    assert len(online) == len(rows) > 0
    for name in names:
        got, want = online[name].tolist(), rows[name].tolist()
        if name == "category_dist_30d":
            np.testing.assert_array_equal(np.array(got, dtype=np.float32), np.array(want, dtype=np.float32))
        else:
            assert got == want, name
    assert "✓ online values equal the materialised Parquet rows" in text
    assert f"get_online_features for user {report.user_id}" in text
    assert report.user_features["user_activity_features:interactions_7d"] is not None
    assert report.candidates is not None and len(report.candidates) > 0


def test_training_rows_are_point_in_time_correct(demo):
    """Each row's user features are the user's row of the day before the row's day (the newest
    at or before its time), or of the day before that within the view's 2-day TTL, else null."""
    settings, report, text = demo
    training = read_training(report.days, settings)
    assert len(training) > 0 and set(training.label) == {0, 1}
    by_day = {d: lake.read_table(lake.feature_prefix("user_activity_features", d), settings).to_pandas()
              .set_index("user_id") for d in report.days}
    checked = with_values = 0
    for row in training.sample(n=min(500, len(training)), random_state=3).itertuples():
        row_day = row.event_timestamp.date()
        expected = None
        for back in (1, 2):
            earlier = by_day.get(row_day - timedelta(days=back))
            if earlier is not None and row.user_id in earlier.index:
                expected = int(earlier.at[row.user_id, "interactions_7d"])
                break
        got = None if pd.isna(row.interactions_7d) else int(row.interactions_7d)
        assert got == expected, (row.user_id, row.item_id, row.event_timestamp)
        checked += 1
        with_values += expected is not None
    assert checked > 0 and with_values > 0
    assert report.pit is not None and report.pit.rows > 0 and not report.pit.mismatches
    assert "0 differ" in text
    balance = report.training_counts
    assert (balance.positive > 0).all() and (balance.rows == balance.positive + balance.hard_negative
                                             + balance.random_negative).all()


def test_a_failing_step_says_what_failed_and_where_its_log_is(tmp_path):
    from devtools.demo.steps import LogSink, StepFailed, Steps

    console = Console(file=io.StringIO(), record=True, width=200)
    sink = LogSink(io.StringIO())
    steps = Steps(console, tmp_path, sink)
    with steps.step("first", "A step that works") as note:
        print("detail of the first step", file=sink)
        note["text"] = "done"
    with pytest.raises(StepFailed) as failed, steps.step("second", "A step that breaks"):
        print("detail of the second step", file=sink)
        raise ConnectionError("redis at 127.0.0.1:1 refused the connection\nmore lines")
    text = console.export_text()
    log = tmp_path / "02-second.log"
    assert "✓" in text and "done" in text
    assert "✗ second failed" in text and "redis at 127.0.0.1:1 refused the connection" in text
    assert f"log: {log}" in text and str(log) in str(failed.value)
    assert "detail of the second step" in log.read_text() and "ConnectionError" in log.read_text()
    assert "detail of the first step" in (tmp_path / "01-first.log").read_text()


def test_clearing_forgets_every_stored_event(demo):
    """A second demo in the same namespace counts its own events: nothing it sends may be taken
    for a repeat of the first one's (last of this module: it empties the demo's namespace)."""
    from devtools.demo.prepare import clear_previous

    settings, _, _ = demo
    with psycopg.connect(settings.postgres.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM activity_event_ids").fetchone()[0] > 0
    clear_previous(settings)
    with psycopg.connect(settings.postgres.dsn) as conn:
        assert conn.execute("SELECT (SELECT count(*) FROM user_activity), "
                            "(SELECT count(*) FROM activity_event_ids)").fetchone() == (0, 0)


@pytest.mark.parametrize("minute", [0, 17, 51, 59])
def test_the_feed_has_users_active_in_the_realtime_ttl_whatever_minute_the_demo_runs(minute):
    from datetime import datetime, timezone

    from devtools.demo.flow import demo_spec
    from devtools.demo.readback import LIVENESS_MARGIN
    from devtools.synthetic import generator as gen
    from feedstore.contract.features import USER_REALTIME

    now = datetime(2026, 12, 2, 12, minute, 30, tzinfo=timezone.utc)
    events = gen.events_table(demo_spec(DemoOptions(scale="tiny"), now)).to_pandas()
    recent = events[events["timestamp"] >= now - USER_REALTIME.ttl + LIVENESS_MARGIN]
    assert recent["user_id"].nunique() >= 10
    assert events["timestamp"].max() <= now
