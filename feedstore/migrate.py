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
from urllib.parse import unquote, urlsplit

import psycopg
from psycopg import sql

from feedstore.logs import get_logger
from feedstore.settings import PROJECT_ROOT, RUNTIME_COMPONENTS, Settings, get_settings

SQL_DIR = PROJECT_ROOT / "sql"
LOCK_KEY = 0x6665_6564  # "feed"
PARTITION_DAYS_BACK = 30
PARTITION_DAYS_AHEAD = 7
_FILE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
GROUP_ROLES = {"ingest": "feedstore_ingest", "pipeline": "feedstore_batch", "serve": "feedstore_serve",
               "reader": "feedstore_reader"}
"""The NOLOGIN role holding each component's grants (sql/004, sql/008)."""
DAGSTER_GROUP, DAGSTER_SCHEMA = "feedstore_dagster", "dagster"
"""Dagster's storage login: member of this role, which may create tables in this schema only (sql/015)."""
FEAST_GRANTS = {"feedstore_batch": "SELECT, INSERT, UPDATE, DELETE", "feedstore_ingest": "SELECT",
                "feedstore_serve": "SELECT", "feedstore_reader": "SELECT"}
"""On Feast's registry tables, which migrate creates: no runtime role runs DDL."""
log = get_logger(__name__)


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


def migrate(conn: psycopg.Connection, today: date | None = None, settings: Settings | None = None) -> list[Migration]:
    """Apply pending migrations, create Feast's registry tables, the components' login users
    and activity partitions around today; returns the migrations that ran."""
    s = settings or get_settings()
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
        conn.execute("UPDATE activity_partition_window SET days_back = %s, days_ahead = %s, days_kept = %s",
                     (s.postgres.partition_days_back, s.postgres.partition_days_ahead, s.postgres.partition_days_kept))
        ensure_feast_registry(conn)
        ensure_logins(conn, s)
    return applied_now


def ensure_feast_registry(conn: psycopg.Connection) -> None:
    """Feast's SQL registry tables, from Feast's own metadata, owned by the migrating role and
    granted to the components (Feast would otherwise create them as whoever starts first)."""
    from feast.infra.registry.sql import metadata
    from sqlalchemy.dialects import postgresql
    from sqlalchemy.schema import CreateIndex, CreateTable

    dialect = postgresql.dialect()
    for table in metadata.sorted_tables:
        conn.execute(str(CreateTable(table, if_not_exists=True).compile(dialect=dialect)).encode())
        for index in table.indexes:
            conn.execute(str(CreateIndex(index, if_not_exists=True).compile(dialect=dialect)).encode())
        for role, privileges in FEAST_GRANTS.items():
            conn.execute(sql.SQL("GRANT {} ON {} TO {}").format(
                sql.SQL(privileges), sql.Identifier(table.name), sql.Identifier(role)))


@dataclass(frozen=True)
class Login:
    component: str
    dsn: str
    group: str

    @property
    def user(self) -> str:
        return unquote(urlsplit(self.dsn).username or "")

    @property
    def password(self) -> str:
        return unquote(urlsplit(self.dsn).password or "")


def logins(settings: Settings) -> list[Login]:
    """The logins ``migrate`` makes: each runtime component's, and Dagster's storage login when
    its DSN is on the migrated database (elsewhere, its administrator makes it: README)."""
    made = [Login(c, settings.postgres.dsn_for(c), GROUP_ROLES[c]) for c in RUNTIME_COMPONENTS]
    dagster, owner = urlsplit(settings.dagster_login_dsn), urlsplit(settings.postgres.dsn)
    if (dagster.hostname, dagster.port, dagster.path) == (owner.hostname, owner.port, owner.path):
        made.append(Login("dagster", settings.dagster_login_dsn, DAGSTER_GROUP))
    return made


def ensure_logins(conn: psycopg.Connection, settings: Settings) -> None:
    """Each login of ``logins`` (the user of its DSN), member of its group role, with its DSN's
    password. Roles are cluster-wide and several databases migrate at once, so a role is altered
    only when its DSN cannot log in. Where the migrating role may not manage roles, an
    administrator creates them (README)."""
    for login in logins(settings):
        user, password, component = login.user, login.password, login.component
        if not user or user == conn.info.user:
            continue
        row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (user,)).fetchone()
        if row and row[0]:
            raise MigrationError(f"the {component} DSN logs in as {user}, a superuser: give it a role of its own")
        attrs = sql.SQL("LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS")
        if password:
            attrs += sql.SQL(" PASSWORD {}").format(sql.Literal(password))
        if row is None:
            _role_statement(conn, sql.SQL("CREATE ROLE {} {}").format(sql.Identifier(user), attrs), component, user)
        elif password and not _can_log_in(login.dsn):
            _role_statement(conn, sql.SQL("ALTER ROLE {} {}").format(sql.Identifier(user), attrs), component, user)
        member = conn.execute("SELECT pg_has_role(%s, %s, 'MEMBER')", (user, login.group)).fetchone()
        if not (member and member[0]):
            _role_statement(conn, sql.SQL("GRANT {} TO {}").format(sql.Identifier(login.group), sql.Identifier(user)),
                            component, user)
        if component == "dagster":
            _ensure_search_path(conn, user, DAGSTER_SCHEMA)


def _ensure_search_path(conn: psycopg.Connection, user: str, schema: str) -> None:
    """``user``'s sessions resolve unqualified names in ``schema`` only: Dagster's storage creates
    and finds its tables there (``public`` refuses it CREATE)."""
    setting = f"search_path={schema}"
    row = conn.execute("SELECT 1 FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole "
                       "WHERE r.rolname = %s AND s.setdatabase = 0 AND %s = ANY(s.setconfig)",
                       (user, setting)).fetchone()
    if row is None:
        _role_statement(conn, sql.SQL("ALTER ROLE {} SET search_path = {}").format(
            sql.Identifier(user), sql.Identifier(schema)), "dagster", user)


def _role_statement(conn: psycopg.Connection, statement: sql.Composed, component: str, user: str) -> None:
    try:
        with conn.transaction():
            conn.execute(statement)
    except (psycopg.errors.DuplicateObject, psycopg.errors.UniqueViolation, psycopg.errors.InternalError):
        pass  # another database's migrate made or changed it at the same moment
    except psycopg.errors.InsufficientPrivilege:
        log.warning("migrate_login_not_managed", component=component, user=user,
                    hint="create it and grant it its group role as an administrator (README)")


def _can_log_in(dsn: str) -> bool:
    try:
        psycopg.connect(dsn, connect_timeout=5).close()
        return True
    except psycopg.OperationalError:
        return False


def ensure_partitions_around(conn: psycopg.Connection, day: date) -> int:
    """The retention window behind ``day`` and a week ahead, so inserts never miss a partition."""
    row = conn.execute(
        "SELECT ensure_activity_partitions(%s, %s)",
        (day - timedelta(days=PARTITION_DAYS_BACK), day + timedelta(days=PARTITION_DAYS_AHEAD)),
    ).fetchone()
    return int(row[0])
