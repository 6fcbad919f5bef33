from __future__ import annotations

import threading
from datetime import date, datetime, timedelta, timezone

import psycopg
import pytest

from feedstore.migrate import PARTITION_DAYS_AHEAD, discover, migrate


def _partitions(conn: psycopg.Connection) -> set[str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'user_activity'::regclass"
    ).fetchall()
    return {r[0] for r in rows}


def test_migrate_twice_is_a_no_op(settings, pg):
    with psycopg.connect(settings.postgres.dsn) as conn:
        assert migrate(conn) == []
    versions = [r[0] for r in pg.execute("SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == [m.version for m in discover()]


def test_concurrent_migrations_on_a_fresh_database(stack, pg):
    """Two migrations racing on an empty database: one applies, the other waits and finds nothing."""
    from urllib.parse import urlsplit

    from psycopg import sql

    from devtools.stack.postgres import PostgresService

    dsn = urlsplit(stack.postgres.dsn)
    name = f"feedstore_race_{datetime.now().strftime('%H%M%S%f')}"
    admin = PostgresService(stack).admin_dsn()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(dsn.username)))
    target = dsn._replace(path=f"/{name}").geturl()
    results: list[int] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with psycopg.connect(target) as conn:
                results.append(len(migrate(conn)))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    try:
        threads = [threading.Thread(target=run) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert sorted(results) == [0, 0, len(discover())]
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_partitions_exist_ahead_and_route_by_utc_day(pg):
    today = datetime.now(timezone.utc).date()
    parts = _partitions(pg)
    for offset in range(PARTITION_DAYS_AHEAD + 1):
        assert f"user_activity_p{(today + timedelta(days=offset)):%Y%m%d}" in parts
    ts = datetime.combine(today, datetime.min.time(), tzinfo=timezone.utc) + timedelta(hours=23, minutes=59)
    pg.execute(
        "INSERT INTO user_activity (event_id, user_id, item_id, event_type, timestamp) "
        "VALUES (gen_random_uuid(), 1, 1, 'view', %s)", (ts,)
    )
    row = pg.execute("SELECT tableoid::regclass::text FROM user_activity WHERE timestamp = %s", (ts,)).fetchone()
    assert row[0] == f"user_activity_p{today:%Y%m%d}"


def test_ensure_partitions_creates_only_missing_days(pg):
    far = date(2031, 1, 1)
    made = pg.execute("SELECT ensure_activity_partitions(%s, %s)", (far, far + timedelta(days=2))).fetchone()[0]
    again = pg.execute("SELECT ensure_activity_partitions(%s, %s)", (far, far + timedelta(days=3))).fetchone()[0]
    assert (made, again) == (3, 1)


def test_insert_outside_any_partition_is_refused(pg):
    with pytest.raises(psycopg.errors.CheckViolation):
        pg.execute(
            "INSERT INTO user_activity (event_id, user_id, item_id, event_type, timestamp) "
            "VALUES (gen_random_uuid(), 1, 1, 'view', '1999-01-01T00:00:00Z')"
        )


def test_duplicate_event_is_ignored_on_conflict(pg):
    ts = datetime.now(timezone.utc)
    insert = (
        "INSERT INTO user_activity (event_id, user_id, item_id, event_type, timestamp) "
        "VALUES ('00000000-0000-0000-0000-000000000001', 1, 2, 'like', %s) "
        "ON CONFLICT DO NOTHING RETURNING event_id"
    )
    assert len(pg.execute(insert, (ts,)).fetchall()) == 1
    assert pg.execute(insert, (ts,)).fetchall() == []


def test_changed_migration_is_refused(settings, tmp_path, monkeypatch):
    from feedstore import migrate as module

    for m in discover():
        (tmp_path / f"{m.version:03d}_{m.name}.sql").write_text(m.sql + "\n-- edited\n")
    monkeypatch.setattr(module, "SQL_DIR", tmp_path)
    with psycopg.connect(settings.postgres.dsn) as conn, pytest.raises(module.MigrationError, match="changed after"):
        module.migrate(conn)
