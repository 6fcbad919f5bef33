"""The daily activity archive: the day's landed event files compacted into one deduplicated
Parquet file, or, for days that never came through Kafka, the day exported from Postgres.
Its row count is reconciled with Postgres; retention drops a Postgres day only after that."""


from dataclasses import asdict, dataclass
from datetime import date, datetime, timezone

import dagster as dg
import psycopg
import pyarrow as pa
import structlog
from psycopg import sql

from feedstore.contract.events import EVENT_SCHEMA
from feedstore.settings import Settings
from orchestration import lake, sources
from orchestration.partitions import daily, partition_day
from orchestration.resources import PostgresResource, S3Resource

log = structlog.get_logger(__name__)
MANIFEST = "_reconciliation.json"
RECONCILED_CHECK = "reconciled_with_postgres"

_EXPORT = sql.SQL(
    "SELECT event_id::text, user_id, item_id, event_type, {ts}, dwell_time_ms, context->>'device', "
    "context->>'platform', context->>'session_id' FROM user_activity "
    'WHERE "timestamp" >= %s AND "timestamp" < %s'
).format(ts=sources.epoch_us("timestamp"))

_DEDUP = """
SELECT * EXCLUDE (filename) FROM landed
WHERE "timestamp" >= $start AND "timestamp" < $end
QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY filename, "timestamp") = 1
ORDER BY "timestamp", event_id
"""


@dataclass
class Reconciliation:
    day: str
    source: str                  # "landed" (Kafka consumer files) or "postgres" (daily export)
    landed_files: int
    landed_rows: int
    archive_rows: int
    duplicates_dropped: int
    postgres_rows: int | None    # None: the Postgres partition is gone (retention ran)
    reconciled: bool
    uri: str
    checked_at: str

    def metadata(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def compact_landed(con, keys: list[str], day: date, settings: Settings) -> tuple[pa.Table, int]:
    """Dedupe by ``event_id`` across files (consumer replays); returns the rows and the rows read."""
    rel = con.read_parquet([lake.s3_uri(k, settings) for k in keys], filename=True, union_by_name=True)
    rel.create_view("landed", replace=True)
    landed_rows = con.execute("SELECT count(*) FROM landed").fetchone()[0]
    table = lake.fetch(con, _DEDUP, {"start": lake.day_start(day), "end": lake.day_end(day)})
    return lake.conform(table, EVENT_SCHEMA), landed_rows


def export_postgres(conn: psycopg.Connection, day: date) -> pa.Table:
    """The seed's ``daily_export``, done safely: parameterised, streamed through COPY as CSV."""
    types = {f.name: f.type for f in EVENT_SCHEMA}
    table = sources.copy_out(conn, _EXPORT, (lake.day_start(day), lake.day_end(day)), types,
                             timestamps=("timestamp",))
    return lake.conform(table.sort_by([("timestamp", "ascending"), ("event_id", "ascending")]), EVENT_SCHEMA)


def postgres_partition_exists(conn: psycopg.Connection, day: date) -> bool:
    name = f"user_activity_p{day:%Y%m%d}"
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()[0]


def postgres_count(conn: psycopg.Connection, day: date) -> int | None:
    if not postgres_partition_exists(conn, day):
        return None
    row = conn.execute('SELECT count(*) FROM user_activity WHERE "timestamp" >= %s AND "timestamp" < %s',
                       (lake.day_start(day), lake.day_end(day))).fetchone()
    return int(row[0])


def archived_count(con, day: date, settings: Settings) -> int | None:
    keys = lake.parquet_keys(lake.day_prefix(lake.ARCHIVE, day), settings)
    if not keys:
        return None
    lake.scan(con, "archived", keys, EVENT_SCHEMA, settings)
    return int(con.execute("SELECT count(*) FROM archived").fetchone()[0])


def build_archive(day: date, settings: Settings, conn: psycopg.Connection, con) -> Reconciliation:
    prefix = lake.day_prefix(lake.ARCHIVE, day)
    keys = lake.parquet_keys(lake.day_prefix(lake.LANDED, day), settings)
    if keys:
        table, landed_rows = compact_landed(con, keys, day, settings)
        source = "landed"
    else:
        table = export_postgres(conn, day)
        landed_rows, source = table.num_rows, "postgres"
    previous = lake.get_json(prefix + MANIFEST, settings)
    uri = lake.write_partition(table, prefix, settings)
    pg_rows = postgres_count(conn, day)
    if pg_rows is None and previous is not None:
        # Retention already dropped the day: hold the new archive to what Postgres said then.
        expected = previous.get("postgres_rows")
    else:
        expected = pg_rows
    result = Reconciliation(
        day=day.isoformat(), source=source, landed_files=len(keys), landed_rows=landed_rows,
        archive_rows=table.num_rows, duplicates_dropped=landed_rows - table.num_rows if keys else 0,
        postgres_rows=expected, reconciled=expected is not None and expected == table.num_rows, uri=uri,
        checked_at=datetime.now(timezone.utc).isoformat(),
    )
    lake.put_json(prefix + MANIFEST, asdict(result), settings)
    log.info("activity archived", **result.metadata())
    return result


@dg.asset(
    partitions_def=daily,
    group_name="activity",
    kinds={"duckdb", "s3", "postgres"},
    check_specs=[dg.AssetCheckSpec(RECONCILED_CHECK, asset="activity_archive", blocking=True,
                                   description="Archive row count equals Postgres' count for the day")],
    description="The day's landed events, deduplicated by event_id, as one Parquet file under archive/activity/.",
)
def activity_archive(context: dg.AssetExecutionContext, postgres: PostgresResource, s3: S3Resource):
    day = partition_day(context)
    with postgres.connect() as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        result = build_archive(day, s3.settings(), conn, s3.duckdb())
    meta = result.metadata()
    yield dg.MaterializeResult(
        metadata={**meta, "dagster/row_count": result.archive_rows, "uri": dg.MetadataValue.path(result.uri)},
        check_results=[dg.AssetCheckResult(
            check_name=RECONCILED_CHECK, passed=result.reconciled, metadata=meta,
            severity=dg.AssetCheckSeverity.ERROR,
            description=None if result.reconciled else
            f"archive has {result.archive_rows} rows, Postgres {result.postgres_rows}",
        )],
    )
