"""What the assets read: views over the lake (activity, catalog, embeddings, features)
and Postgres tables streamed out through COPY. One home, so every asset sees the same data.
The views are made on DuckDB or Spark alike (``lake.scan``/``lake.view``), one SQL definition each."""

from __future__ import annotations

import io
from datetime import date, datetime, timedelta

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
EMBEDDING_VERSION_SCHEMA = pa.schema([pa.field("item_id", pa.int64()),
                                      pa.field("content_embedding", pa.list_(pa.float32())),
                                      pa.field("valid_from", pa.timestamp("us", tz="UTC"))])
"""``embeddings/items/`` (what ``ingestion.catalog_stream`` and ``feedstore load`` write)."""


# ---- Postgres ----------------------------------------------------------------------------

def copy_out(conn: psycopg.Connection, query: sql.Composable, params: tuple | dict, types: dict[str, pa.DataType],
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


_CATALOG_COLUMNS = ", ".join(CATALOG_SCHEMA.names)
_CATALOG = f"SELECT {_CATALOG_COLUMNS} FROM catalog_deltas WHERE created_at < $end"
_CATALOG_LATEST = f"""
SELECT {_CATALOG_COLUMNS} FROM (
    SELECT {_CATALOG_COLUMNS} FROM catalog_deltas
    QUALIFY row_number() OVER (PARTITION BY item_id ORDER BY coalesce(updated_at, created_at) DESC, filename DESC) = 1
) AS latest WHERE created_at < $end"""


def catalog(con, day: date, settings: Settings) -> None:
    """View ``catalog``: every item as of the end of ``day``, from the base and daily deltas
    (latest change wins, then the later object), without items created after the day. On DuckDB
    or Spark (``lake.scan``)."""
    keys = catalog_keys(day, settings)
    lake.scan(con, "catalog_deltas", keys, CATALOG_SCHEMA, settings, filename=len(keys) > 1)
    lake.view(con, "catalog", _CATALOG_LATEST if len(keys) > 1 else _CATALOG, {"end": lake.day_end(day)})


def _legacy_drop_keys(settings: Settings) -> list[tuple[date, str]]:
    root = settings.pipeline.content_embeddings_prefix.rstrip("/")
    return [(d, k) for d in lake.partition_days(root, settings)
            for k in lake.parquet_keys(lake.day_prefix(root, d), settings)]


_EMBEDDING_VERSIONS = """
SELECT item_id, content_embedding, valid_from, 1 AS source, filename FROM embedding_version_objects
UNION ALL
SELECT item_id, content_embedding, created_at AS valid_from, 0 AS source, filename FROM embedding_drop_objects
"""
_ONE_DROP = ("SELECT item_id, content_embedding, valid_from AS created_at FROM embedding_versions "
             "WHERE valid_from <= $as_of")
_VALID_AT = ("SELECT item_id, content_embedding, valid_from AS created_at FROM embedding_versions "
             "WHERE valid_from <= $as_of QUALIFY row_number() OVER "
             "(PARTITION BY item_id ORDER BY valid_from DESC, source DESC, filename DESC) = 1")


def content_embeddings(con, settings: Settings, as_of: datetime) -> None:
    """View ``content_embeddings``: per item, the embedding valid at ``as_of`` (point in time).

    Two sources: versions under ``embeddings/items/`` (the stream and ``feedstore load``), each
    valid from its ``valid_from``; and whole drops under ``FEED_CONTENT_EMBEDDINGS_PREFIX``
    (``snapshots/items/dt=…/``: item_id, content_embedding, created_at), each row valid from its
    item's ``created_at``, a later drop winning over an earlier one. The newest version with
    ``valid_from <= as_of`` wins (a row stamped ``as_of`` carries what was valid at that instant,
    as Feast's point-in-time join reads it); on a tie, a version over a drop, then the later object.
    Also leaves view ``embedding_versions`` (every version read) for ``embedding_changes``.
    On DuckDB or Spark.
    """
    versions = [k for d in lake.partition_days(lake.EMBEDDINGS, settings) if d < as_of.date() + timedelta(days=1)
                for k in lake.parquet_keys(lake.day_prefix(lake.EMBEDDINGS, d), settings)]
    drops = _legacy_drop_keys(settings)
    lake.scan(con, "embedding_version_objects", versions, EMBEDDING_VERSION_SCHEMA, settings, filename=True)
    lake.scan(con, "embedding_drop_objects", [k for _, k in drops], EMBEDDINGS_SCHEMA, settings, filename=True)
    lake.view(con, "embedding_versions", _EMBEDDING_VERSIONS)
    # One drop and nothing else: each item once, no window needed (10M rows at seed scale).
    one_drop = not versions and len({d for d, _ in drops}) == 1
    lake.view(con, "content_embeddings", _ONE_DROP if one_drop else _VALID_AT, {"as_of": as_of})


_CHANGES = ("SELECT item_id, content_embedding, valid_from FROM embedding_versions "
            "WHERE valid_from >= $start AND valid_from < $end QUALIFY row_number() OVER "
            "(PARTITION BY item_id, valid_from ORDER BY source DESC, filename DESC) = 1")


def embedding_changes(con, start: datetime, end: datetime) -> None:
    """View ``embedding_changes``: each version of ``embedding_versions`` (``content_embeddings``
    builds it) that became valid in ``[start, end)``, with ``valid_from``; one per item and instant,
    chosen as ``content_embeddings`` chooses. With the state at ``start``, they give the embedding
    valid at any moment of the window."""
    lake.view(con, "embedding_changes", _CHANGES, {"start": start, "end": end})


def features(con, view: str, day: date, settings: Settings, schema: pa.Schema | None = None) -> None:
    """View named after the feature view: its rows for ``day``."""
    keys = lake.parquet_keys(lake.feature_prefix(view, day), settings)
    if not keys and schema is None:
        raise FileNotFoundError(f"{view} has no partition for {day}: materialise it first")
    lake.scan(con, view, keys, schema, settings)
