"""Catalog and profile rows into Postgres (``items``, ``users``, ``user_follows``): newest version
wins, an older one changes nothing.

A batch is COPYed into a staging table and merged in one transaction: within the batch the
newest version of each id (the last one on a tie) is kept, then ``INSERT … ON CONFLICT DO
UPDATE … WHERE`` the stored version is not newer and the row differs. The rows whose version
is the stored one afterwards are *current*: they are what the lake and the online store take,
so a replay of the same batch (after a crash before the commit) hands them the same rows again.
``ingested_at`` and ``change_xid`` are set on every change: the catalog snapshot exports what
changed since its last export by ``change_xid``, so a late record (an old ``updated_at`` arriving
today) is not missed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from ingestion.records import ITEMS, USERS, Kind

_ITEM_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS catalog_item_staging (
    seq BIGINT, item_id BIGINT, creator_id BIGINT, category TEXT, tags TEXT[], media_type TEXT,
    created_us BIGINT, updated_us BIGINT, version_us BIGINT, metadata TEXT
) ON COMMIT DELETE ROWS
"""
_ITEM_COPY = ("COPY catalog_item_staging (seq, item_id, creator_id, category, tags, media_type, created_us, "
              "updated_us, version_us, metadata) FROM STDIN (FORMAT csv)")
_ITEM_TYPES = ["int8", "int8", "int8", "text", "text[]", "text", "int8", "int8", "int8", "text"]
_ITEM_MERGE = """
WITH incoming AS (
    SELECT DISTINCT ON (item_id) item_id, creator_id, category, tags, media_type,
           'epoch'::timestamptz + created_us * interval '1 microsecond' AS created_at,
           'epoch'::timestamptz + updated_us * interval '1 microsecond' AS updated_at,
           metadata::jsonb AS metadata
    FROM catalog_item_staging ORDER BY item_id, version_us DESC, seq DESC
)
INSERT INTO items AS i (item_id, creator_id, category, tags, media_type, created_at, updated_at, metadata,
                        ingested_at)
SELECT item_id, creator_id, category, tags, media_type, created_at, updated_at, metadata, clock_timestamp()
FROM incoming
ON CONFLICT (item_id) DO UPDATE SET
    creator_id = EXCLUDED.creator_id, category = EXCLUDED.category, tags = EXCLUDED.tags,
    media_type = EXCLUDED.media_type, created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at,
    metadata = EXCLUDED.metadata, ingested_at = EXCLUDED.ingested_at, change_xid = pg_current_xact_id()
WHERE coalesce(i.updated_at, i.created_at) <= coalesce(EXCLUDED.updated_at, EXCLUDED.created_at)
  AND (i.creator_id, i.category, i.tags, i.media_type, i.created_at, i.updated_at, i.metadata)
      IS DISTINCT FROM (EXCLUDED.creator_id, EXCLUDED.category, EXCLUDED.tags, EXCLUDED.media_type,
                        EXCLUDED.created_at, EXCLUDED.updated_at, EXCLUDED.metadata)
RETURNING item_id, (xmax = 0) AS inserted
"""
_ITEM_CURRENT = """
SELECT DISTINCT ON (s.item_id) s.seq FROM catalog_item_staging s JOIN items i USING (item_id)
WHERE (extract(epoch FROM coalesce(i.updated_at, i.created_at)) * 1000000)::bigint = s.version_us
ORDER BY s.item_id, s.seq DESC
"""

_USER_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS catalog_user_staging (
    seq BIGINT, user_id BIGINT, created_us BIGINT, updated_us BIGINT, version_us BIGINT, age_range TEXT,
    country TEXT, language TEXT, preferred TEXT[], following BIGINT[], demographics TEXT, preferences TEXT
) ON COMMIT DELETE ROWS
"""
_USER_COPY = ("COPY catalog_user_staging (seq, user_id, created_us, updated_us, version_us, age_range, country, "
              "language, preferred, following, demographics, preferences) FROM STDIN (FORMAT BINARY)")
_USER_TYPES = ["int8", "int8", "int8", "int8", "int8", "text", "text", "text", "text[]", "int8[]", "text", "text"]
_USER_MERGE = """
WITH incoming AS (
    SELECT DISTINCT ON (user_id) user_id,
           'epoch'::timestamptz + created_us * interval '1 microsecond' AS created_at,
           'epoch'::timestamptz + version_us * interval '1 microsecond' AS updated_at,
           age_range, country, language, preferred, demographics::jsonb AS demographics,
           preferences::jsonb AS preferences
    FROM catalog_user_staging ORDER BY user_id, version_us DESC, seq DESC
)
INSERT INTO users AS u (user_id, created_at, updated_at, age_range, country, language, preferred_categories,
                        demographics, preferences, ingested_at)
SELECT user_id, created_at, updated_at, age_range, country, language, preferred, demographics, preferences,
       clock_timestamp()
FROM incoming
ON CONFLICT (user_id) DO UPDATE SET
    created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at, age_range = EXCLUDED.age_range,
    country = EXCLUDED.country, language = EXCLUDED.language,
    preferred_categories = EXCLUDED.preferred_categories, demographics = EXCLUDED.demographics,
    preferences = EXCLUDED.preferences, ingested_at = EXCLUDED.ingested_at, change_xid = pg_current_xact_id()
WHERE u.updated_at <= EXCLUDED.updated_at
  AND (u.created_at, u.updated_at, u.age_range, u.country, u.language, u.preferred_categories, u.preferences)
      IS DISTINCT FROM (EXCLUDED.created_at, EXCLUDED.updated_at, EXCLUDED.age_range, EXCLUDED.country,
                        EXCLUDED.language, EXCLUDED.preferred_categories, EXCLUDED.preferences)
