"""The schema's contracts: TIMESTAMPTZ columns, indexes, and least-privilege roles."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone

import psycopg
import pytest
from psycopg import sql


@contextmanager
def logged_in(settings, component: str) -> Iterator[psycopg.Connection]:
    """A rolled-back transaction as the component's own login (the test's ``pg`` is the owner)."""
    with psycopg.connect(settings.as_component(component).postgres.dsn) as conn:
        with conn.transaction(force_rollback=True):
            yield conn


def test_timestamps_are_timestamptz(pg):
    rows = pg.execute(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'public' AND table_name IN ('user_activity', 'items', 'users') "
        "AND column_name IN ('timestamp', 'created_at', 'updated_at')"
    ).fetchall()
    assert len(rows) == 6
    assert {r[2] for r in rows} == {"timestamp with time zone"}


def test_activity_indexes(pg):
    defs = [r[0] for r in pg.execute("SELECT indexdef FROM pg_indexes WHERE tablename = 'user_activity'")]
    assert any("(user_id, \"timestamp\")" in d for d in defs)
    assert any("(item_id, \"timestamp\")" in d for d in defs)
    assert any("(event_id, \"timestamp\")" in d and "UNIQUE" in d for d in defs)


def test_ingest_role_can_insert_activity_and_read_catalog(settings):
    ts = datetime.now(timezone.utc)
    with logged_in(settings, "ingest") as pg:
        pg.execute("SELECT count(*) FROM users").fetchone()
        pg.execute("SELECT count(*) FROM items").fetchone()
        returned = pg.execute(
            "INSERT INTO user_activity (event_id, user_id, item_id, event_type, timestamp) "
            "VALUES (gen_random_uuid(), 1, 1, 'view', %s) ON CONFLICT DO NOTHING RETURNING event_id, timestamp",
            (ts,),
        ).fetchall()
        assert len(returned) == 1
        pg.execute("SELECT ensure_activity_partitions(current_date, current_date + 1)")


@pytest.mark.parametrize("statement", [
    "DELETE FROM user_activity",
    "UPDATE user_activity SET dwell_time_ms = 0",
    "SELECT user_id FROM user_activity",
    "SELECT * FROM model_metadata",
    "SELECT * FROM training_datasets",
    "DELETE FROM items",  # the consumer upserts items (009) but never deletes them
    "SELECT drop_activity_partitions_before(current_date)",
])
def test_ingest_role_is_refused(settings, statement):
    with logged_in(settings, "ingest") as pg:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            pg.execute(statement)


@pytest.mark.parametrize("statement", [
    "DELETE FROM items",
    "INSERT INTO training_datasets (name, ds, uri, row_count, positive_count, negative_count, feature_service, "
    "code_version) VALUES ('x', current_date, 's3://x', 0, 0, 0, 'training', 'dev')",
    "UPDATE users SET country = 'US'",
])
def test_reader_role_cannot_write(settings, statement):
    with logged_in(settings, "reader") as pg:
        assert pg.execute("SELECT count(*) FROM model_metadata").fetchone()[0] >= 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            pg.execute(statement)


def test_batch_role_registers_datasets_and_drops_partitions(settings):
    old = date.today() - timedelta(days=50)
    with logged_in(settings, "pipeline") as pg:
        pg.execute(
            "INSERT INTO training_datasets (name, ds, uri, row_count, positive_count, negative_count, "
            "feature_service, code_version) VALUES ('x', current_date, 's3://x', 0, 0, 0, 'training', 'dev')"
        )
        pg.execute("SELECT ensure_activity_partitions(%s, %s)", (old, old + timedelta(days=1)))
        dropped = [r[0] for r in pg.execute("SELECT drop_activity_partitions(%s, %s)", (old, old + timedelta(days=1)))]
        assert f"user_activity_p{old:%Y%m%d}" in dropped  # empty: nothing to reconcile
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            pg.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(f"user_activity_p{old + timedelta(days=1):%Y%m%d}")))
