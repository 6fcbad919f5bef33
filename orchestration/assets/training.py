"""The day's labelled training rows with point-in-time features.

Positives: the (user, item) pairs engaged that day (like, share, comment, or a view with a long
dwell), at the pair's first event of the day: features are read as of the moment the item was
shown, so the realtime counters of the engagement itself never leak into its row. For each
positive, ``hard_negatives_per_positive`` hard negatives: popular items of the user's top
categories that the user skipped (viewed briefly) or never engaged with, skipped ones first; and
``negatives_per_positive`` random negatives: items drawn by popularity^``popularity_exponent``
among viewed items, never interacted with by the user in 30 days. Popularity is the views of the
7 days before the hour the positive falls in, so no negative is chosen on what happened after
its row. Negatives take their positive's timestamp, and a user gets each item at most once a day. All
randomness comes from ``seed`` and the day, so a rerun writes the same rows.
Features come from Feast's ``get_historical_features`` with the training feature service:
every value is the latest row at or before the training row's timestamp. That includes the
content embedding: ``item_embedding`` has a row per version at its ``valid_from``, so each row,
positive or negative, gets the version valid at its time (null before the item's first version:
the row is kept, as serving would see the item then, without a vector).
"""


from datetime import date, datetime, timedelta, timezone

import dagster as dg
import numpy as np
import pyarrow as pa
from psycopg.types.json import Jsonb

from feedstore.contract.features import TRAINING_VIEWS
from feedstore.contract.rules import ENGAGEMENT_TYPES, LONG_DWELL_MS, SHORT_DWELL_MS
from feedstore.provenance import code_version
from feedstore.settings import Settings
from orchestration import lake, sources
from orchestration.assets.views import VIEW_ASSETS
from orchestration.partitions import daily, partition_day, previous_day, window
from orchestration.resources import FeastResource, PostgresResource, S3Resource

FEATURE_SERVICE = "training"
# The day's events, catalog and realtime counters (stamped within the day), and its online rows'
# materialisation; the daily features joined point in time were written for the days before.
SAME_DAY_DEPS = ("activity_archive", "item_catalog_snapshot", "online_features", "user_realtime_features")
# The embeddings valid at the day's start (the day before's end rows) and the versions that became
# valid during the day (the day's own partition): content embeddings as of each row's time.
TWO_DAY_DEPS = ("item_embeddings",)
MANIFEST = lake.MANIFEST
ROW_KEYS = ["user_id", "item_id", "event_timestamp", "label", "sample_type"]


class TrainingConfig(dg.Config):
    name: str = "ranking_daily"
    seed: int = 0
    negatives_per_positive: int = 4
    hard_negatives_per_positive: int = 1
    popularity_exponent: float = 0.75
    popular_items_per_category: int = 50
    user_top_categories: int = 3
    max_sampling_rounds: int = 6


def _windows(day: date) -> dict[str, datetime]:
    end = lake.day_end(day)
    return {"day_start": lake.day_start(day), "end": end, "start7": end - timedelta(days=7),
            "start30": end - timedelta(days=30)}


