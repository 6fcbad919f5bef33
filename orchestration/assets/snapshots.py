"""Postgres to Parquet: the item catalog (incrementally: a 10M-row table is exported once, then
only what changed) and the user profiles (whole: 100K rows), each also written as its Feast
feature table."""


from datetime import date

import dagster as dg
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

from feedstore.contract import features as contract
from feedstore.settings import Settings
from orchestration import lake, sources
from orchestration.partitions import daily, partition_day, window
from orchestration.resources import PostgresResource, S3Resource

MANIFEST = lake.MANIFEST
TS = contract.TIMESTAMP

# The views' tables, plus when each entity was created (later assets derive ages from it).
ITEM_CATALOG_FEATURES = contract.ITEM_CATALOG.arrow_schema(pa.field("created_at", TS))
USER_PROFILE_FEATURES = contract.USER_PROFILE.arrow_schema(pa.field("created_at", TS))

# A delta: items created in the day (from the previous export's bound on, inclusive) and items
# changed by any transaction not yet finished when the previous export began (``change_xid``
# from its snapshot's xmin on): a commit order, so a row committed during an export is in the
# next one; the catalog view deduplicates the repeats. The first export takes every item created
# before the day's end, whenever (1969 and 1900 included).
_ITEMS = sql.SQL(
    "SELECT item_id, creator_id, category, {tags}, media_type, {created}, {updated} FROM items "
    "WHERE created_at < %(end)s AND (%(full)s OR created_at >= %(since)s OR change_xid >= %(xmin)s::xid8)"
).format(tags=sources.joined("tags"), created=sources.epoch_us("created_at"),
         updated=sources.epoch_us("updated_at"))
_USERS = sql.SQL(
    "SELECT u.user_id, u.created_at_us, u.age_range, u.country, u.language, u.preferred, "
    "coalesce(f.n, 0) FROM (SELECT user_id, {created} AS created_at_us, age_range, country, language, "
    "{preferred} AS preferred FROM users WHERE created_at < %s) u "
    "LEFT JOIN (SELECT user_id, count(*) AS n FROM user_follows GROUP BY user_id) f USING (user_id)"
).format(created=sources.epoch_us("created_at"), preferred=sources.joined("preferred_categories"))
def catalog_delta(conn: psycopg.Connection, day: date, settings: Settings) -> tuple[pa.Table, dict]:
    """Items created or changed since the last snapshot before ``day`` (all items on the first run).
    The manifest keeps both watermarks: the created-at bound and the export's transaction xmin."""
    earlier = [d for d in lake.partition_days(lake.CATALOG_ITEMS, settings) if d < day]
    manifest = lake.get_json(lake.day_prefix(lake.CATALOG_ITEMS, earlier[-1]) + MANIFEST, settings) if earlier else None
    xmin = conn.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text").fetchone()[0]
    since = manifest["watermark"] if manifest else None
    since_xmin = (manifest or {}).get("xmin", "0")
    types = {f.name: f.type for f in sources.CATALOG_SCHEMA}
    params = {"end": lake.day_end(day), "full": manifest is None, "since": since or lake.day_end(day),
              "xmin": since_xmin}
    table = sources.copy_out(conn, _ITEMS, params, types, lists=("tags",), timestamps=("created_at", "updated_at"))
    table = table.sort_by("item_id")
    info = {"day": day.isoformat(), "since": since, "since_xmin": since_xmin, "watermark": lake.day_end(day).isoformat(),
            "xmin": xmin, "full": manifest is None, "rows": table.num_rows,
            "base_day": earlier[-1].isoformat() if earlier else None}
    return table, info


