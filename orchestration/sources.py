"""What the assets read: DuckDB views over the lake (activity, catalog, embeddings, features)
and Postgres tables streamed out through COPY. One home, so every asset sees the same data."""

from __future__ import annotations

import io
from datetime import date, timedelta

import duckdb
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from psycopg import sql

from feedstore.contract.events import EVENT_SCHEMA
from feedstore.settings import Settings
from orchestration import lake

LIST_SEPARATOR = "\x1f"  # joins Postgres text[] for the CSV trip; never part of a tag or category

CATALOG_SCHEMA = pa.schema([
    pa.field("item_id", pa.int64()), pa.field("creator_id", pa.int64()), pa.field("category", pa.string()),
    pa.field("tags", pa.list_(pa.string())), pa.field("media_type", pa.string()),
    pa.field("created_at", pa.timestamp("us", tz="UTC")), pa.field("updated_at", pa.timestamp("us", tz="UTC")),
])
EMBEDDINGS_SCHEMA = pa.schema([pa.field("item_id", pa.int64()), pa.field("content_embedding", pa.list_(pa.float32())),
                               pa.field("created_at", pa.timestamp("us", tz="UTC"))])


# ---- Postgres ----------------------------------------------------------------------------

def copy_out(conn: psycopg.Connection, query: sql.Composable, params: tuple, types: dict[str, pa.DataType],
             lists: tuple[str, ...] = (), timestamps: tuple[str, ...] = ()) -> pa.Table:
    """Run ``COPY (query) TO STDOUT`` as CSV and parse it in C++: no Python object per row.
    ``lists`` columns come joined with ``LIST_SEPARATOR``; ``timestamps`` as epoch microseconds."""
    buf = io.BytesIO()
    stmt = sql.SQL("COPY ({}) TO STDOUT (FORMAT csv)").format(query)
    with conn.cursor() as cur, cur.copy(stmt, params) as copy:
        for chunk in copy:
            buf.write(chunk)
    if buf.tell() == 0:
        return pa.schema(types.items()).empty_table()
    buf.seek(0)
    csv_types = {k: (pa.string() if k in lists else pa.int64() if k in timestamps else t) for k, t in types.items()}
    table = pacsv.read_csv(
        buf,
        read_options=pacsv.ReadOptions(column_names=list(types), block_size=64 << 20),
        convert_options=pacsv.ConvertOptions(column_types=csv_types, strings_can_be_null=True,
                                             quoted_strings_can_be_null=False),
    )
    for name in lists:
        col = table[name]
        split = pc.if_else(pc.equal(col, ""), pa.scalar([], pa.list_(pa.string())),
                           pc.split_pattern(col, LIST_SEPARATOR))
        table = table.set_column(table.schema.get_field_index(name), name, split.cast(types[name]))
    for name in timestamps:
        table = table.set_column(table.schema.get_field_index(name), name, table[name].cast(types[name]))
    return table


def interacted_pairs(conn: psycopg.Connection, start, end) -> pa.Table:
    """Distinct (user_id, item_id) of the events landed in Postgres in ``[start, end)``: the hot
    tier holds the hours the archive does not have yet."""
    query = sql.SQL("SELECT DISTINCT user_id, item_id FROM user_activity "
                    "WHERE {} >= %s AND {} < %s").format(sql.Identifier("timestamp"), sql.Identifier("timestamp"))
    return copy_out(conn, query, (start, end), {"user_id": pa.int64(), "item_id": pa.int64()})


def epoch_us(column: str) -> sql.Composable:
    return sql.SQL("(extract(epoch FROM {}) * 1000000)::bigint").format(sql.Identifier(column))


def joined(column: str) -> sql.Composable:
    return sql.SQL("array_to_string({}, {})").format(sql.Identifier(column), sql.Literal(LIST_SEPARATOR))


# ---- the lake ----------------------------------------------------------------------------

def activity(con, day: date, days: int, settings: Settings, name: str = "activity") -> None:
    """View ``name``: archived events of ``day`` and the ``days - 1`` before it."""
    keys = [k for d in lake.days_back(day, days) for k in lake.parquet_keys(lake.day_prefix(lake.ARCHIVE, d), settings)]
    lake.scan(con, name, keys, EVENT_SCHEMA, settings)


def catalog_keys(day: date, settings: Settings) -> list[str]:
    return [k for d in lake.partition_days(lake.CATALOG_ITEMS, settings) if d <= day
            for k in lake.parquet_keys(lake.day_prefix(lake.CATALOG_ITEMS, d), settings)]


def catalog(con, day: date, settings: Settings) -> None:
    """View ``catalog``: every item as of the end of ``day``, from the base and daily deltas
    (latest change wins), without items created after the day."""
    keys = catalog_keys(day, settings)
    if len(keys) <= 1:
        lake.scan(con, "catalog_deltas", keys, CATALOG_SCHEMA, settings)
        latest = con.table("catalog_deltas")
    else:
        con.read_parquet([lake.s3_uri(k, settings) for k in keys], filename=True, union_by_name=True) \
            .create_view("catalog_deltas", replace=True)
        latest = con.sql(
            "SELECT * EXCLUDE (filename) FROM catalog_deltas "
            "QUALIFY row_number() OVER (PARTITION BY item_id ORDER BY coalesce(updated_at, created_at) DESC, "
            "filename DESC) = 1")
    latest.filter(_before("created_at", lake.day_end(day))).create_view("catalog", replace=True)


def _before(column: str, moment) -> duckdb.Expression:
    return duckdb.ColumnExpression(column) < duckdb.ConstantExpression(moment)


def content_embeddings(con, settings: Settings) -> None:
    """View ``content_embeddings``: the newest drop of pre-computed item embeddings."""
    root = settings.pipeline.content_embeddings_prefix.rstrip("/")
    days = lake.partition_days(root, settings)
    keys = lake.parquet_keys(lake.day_prefix(root, days[-1]), settings) if days else []
    if keys:
        con.read_parquet([lake.s3_uri(k, settings) for k in keys], union_by_name=True) \
            .select("item_id, content_embedding, created_at").create_view("content_embeddings", replace=True)
    else:
        lake.scan(con, "content_embeddings", [], EMBEDDINGS_SCHEMA, settings)


def features(con, view: str, day: date, settings: Settings, schema: pa.Schema | None = None) -> None:
    """View named after the feature view: its rows for ``day``."""
    keys = lake.parquet_keys(lake.feature_prefix(view, day), settings)
    if not keys and schema is None:
        raise FileNotFoundError(f"{view} has no partition for {day}: materialise it first")
    lake.scan(con, view, keys, schema, settings)


def working_items(con, day: date, days: int = 7) -> None:
    """Table ``working_items``: items with activity in the last ``days`` days or created in them.
    Item feature rows are written for these only: the long tail of a 10M catalog that nobody
    touched keeps its older rows offline and expires online."""
    start = lake.day_start(day - timedelta(days=days - 1))
    con.execute(
        "CREATE OR REPLACE TEMP TABLE working_items AS "
        "SELECT DISTINCT item_id FROM activity WHERE \"timestamp\" >= $start AND \"timestamp\" < $end "
        "UNION SELECT item_id FROM catalog WHERE created_at >= $start",
        {"start": start, "end": lake.day_end(day)},
    )