_PREPARE = [
    # engaged that day: the positives, at the pair's first event of the day (when the item was shown)
    """CREATE OR REPLACE TEMP TABLE positives AS
       SELECT row_number() OVER (ORDER BY min("timestamp"), user_id, item_id) - 1 AS pos_id,
              user_id, item_id, min("timestamp") AS event_timestamp
       FROM activity
       WHERE "timestamp" >= $day_start AND "timestamp" < $end
       GROUP BY user_id, item_id
       HAVING bool_or(list_contains($engaged, event_type) OR (event_type = 'view' AND dwell_time_ms >= $long_dwell))""",
    """CREATE OR REPLACE TEMP TABLE pairs AS
       SELECT user_id, item_id,
              bool_or(list_contains($engaged, event_type)
                      OR (event_type = 'view' AND dwell_time_ms >= $long_dwell)) AS engaged,
              bool_or(event_type = 'view' AND dwell_time_ms < $short_dwell) AS skipped
       FROM activity WHERE "timestamp" >= $start30 AND "timestamp" < $end
         AND user_id IN (SELECT user_id FROM positives)
       GROUP BY user_id, item_id""",
    # popularity as of the start of each positive's hour: views of the 7 days before it, nothing later
    """CREATE OR REPLACE TEMP TABLE view_buckets AS
       SELECT item_id, date_trunc('hour', "timestamp") AS bucket, count(*) AS n
       FROM activity WHERE event_type = 'view' AND "timestamp" >= $start7 AND "timestamp" < $end
       GROUP BY ALL""",
    """CREATE OR REPLACE TEMP TABLE popularity AS
       SELECT h.hour, b.item_id, c.category, sum(b.n) AS views
       FROM (SELECT DISTINCT date_trunc('hour', event_timestamp) AS hour FROM positives) h
       JOIN view_buckets b ON b.bucket >= h.hour - INTERVAL 7 DAY AND b.bucket < h.hour
       JOIN catalog c USING (item_id)
       GROUP BY ALL""",
    """CREATE OR REPLACE TEMP TABLE popular AS
       SELECT * FROM popularity
       QUALIFY row_number() OVER (PARTITION BY hour, category ORDER BY views DESC, item_id) <= $top_per_category""",
    """CREATE OR REPLACE TEMP TABLE user_categories AS
       SELECT user_id, category FROM (
           SELECT a.user_id, c.category, count(*) AS n FROM activity a JOIN catalog c USING (item_id)
           WHERE a."timestamp" >= $start30 AND a."timestamp" < $end AND a.user_id IN (SELECT user_id FROM positives)
           GROUP BY a.user_id, c.category)
       QUALIFY row_number() OVER (PARTITION BY user_id ORDER BY n DESC, category) <= $user_categories""",
]
# A positive skips at most the items its user was given before (< k per earlier positive of the
# user), so the first k x (the user's positives) candidates of each (user, hour) are all it can
# reach: the rest never leaves DuckDB (150 per user and hour otherwise, millions at seed scale).
_HARD_CANDIDATES = """
WITH per_user AS (SELECT user_id, count(*) AS n FROM positives GROUP BY user_id),
candidates AS (
    SELECT u.user_id, p.hour, p.item_id, coalesce(pr.skipped, false) AS skipped,
           hash(u.user_id, p.item_id, $seed) AS rank_hash, n.n
    FROM (SELECT DISTINCT user_id, date_trunc('hour', event_timestamp) AS hour FROM positives) h
    JOIN user_categories u USING (user_id)
    JOIN per_user n ON n.user_id = u.user_id
    JOIN popular p ON p.hour = h.hour AND p.category = u.category
    LEFT JOIN pairs pr ON pr.user_id = u.user_id AND pr.item_id = p.item_id
    WHERE NOT coalesce(pr.engaged, false))
SELECT user_id, hour, item_id FROM candidates
QUALIFY row_number() OVER (PARTITION BY user_id, hour ORDER BY skipped DESC, rank_hash, item_id) <= $k * n
ORDER BY user_id, hour, skipped DESC, rank_hash, item_id
"""
_RANDOM = """
SELECT d.pos_id, d.user_id, d.item_id, d.event_timestamp FROM draws d
WHERE NOT EXISTS (SELECT 1 FROM pairs p WHERE p.user_id = d.user_id AND p.item_id = d.item_id)
  AND NOT EXISTS (SELECT 1 FROM taken t WHERE t.user_id = d.user_id AND t.item_id = d.item_id)
QUALIFY row_number() OVER (PARTITION BY d.user_id, d.item_id ORDER BY d.pos_id, d.draw) = 1
ORDER BY d.pos_id, d.draw
"""
ENTITY_SCHEMA = pa.schema([("pos_id", pa.int64()), ("user_id", pa.int64()), ("item_id", pa.int64()),
                           ("event_timestamp", pa.timestamp("us", tz="UTC"))])