RETURNING user_id, (xmax = 0) AS inserted
"""
# Follows of the users just written are replaced by their record's list, in the same transaction.
_FOLLOWS_DELETE = "DELETE FROM user_follows WHERE user_id = ANY(%s)"
_FOLLOWS_FROM_STAGING = """
INSERT INTO user_follows (user_id, followed_id, created_at)
SELECT w.user_id, f.followed_id, 'epoch'::timestamptz + w.version_us * interval '1 microsecond'
FROM (SELECT DISTINCT ON (user_id) user_id, following, version_us FROM catalog_user_staging
      WHERE user_id = ANY(%s) ORDER BY user_id, version_us DESC, seq DESC) w
CROSS JOIN LATERAL unnest(w.following) AS f(followed_id)
ON CONFLICT DO NOTHING
"""
_USER_CURRENT = """
SELECT DISTINCT ON (s.user_id) s.seq FROM catalog_user_staging s JOIN users u USING (user_id)
WHERE (extract(epoch FROM u.updated_at) * 1000000)::bigint = s.version_us
ORDER BY s.user_id, s.seq DESC
"""


@dataclass
class Upserted:
    """What one merge did. ``current`` are the batch rows (indices into the table) that are the
    stored version now: new, changed, or an exact repeat; the rest were stale or superseded."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    stale: int = 0
    current: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))

    def add(self, other: Upserted) -> None:
        """Adds the counts (not ``current``, whose indices belong to the other batch)."""
        self.inserted += other.inserted
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.stale += other.stale


def _micros(table: pa.Table, name: str) -> list:
    return pc.cast(table.column(name), pa.int64()).to_pylist()


def _pg_text_array(values: pa.ChunkedArray) -> pa.Array:
    """A list<string> column as Postgres array literals, every element quoted and escaped."""
    arr = values.combine_chunks()
    flat = pc.list_flatten(arr)
    escaped = pc.replace_substring(pc.replace_substring(flat, "\\", "\\\\"), '"', '\\"')
    quoted = pc.binary_join_element_wise('"', escaped, '"', "")
    rebuilt = pa.ListArray.from_arrays(arr.offsets, quoted, mask=arr.is_null())
    return pc.binary_join_element_wise("{", pc.binary_join(rebuilt, ","), "}", "")


def item_csv(table: pa.Table) -> bytes:
    """The staging rows as CSV, written by Arrow in C++: no Python object per row."""
    micros = [pc.cast(table.column(n), pa.int64()) for n in ("created_at", "updated_at", "version")]
    rows = pa.table({"seq": pa.array(np.arange(table.num_rows, dtype=np.int64)), "item_id": table["item_id"],
                     "creator_id": table["creator_id"], "category": table["category"],
                     "tags": _pg_text_array(table["tags"]), "media_type": table["media_type"],
                     "created_us": micros[0], "updated_us": micros[1], "version_us": micros[2],
                     "metadata": table["metadata"]})
    buf = pa.BufferOutputStream()
    pacsv.write_csv(rows, buf, pacsv.WriteOptions(include_header=False, quoting_style="needed"))
    return buf.getvalue().to_pybytes()


def _item_rows(table: pa.Table):
    cols = [table.column(n).to_pylist() for n in ("item_id", "creator_id", "category", "tags", "media_type")]
    times = [_micros(table, n) for n in ("created_at", "updated_at", "version")]
    return zip(range(table.num_rows), *cols, *times, table.column("metadata").to_pylist())


def _user_rows(table: pa.Table):
    times = [_micros(table, n) for n in ("created_at", "updated_at", "version")]
    cols = [table.column(n).to_pylist() for n in ("age_range", "country", "language", "preferred_categories",
                                                  "following", "demographics", "preferences")]
    return zip(range(table.num_rows), table.column("user_id").to_pylist(), *times, *cols)


@dataclass(frozen=True)
class _Plan:
    staging: str
    copy: str
    types: list[str]
    merge: str
    current: str
    rows: object


PLANS = {ITEMS.name: _Plan(_ITEM_STAGING, _ITEM_COPY, _ITEM_TYPES, _ITEM_MERGE, _ITEM_CURRENT, _item_rows),
         USERS.name: _Plan(_USER_STAGING, _USER_COPY, _USER_TYPES, _USER_MERGE, _USER_CURRENT, _user_rows)}


def prepare(conn: psycopg.Connection, kind: Kind) -> None:
    conn.execute(PLANS[kind.name].staging)


def upsert(conn: psycopg.Connection, kind: Kind, table: pa.Table) -> Upserted:
    """Merges ``table`` (``records`` rows of ``kind``) in one transaction; all or nothing."""
    if table.num_rows == 0:
        return Upserted()
    plan = PLANS[kind.name]
    conn.execute(plan.staging)
    with conn.transaction(), conn.cursor() as cur:
        with cur.copy(plan.copy) as copy:
            if kind is ITEMS:
                copy.write(item_csv(table))
            else:
                copy.set_types(plan.types)
                for row in plan.rows(table):
                    copy.write_row(row)
        written = cur.execute(plan.merge).fetchall()
        if kind is USERS:
            changed = [r[0] for r in written]
            if changed:
                cur.execute(_FOLLOWS_DELETE, (changed,))
                cur.execute(_FOLLOWS_FROM_STAGING, (changed,))
        current = np.sort(np.array([r[0] for r in cur.execute(plan.current).fetchall()], dtype=np.int64))
    inserted = sum(1 for r in written if r[1])
    distinct = len(set(table.column(kind.key).to_pylist()))
    return Upserted(inserted, len(written) - inserted, len(current) - len(written), distinct - len(current), current)
