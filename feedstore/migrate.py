"""Versioned schema migrations from ``sql/NNN_name.sql``, applied in one transaction
under an advisory lock, so two ``feedstore migrate`` at once are safe and re-running is a no-op.

A small runner rather than Alembic: the schema is raw SQL (partitioning, plpgsql), and
Postgres' transactional DDL plus an advisory lock is all the machinery it needs.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import psycopg

from feedstore.settings import PROJECT_ROOT

SQL_DIR = PROJECT_ROOT / "sql"
LOCK_KEY = 0x6665_6564  # "feed"
PARTITION_DAYS_BACK = 30
PARTITION_DAYS_AHEAD = 7
_FILE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(sql_dir: Path | None = None) -> list[Migration]:
    found = []
    for path in sorted((sql_dir or SQL_DIR).glob("*.sql")):
        m = _FILE.match(path.name)
        if not m:
            raise MigrationError(f"{path.name}: migration files are named NNN_name.sql")
        found.append(Migration(int(m.group(1)), m.group(2), path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError("two migration files share a version number")
    return found


def migrate(conn: psycopg.Connection, today: date | None = None) -> list[Migration]:
    """Apply pending migrations and create activity partitions around today; returns what ran."""
    applied_now: list[Migration] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL,"
            " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        applied = dict(conn.execute("SELECT version, checksum FROM schema_migrations").fetchall())
        for migration in discover():
            if migration.version in applied:
                if applied[migration.version] != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.version:03d}_{migration.name} changed after it was applied; "
                        "add a new migration instead"
                    )
                continue
            conn.execute(migration.sql.encode())
            conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (migration.version, migration.name, migration.checksum),
            )
            applied_now.append(migration)
        ensure_partitions_around(conn, today or datetime.now(timezone.utc).date())
    return applied_now


def ensure_partitions_around(conn: psycopg.Connection, day: date) -> int:
    """The retention window behind ``day`` and a week ahead, so inserts never miss a partition."""
    row = conn.execute(
        "SELECT ensure_activity_partitions(%s, %s)",
        (day - timedelta(days=PARTITION_DAYS_BACK), day + timedelta(days=PARTITION_DAYS_AHEAD)),
    ).fetchone()
    return int(row[0])