def sample_rows(con, day: date, settings: Settings, cfg: TrainingConfig) -> pa.Table:
    """The labelled entity rows (no features yet), sorted by timestamp, user, item."""
    sources.activity(con, day, 30, settings)
    sources.catalog(con, day, settings)
    return sample_from_views(con, day, cfg)


def sample_from_views(con, day: date, cfg: TrainingConfig) -> pa.Table:
    """``sample_rows`` on DuckDB relations ``activity`` and ``catalog`` already in place."""
    w = _windows(day)
    params = {"day_start": w["day_start"], "end": w["end"], "start7": w["day_start"] - timedelta(days=7),
              "start30": w["start30"], "engaged": list(ENGAGEMENT_TYPES), "long_dwell": LONG_DWELL_MS,
              "short_dwell": SHORT_DWELL_MS, "top_per_category": cfg.popular_items_per_category,
              "user_categories": cfg.user_top_categories}
    for statement in _PREPARE:
        used = {k: v for k, v in params.items() if f"${k}" in statement}
        con.execute(statement, used)
    positives = lake.fetch(con, "SELECT * FROM positives ORDER BY pos_id")
    k = cfg.hard_negatives_per_positive
    candidates = lake.fetch(con, _HARD_CANDIDATES, {"seed": cfg.seed, "k": k}) if k else ENTITY_SCHEMA.empty_table()
    hard = _hard_negatives(positives, candidates, k)
    random = _random_negatives(con, positives, hard, day, cfg)
    parts = [_labelled(positives, 1, "positive"), _labelled(hard, 0, "hard_negative"),
             _labelled(random, 0, "random_negative")]
    rows = pa.concat_tables(parts)
    return rows.sort_by([("event_timestamp", "ascending"), ("user_id", "ascending"), ("item_id", "ascending")])


def _hour(ts: np.ndarray) -> np.ndarray:
    return ts.astype("datetime64[h]")


def _hard_negatives(positives: pa.Table, candidates: pa.Table, k: int) -> pa.Table:
    """For each positive in order, the next ``k`` candidates of its user and hour (skipped first,
    then in seeded order) that the user has not been given yet: no pair twice in a day."""
    if k == 0 or candidates.num_rows == 0:
        return ENTITY_SCHEMA.empty_table()
    lists: dict[tuple[int, np.datetime64], list[int]] = {}
    for user, hour, item in zip(candidates["user_id"].to_numpy(), _hour(candidates["hour"].to_numpy()),
                                candidates["item_id"].to_numpy(), strict=True):
        lists.setdefault((int(user), hour), []).append(int(item))
    taken: dict[int, set[int]] = {}
    rows: list[int] = []
    items: list[int] = []
    hours = _hour(positives["event_timestamp"].to_numpy())
    for row, (user, hour) in enumerate(zip(positives["user_id"].to_numpy(), hours, strict=True)):
        given = taken.setdefault(int(user), set())
        picked = [i for i in lists.get((int(user), hour), ()) if i not in given][:k]
        given.update(picked)
        rows.extend([row] * len(picked))
        items.extend(picked)
    chosen = positives.select(["pos_id", "user_id", "event_timestamp"]).take(pa.array(rows, pa.int64()))
    return chosen.append_column("item_id", pa.array(items, pa.int64())).select(ENTITY_SCHEMA.names).cast(ENTITY_SCHEMA)


