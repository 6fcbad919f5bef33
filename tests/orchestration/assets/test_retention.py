"""Retention drops old Postgres days only when their archive reconciles."""

from datetime import timedelta

from orchestration import lake
from orchestration.assets.retention import RETENTION_CHECK, activity_partition_days
from tests.orchestration.conftest import make_feed, materialize


def test_drops_only_reconciled_days(tiny_feed, settings, pg):
    today = tiny_feed.days[-1] + timedelta(days=1)
    day = tiny_feed.days[-1]
    cutoff = day - timedelta(days=settings.pipeline.activity_retention_days - 1)
    old = [cutoff - timedelta(days=n) for n in range(6, 0, -1)]           # cutoff-6 … cutoff-1
    archived_day, unarchived_day = old[2], old[4]
    pg.execute("SELECT ensure_activity_partitions(%s, %s)", (old[0], old[-1]))
    for d in (archived_day, unarchived_day):
        events = make_feed(d + timedelta(days=1)).events
        events = events[events.timestamp.dt.date == d].head(5)
        with pg.cursor() as cur, cur.copy('COPY user_activity (event_id, user_id, item_id, event_type, "timestamp") '
                                          "FROM STDIN") as copy:
            for r in events.itertuples():
                copy.write_row((r.event_id, r.user_id, r.item_id, r.event_type, r.timestamp))
    assert materialize(archived_day, ["activity_archive"]).success
    assert lake.read_table(lake.day_prefix(lake.ARCHIVE, archived_day), settings).num_rows == 5

    result = materialize(day, ["activity_retention"], raise_on_error=False)
    check = next(e for e in result.get_asset_check_evaluations() if e.check_name == RETENTION_CHECK)
    assert not check.passed
    left = set(activity_partition_days(pg))
    assert not left & set(old[:4])                          # dropped up to the unreconciled day
    assert {unarchived_day, old[5], cutoff} <= left         # kept from there on
    assert check.metadata["kept_unreconciled"].value == [unarchived_day.isoformat(), old[5].isoformat()]

    assert materialize(unarchived_day, ["activity_archive"]).success
    assert materialize(old[5], ["activity_archive"]).success   # an empty day archives as empty
    result = materialize(day, ["activity_retention"])
    left = set(activity_partition_days(pg))
    assert not left & set(old) and cutoff in left and today in left
