"""The archive against the real stack: dedup of replayed files, the Postgres export for days
that never landed, and a reconciliation that fails (and blocks downstream) when S3 and Postgres disagree."""

from datetime import timedelta

import dagster as dg
import pyarrow.compute as pc
import pyarrow.parquet as pq

from feedstore.s3 import arrow_fs, bucket_path
from orchestration import lake
from orchestration.assets.archive import MANIFEST, RECONCILED_CHECK
from tests.orchestration.conftest import _event_table, make_feed, materialize


def _check(result, name):
    return next(e for e in result.get_asset_check_evaluations() if e.check_name == name)


def test_landed_days_are_deduplicated_and_reconciled(tiny_feed, pipeline, settings):
    for day in tiny_feed.days[1:]:
        archived = lake.read_table(lake.day_prefix(lake.ARCHIVE, day), settings)
        expected = tiny_feed.events[tiny_feed.events.timestamp.dt.date == day]
        assert tiny_feed.landed_rows[day] > len(expected)  # the landed files do hold replays
        assert archived.num_rows == len(expected)
        assert pc.count_distinct(archived["event_id"]).as_py() == archived.num_rows
        assert set(archived["event_id"].to_pylist()) == set(expected.event_id)
        manifest = lake.get_json(lake.day_prefix(lake.ARCHIVE, day) + MANIFEST, settings)
        assert manifest["source"] == "landed"
        assert manifest["duplicates_dropped"] == tiny_feed.landed_rows[day] - len(expected)
        assert manifest["postgres_rows"] == len(expected) and manifest["reconciled"] is True
        assert _check(pipeline[day], RECONCILED_CHECK).passed


def test_day_that_never_landed_is_exported_from_postgres(tiny_feed, pipeline, settings):
    day = tiny_feed.days[0]
    archived = lake.read_table(lake.day_prefix(lake.ARCHIVE, day), settings).to_pandas()
    expected = tiny_feed.events[tiny_feed.events.timestamp.dt.date == day].set_index("event_id").sort_index()
    assert lake.get_json(lake.day_prefix(lake.ARCHIVE, day) + MANIFEST, settings)["source"] == "postgres"
    got = archived.set_index("event_id").sort_index()
    assert list(got.index) == list(expected.index)
    assert (got.timestamp == expected.timestamp).all()
    assert (got.session_id == expected.session_id).all() and (got.device == expected.device).all()
    assert got.dwell_time_ms.fillna(-1).astype(int).tolist() == expected.dwell_time_ms.fillna(-1).astype(int).tolist()


def test_reconciliation_fails_when_s3_and_postgres_disagree(tiny_feed, pipeline, settings, pg):
    """Postgres got 12 events of a day but only 8 reached S3: the check fails and stops downstream."""
    day = tiny_feed.days[0] - timedelta(days=5)
    events = make_feed(day + timedelta(days=1)).events
    events = events[events.timestamp.dt.date == day].head(12)
    with pg.cursor() as cur, cur.copy('COPY user_activity (event_id, user_id, item_id, event_type, "timestamp", '
                                      "dwell_time_ms) FROM STDIN") as copy:
        for r in events.itertuples():
            copy.write_row((r.event_id, r.user_id, r.item_id, r.event_type, r.timestamp,
                            None if r.dwell_time_ms != r.dwell_time_ms else int(r.dwell_time_ms)))
    key = f"events/dt={day}/hour=00/user-activity-0-1-8.parquet"
    pq.write_table(_event_table(events.head(8)), bucket_path(key, settings), filesystem=arrow_fs(settings))

    result = materialize(day, ["activity_archive", "item_catalog_snapshot"], raise_on_error=False)
    check = _check(result, RECONCILED_CHECK)
    assert not check.passed
    assert check.metadata["archive_rows"].value == 8 and check.metadata["postgres_rows"].value == 12
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert dg.AssetKey("item_catalog_snapshot") not in materialized
    downstream = {e.event_type_value for e in result.all_events if e.step_key == "item_catalog_snapshot"}
    assert "STEP_START" not in downstream and not result.success