def _random_negatives(con, positives: pa.Table, hard: pa.Table, day: date, cfg: TrainingConfig) -> pa.Table:
    """Draws weighted by the popularity as of each positive's hour, rejecting what the user touched
    or was already given that day; missing slots are redrawn."""
    k = cfg.negatives_per_positive
    pool = lake.fetch(con, "SELECT hour, item_id, views FROM popularity ORDER BY hour, item_id")
    if k == 0 or pool.num_rows == 0 or positives.num_rows == 0:
        return ENTITY_SCHEMA.empty_table()
    pool_hours = _hour(pool["hour"].to_numpy())
    items, views = pool["item_id"].to_numpy(), pool["views"].to_numpy().astype(np.float64)
    pools = {h: (items[pool_hours == h], views[pool_hours == h] ** cfg.popularity_exponent)
             for h in np.unique(pool_hours)}
    rng = np.random.default_rng([cfg.seed, day.toordinal()])
    con.register("taken_arrow", hard.select(["user_id", "item_id"]))
    con.execute("CREATE OR REPLACE TEMP TABLE taken AS SELECT * FROM taken_arrow")
    chosen: list[pa.Table] = []
    need = positives
    missing = np.full(positives.num_rows, k)
    for _ in range(cfg.max_sampling_rounds):
        per = int(max(missing.max(), 1)) * 3
        draws = _draw(rng, pools, _hour(need["event_timestamp"].to_numpy()), per)
        pos = np.repeat(need["pos_id"].to_numpy(), per)
        con.register("draws_arrow", pa.table({
            "pos_id": pos, "user_id": np.repeat(need["user_id"].to_numpy(), per), "item_id": draws.ravel(),
            "event_timestamp": np.repeat(need["event_timestamp"].to_numpy(), per),
            "draw": np.tile(np.arange(per), need.num_rows),
        }))
        con.execute("CREATE OR REPLACE TEMP TABLE draws AS SELECT * FROM draws_arrow WHERE item_id >= 0")
        kept = lake.fetch(con, _RANDOM)
        need_pos = need["pos_id"].to_numpy()  # ascending: positives are in pos_id order
        slot = np.searchsorted(need_pos, kept["pos_id"].to_numpy())
        kept = _first_n_per_positive(kept, missing[slot])
        chosen.append(kept)
        con.register("kept_arrow", kept.select(["user_id", "item_id"]))
        con.execute("INSERT INTO taken SELECT * FROM kept_arrow")
        missing = missing - np.bincount(np.searchsorted(need_pos, kept["pos_id"].to_numpy()),
                                        minlength=len(need_pos))
        still = missing > 0
        if not still.any():
            break
        need, missing = need.filter(pa.array(still)), missing[still]
    return pa.concat_tables([c.select(ENTITY_SCHEMA.names).cast(ENTITY_SCHEMA) for c in chosen])


def _draw(rng: np.random.Generator, pools: dict, hours: np.ndarray, per: int) -> np.ndarray:
    """``per`` items for each row, from the pool of its hour (-1 where the hour had no views yet)."""
    out = np.full((len(hours), per), -1, dtype=np.int64)
    for hour in np.unique(hours):
        if hour not in pools:
            continue
        items, weights = pools[hour]
        rows = np.flatnonzero(hours == hour)
        out[rows] = rng.choice(items, size=(len(rows), per), p=weights / weights.sum())
    return out


def _first_n_per_positive(kept: pa.Table, limit: np.ndarray) -> pa.Table:
    """The first ``limit[i]`` rows of each positive's run (``limit`` per row of ``kept``)."""
    pos = kept["pos_id"].to_numpy()
    starts = np.r_[0, np.flatnonzero(pos[1:] != pos[:-1]) + 1] if len(pos) else np.array([], int)
    rank = np.arange(len(pos)) - np.repeat(starts, np.diff(np.r_[starts, len(pos)]))
    return kept.filter(pa.array(rank < np.asarray(limit, dtype=np.int64)))


def _labelled(rows: pa.Table, label: int, sample_type: str) -> pa.Table:
    n = rows.num_rows
    return pa.table({"user_id": rows["user_id"].cast(pa.int64()), "item_id": rows["item_id"].cast(pa.int64()),
                     "event_timestamp": rows["event_timestamp"].cast(pa.timestamp("us", tz="UTC")),
                     "label": pa.array(np.full(n, label, dtype=np.int64)),
                     "sample_type": pa.array([sample_type] * n, pa.string())})