def item_catalog_features(con, day: date, settings: Settings) -> pa.Table:
    """Every item of the catalog as of the day's end: any item can be served or sampled, so none
    may lack its attributes (10M items: ~10M narrow rows a day, written in seconds; the online
    materialisation of them is the larger cost, see README "Bring your own data")."""
    sources.catalog(con, day, settings)
    table = lake.fetch(con, """
        SELECT c.item_id, $ts AS event_timestamp, c.category, c.media_type, c.creator_id, c.tags,
               greatest(date_diff('microsecond', c.created_at, $ts) / 86400e6, 0)::DOUBLE AS item_age_days,
               c.created_at
        FROM catalog c ORDER BY c.item_id""", {"ts": lake.day_end(day)})
    return lake.conform(table, ITEM_CATALOG_FEATURES)


@dg.asset(
    partitions_def=daily, group_name="catalog", kinds={"postgres", "s3", "duckdb"},
    deps=[dg.AssetDep("activity_archive", partition_mapping=window(7))],
    description="Items created or changed that day (the whole catalog the first time) under catalog/items/, "
                "and item_catalog_features for every catalog item.",
)
def item_catalog_snapshot(context: dg.AssetExecutionContext, postgres: PostgresResource, s3: S3Resource):
    day, settings = partition_day(context), s3.settings()
    with postgres.connect() as conn:
        delta, info = catalog_delta(conn, day, settings)
    prefix = lake.day_prefix(lake.CATALOG_ITEMS, day)
    uri = lake.write_partition(delta, prefix, settings)
    lake.put_json(prefix + MANIFEST, info, settings)
    with s3.engine() as con:
        features = item_catalog_features(con, day, settings)
    features_uri = lake.write_partition(features, lake.feature_prefix(contract.ITEM_CATALOG.name, day), settings)
    return dg.MaterializeResult(metadata={
        "delta_rows": delta.num_rows, "full_export": info["full"], "since": str(info["since"]),
        "since_xmin": info["since_xmin"],
        "feature_rows": features.num_rows, "dagster/row_count": features.num_rows,
        "uri": dg.MetadataValue.path(uri), "features_uri": dg.MetadataValue.path(features_uri),
    })


def user_profile_features(conn: psycopg.Connection, day: date) -> pa.Table:
    types = {"user_id": pa.int64(), "created_at": TS, "age_range": pa.string(), "country": pa.string(),
             "language": pa.string(), "preferred_categories": pa.list_(pa.string()), "following_count": pa.int64()}
    users = sources.copy_out(conn, _USERS, (lake.day_end(day),), types, lists=("preferred_categories",),
                             timestamps=("created_at",))
    ts = lake.day_end(day)
    age_us = pc.subtract(pa.scalar(int(ts.timestamp()) * 1_000_000), users["created_at"].cast(pa.int64()))
    age_days = pc.divide(age_us, 86_400_000_000)
    users = users.append_column("account_age_days", age_days).append_column(
        "event_timestamp", pa.array([ts] * users.num_rows, TS))
    return lake.conform(users.sort_by("user_id"), USER_PROFILE_FEATURES)


@dg.asset(
    partitions_def=daily, group_name="catalog", kinds={"postgres", "s3"},
    description="Every user's profile as of the day's end, written as user_profile_features.",
)
def user_profile_snapshot(context: dg.AssetExecutionContext, postgres: PostgresResource, s3: S3Resource):
    day, settings = partition_day(context), s3.settings()
    with postgres.connect() as conn:
        table = user_profile_features(conn, day)
    uri = lake.write_partition(table, lake.feature_prefix(contract.USER_PROFILE.name, day), settings)
    return dg.MaterializeResult(metadata={"dagster/row_count": table.num_rows, "uri": dg.MetadataValue.path(uri)})


VIEW_ASSETS = {contract.ITEM_CATALOG.name: "item_catalog_snapshot", contract.USER_PROFILE.name: "user_profile_snapshot"}
"""Feature view -> the snapshot asset that writes its daily table."""
SUITES = {"item_catalog_snapshot": "items", "user_profile_snapshot": "users"}
"""A snapshot is checked with the suite of the table it copies, not a feature suite."""
