"""Postgres keeps 30 days of activity; older daily partitions are dropped, but never one whose
archive on S3 does not hold exactly the rows Postgres has (checked again right before the drop)."""


from dataclasses import dataclass, field
from datetime import date, timedelta

import dagster as dg
import psycopg

from feedstore.settings import Settings
from orchestration.assets.archive import archived_count, postgres_count
from orchestration.partitions import daily, partition_day
from orchestration.resources import PostgresResource, S3Resource

RETENTION_CHECK = "older_partitions_dropped"


@dataclass
class RetentionReport:
    cutoff: date
    dropped: list[str] = field(default_factory=list)
    kept_unreconciled: list[str] = field(default_factory=list)


def activity_partition_days(conn: psycopg.Connection) -> list[date]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'user_activity'::regclass AND c.relname ~ '^user_activity_p[0-9]{8}$'"
    ).fetchall()
    return sorted(date(int(r[0][15:19]), int(r[0][19:21]), int(r[0][21:23])) for r in rows)


def apply_retention(conn: psycopg.Connection, con, day: date, settings: Settings) -> RetentionReport:
    """Drop the partitions before ``day - (retention - 1)``, stopping at the first non-empty one
    whose archive does not reconcile; each day dropped is recorded as reconciled with its count,
    which the bounded SQL function checks again under lock."""
    cutoff = day - timedelta(days=settings.pipeline.activity_retention_days - 1)
    report = RetentionReport(cutoff=cutoff)
    olds = [d for d in activity_partition_days(conn) if d < cutoff]
    reconciled = []
    for old in olds:
        pg_rows, s3_rows = postgres_count(conn, old), archived_count(con, old, settings)
        if pg_rows and pg_rows != s3_rows:  # an empty day has nothing to lose
            report.cutoff = old
            report.kept_unreconciled = [d.isoformat() for d in activity_partition_days(conn) if old <= d < cutoff]
            break
        reconciled.append((old, pg_rows or 0))
    if not olds or report.cutoff <= olds[0]:
        return report
    with conn.transaction():
        # The database drops a day only if it still holds the count found here (sql/008).
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO activity_reconciled_days (day, row_count) VALUES (%s, %s) ON CONFLICT (day) "
                            "DO UPDATE SET row_count = excluded.row_count, reconciled_at = now()", reconciled)
        report.dropped = [r[0] for r in conn.execute("SELECT drop_activity_partitions(%s, %s)",
                                                     (max(olds[0], report.cutoff - timedelta(days=400)),
                                                      report.cutoff)).fetchall()]
    return report


@dg.asset(
    partitions_def=daily, group_name="activity", kinds={"postgres"},
    deps=["activity_archive"],
    check_specs=[dg.AssetCheckSpec(RETENTION_CHECK, asset="activity_retention", blocking=True,
                                   description="Every partition past retention was archived and dropped")],
    description="Drops Postgres activity partitions older than the retention window once archived.",
)
def activity_retention(context: dg.AssetExecutionContext, postgres: PostgresResource, s3: S3Resource):
    day, settings = partition_day(context), s3.settings()
    with postgres.connect() as conn, s3.duckdb() as con:
        report = apply_retention(conn, con, day, settings)
    meta = {"cutoff": report.cutoff.isoformat(), "dropped": report.dropped,
            "kept_unreconciled": report.kept_unreconciled, "dagster/row_count": len(report.dropped)}
    yield dg.MaterializeResult(metadata=meta, check_results=[dg.AssetCheckResult(
        check_name=RETENTION_CHECK, passed=not report.kept_unreconciled, severity=dg.AssetCheckSeverity.ERROR,
        metadata=meta,
        description="archives that do not reconcile: " + ", ".join(report.kept_unreconciled)
        if report.kept_unreconciled else None)])