def with_features(rows: pa.Table, feast: FeastResource) -> pa.Table:
    """Point-in-time features for every row, in the rows' order."""
    if rows.num_rows == 0:
        raise ValueError("no positives that day: nothing to train on")
    entity_df = rows.to_pandas()
    entity_df["row"] = np.arange(len(entity_df))
    joined = feast.historical_features(entity_df, FEATURE_SERVICE)
    joined = joined.sort_by("row")
    return joined.drop(["row"])


def register(conn, cfg: TrainingConfig, day: date, uri: str, counts: dict[str, int], manifest: dict) -> int:
    total = sum(counts.values())
    row = conn.execute(
        "INSERT INTO training_datasets (name, ds, uri, row_count, positive_count, negative_count, "
        "hard_negative_count, label_balance, feature_service, code_version, manifest) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (name, ds) DO UPDATE SET uri = EXCLUDED.uri, row_count = EXCLUDED.row_count, "
        "positive_count = EXCLUDED.positive_count, negative_count = EXCLUDED.negative_count, "
        "hard_negative_count = EXCLUDED.hard_negative_count, label_balance = EXCLUDED.label_balance, "
        "feature_service = EXCLUDED.feature_service, code_version = EXCLUDED.code_version, "
        "manifest = EXCLUDED.manifest, created_at = now() RETURNING dataset_id",
        (cfg.name, day, uri, total, counts["positive"], counts["random_negative"] + counts["hard_negative"],
         counts["hard_negative"], counts["positive"] / total if total else None, FEATURE_SERVICE, code_version(),
         Jsonb(manifest)),
    ).fetchone()
    conn.commit()
    return int(row[0])


@dg.asset(
    partitions_def=daily, group_name="training", kinds={"feast", "duckdb", "s3", "postgres"},
    deps=[*SAME_DAY_DEPS, *(dg.AssetDep(a, partition_mapping=window(2)) for a in TWO_DAY_DEPS),
          *(dg.AssetDep(VIEW_ASSETS[v], partition_mapping=previous_day) for v in TRAINING_VIEWS
            if VIEW_ASSETS[v] not in SAME_DAY_DEPS + TWO_DAY_DEPS)],
    description="The day's labelled (user, item) rows with point-in-time features, under `training/<name>/`.",
)
def training_dataset(context: dg.AssetExecutionContext, config: TrainingConfig, s3: S3Resource,
                     postgres: PostgresResource, feast: FeastResource) -> dg.MaterializeResult:
    day, settings = partition_day(context), s3.settings()
    with s3.duckdb() as con:
        rows = sample_rows(con, day, settings, config)
    table = with_features(rows, feast)
    prefix = lake.day_prefix(f"{lake.TRAINING}/{config.name}", day)
    uri = lake.write_partition(table, prefix, settings)
    types = table["sample_type"].to_numpy(zero_copy_only=False)
    counts = {t: int((types == t).sum()) for t in ("positive", "random_negative", "hard_negative")}
    manifest = {
        "name": config.name, "ds": day.isoformat(), "uri": uri, "rows": table.num_rows, "counts": counts,
        "config": config.model_dump(), "feature_service": FEATURE_SERVICE, "code_version": code_version(),
        "columns": [f"{f.name}: {f.type}" for f in table.schema],
        "created_at": datetime.now(timezone.utc).isoformat(),
    }
    manifest_uri = lake.put_json(prefix + MANIFEST, manifest, settings)
    with postgres.connect() as conn:
        dataset_id = register(conn, config, day, uri, counts, manifest)
    return dg.MaterializeResult(metadata={
        "dagster/row_count": table.num_rows, **counts, "dataset_id": dataset_id,
        "label_balance": counts["positive"] / table.num_rows, "uri": dg.MetadataValue.path(uri),
        "manifest": dg.MetadataValue.path(manifest_uri),
    })
