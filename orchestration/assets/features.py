"""Window features and embeddings, computed over the Parquet lake and written where the Feast
sources read them (``features/<view>/dt=…/``). The SQL is written once (DuckDB's dialect) and runs
on DuckDB by default or on Spark (``FEED_PIPELINE_ENGINE=spark``, ``orchestration.engines``).
Every row of day D is stamped with the end of D (``lake.day_end``): it describes activity strictly
before that instant, so a training row at time t only ever joins rows computed from events before t."""


from collections.abc import Callable
from datetime import date, datetime, timedelta

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from feedstore import db
from feedstore.contract import features as contract
from feedstore.contract.features import MIN_ENGAGED_WEIGHT_MS
from feedstore.contract.rules import (
    CATEGORIES,
    EMBEDDING_DIM,
    ENGAGEMENT_TYPES,
    HOT_COUNTER_TTL_SECONDS,
    LONG_DWELL_MS,
)
from feedstore.settings import Settings
from orchestration import lake, sources
from orchestration.assets.snapshots import ITEM_CATALOG_FEATURES, USER_PROFILE_FEATURES
from orchestration.partitions import daily, partition_day, window
from orchestration.resources import S3Resource

TS = contract.TIMESTAMP

POPULARITY_BLEND = 0.2             # candidate score = 0.8 cosine + 0.2 normalised log popularity
CANDIDATE_USER_CHUNK = 4_096
CANDIDATE_REFRESH_AFTER = contract.DAILY_AND_MIDDAY.every

USER_ACTIVITY_FEATURES = contract.USER_ACTIVITY.arrow_schema()
ITEM_ENGAGEMENT_FEATURES = contract.ITEM_ENGAGEMENT.arrow_schema()
USER_EMBEDDING = contract.USER_EMBEDDING.arrow_schema()
ITEM_EMBEDDING = contract.ITEM_EMBEDDING.arrow_schema()
USER_CANDIDATES = contract.USER_CANDIDATES.arrow_schema()
USER_REALTIME = contract.USER_REALTIME.arrow_schema()


def _windows(day: date) -> dict[str, datetime]:
    end = lake.day_end(day)
    return {"end": end, "start1": end - timedelta(days=1), "start7": end - timedelta(days=7),
            "start30": end - timedelta(days=30)}


_USER_AGG = """
WITH ev AS (
    SELECT user_id, item_id, event_type, "timestamp" AS ts, dwell_time_ms, "timestamp" >= $start7 AS in7
    FROM activity WHERE "timestamp" >= $start30 AND "timestamp" < $end
), agg AS (
    SELECT user_id,
        count(*) FILTER (WHERE in7) AS n7, count(*) AS n30,
        count(DISTINCT item_id) FILTER (WHERE in7) AS unique_items_7d, count(DISTINCT item_id) AS unique_items_30d,
        count(DISTINCT ts::DATE) FILTER (WHERE in7) AS active_days_7d, count(DISTINCT ts::DATE) AS active_days_30d,
        count(*) FILTER (WHERE in7 AND event_type = 'view') AS views7,
        count(*) FILTER (WHERE event_type = 'view') AS views30,
        count(*) FILTER (WHERE in7 AND event_type = 'like') AS likes7,
        count(*) FILTER (WHERE event_type = 'like') AS likes30,
        count(*) FILTER (WHERE in7 AND event_type = 'share') AS shares7,
        count(*) FILTER (WHERE event_type = 'share') AS shares30,
        count(*) FILTER (WHERE event_type = 'comment') AS comments30,
        avg(dwell_time_ms) FILTER (WHERE in7 AND event_type = 'view' AND dwell_time_ms IS NOT NULL) AS dwell7,
        avg(dwell_time_ms) FILTER (WHERE event_type = 'view' AND dwell_time_ms IS NOT NULL) AS dwell30
    FROM ev GROUP BY user_id
)
SELECT p.user_id, $end AS event_timestamp,
    coalesce(n7, 0) AS interactions_7d, coalesce(n30, 0) AS interactions_30d,
    coalesce(unique_items_7d, 0) AS unique_items_7d, coalesce(unique_items_30d, 0) AS unique_items_30d,
    coalesce(active_days_7d, 0) AS active_days_7d, coalesce(active_days_30d, 0) AS active_days_30d,
    CASE WHEN likes7 > 0 THEN least(1.0, likes7 / greatest(views7, 1)) ELSE 0 END AS like_rate_7d,
    CASE WHEN likes30 > 0 THEN least(1.0, likes30 / greatest(views30, 1)) ELSE 0 END AS like_rate_30d,
    CASE WHEN shares7 > 0 THEN least(1.0, shares7 / greatest(views7, 1)) ELSE 0 END AS share_rate_7d,
    CASE WHEN shares30 > 0 THEN least(1.0, shares30 / greatest(views30, 1)) ELSE 0 END AS share_rate_30d,
    CASE WHEN comments30 > 0 THEN least(1.0, comments30 / greatest(views30, 1)) ELSE 0 END AS comment_rate_30d,
    coalesce(dwell7, 0) AS avg_dwell_ms_7d, coalesce(dwell30, 0) AS avg_dwell_ms_30d
FROM profiles p LEFT JOIN agg USING (user_id)
ORDER BY p.user_id
"""
_USER_CATEGORIES = """
SELECT a.user_id, c.category, count(*) AS n
FROM activity a JOIN catalog c USING (item_id)
WHERE a."timestamp" >= $start30 AND a."timestamp" < $end AND a.user_id IN (SELECT user_id FROM profiles)
GROUP BY ALL
"""


def category_distribution(users: np.ndarray, counts: pa.Table) -> tuple[pa.Array, pa.Array]:
    """Share of each user's interactions per category (``CATEGORIES`` order) and the top one;
    all zeros and no top category for a user with no activity."""
    matrix = np.zeros((len(users), len(CATEGORIES)), dtype=np.float64)
    cat = pc.index_in(counts["category"], value_set=pa.array(CATEGORIES)).to_numpy(zero_copy_only=False)
    known = ~np.isnan(cat.astype(np.float64))
    rows = np.searchsorted(users, counts["user_id"].to_numpy()[known])
    np.add.at(matrix, (rows, cat[known].astype(np.int64)), counts["n"].to_numpy()[known])
    totals = matrix.sum(axis=1)
    dist = np.divide(matrix, totals[:, None], out=np.zeros_like(matrix), where=totals[:, None] > 0)
    top = np.array(CATEGORIES, dtype=object)[matrix.argmax(axis=1)]
    top[totals == 0] = None
    flat = pa.array(dist.astype(np.float32).ravel())
    offsets = pa.array(np.arange(0, dist.size + 1, len(CATEGORIES), dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, flat), pa.array(top, pa.string())


def user_activity_features(con, day: date, settings: Settings) -> pa.Table:
    sources.activity(con, day, 30, settings)
    sources.catalog(con, day, settings)
    sources.features(con, "user_profile_features", day, settings, USER_PROFILE_FEATURES)
    lake.view(con, "profiles", "SELECT DISTINCT user_id FROM user_profile_features")
    return user_activity_table(con, day)


def user_activity_table(con, day: date) -> pa.Table:
    """The view's rows from DuckDB relations ``activity``, ``catalog`` and ``profiles`` (user ids)."""
    params = _windows(day)
    agg = lake.fetch(con, _USER_AGG, {k: params[k] for k in ("start7", "start30", "end")})
    counts = lake.fetch(con, _USER_CATEGORIES, {k: params[k] for k in ("start30", "end")})
    dist, top = category_distribution(agg["user_id"].to_numpy(), counts)
    table = agg.append_column("category_dist_30d", dist).append_column("top_category_30d", top)
    return lake.conform(table, USER_ACTIVITY_FEATURES)


_ITEM_AGG = """
WITH ev AS (
    SELECT item_id, user_id, event_type, "timestamp" AS ts, dwell_time_ms FROM activity
    WHERE "timestamp" >= $start30 AND "timestamp" < $end AND item_id IN (SELECT item_id FROM items)
), views AS (
    SELECT item_id,
        count(*) FILTER (WHERE event_type = 'view' AND ts >= $start1) AS views_1d,
        count(*) FILTER (WHERE event_type = 'view' AND ts >= $start7) AS views_7d,
        count(*) FILTER (WHERE event_type = 'view') AS views_30d,
        count(DISTINCT user_id) FILTER (WHERE event_type = 'view' AND ts >= $start7) AS unique_viewers_7d,
        count(*) FILTER (WHERE list_contains($engaged, event_type) AND ts >= $start7) AS engagements_7d
    FROM ev GROUP BY item_id
), ratings AS (
    -- implicit rating of a (user, item) pair: 1 when engaged, else the dwell as a share of a long dwell
    SELECT item_id, avg(rating) AS avg_rating FROM (
        SELECT item_id, user_id,
            CASE WHEN bool_or(list_contains($engaged, event_type)) THEN 1.0
                 ELSE least(1.0, coalesce(sum(dwell_time_ms), 0) / $long_dwell) END AS rating
        FROM ev WHERE ts >= $start7 GROUP BY item_id, user_id
    ) GROUP BY item_id
)
SELECT i.item_id, $end AS event_timestamp,
    coalesce(views_1d, 0) AS views_1d, coalesce(views_7d, 0) AS views_7d, coalesce(views_30d, 0) AS views_30d,
    coalesce(unique_viewers_7d, 0) AS unique_viewers_7d,
    CASE WHEN views_7d > 0 THEN least(1.0, engagements_7d / views_7d) ELSE 0 END AS engagement_rate_7d,
    coalesce(avg_rating, 0) AS avg_implicit_rating_7d,
    exp(-least(greatest(date_diff('microsecond', i.created_at, $end) / 86400e6, 0), 5000) / 7) AS freshness_score
FROM items i LEFT JOIN views USING (item_id) LEFT JOIN ratings USING (item_id)
ORDER BY i.item_id
"""


def item_engagement_features(con, day: date, settings: Settings) -> pa.Table:
    sources.activity(con, day, 30, settings)
    sources.features(con, "item_catalog_features", day, settings, ITEM_CATALOG_FEATURES)
    lake.view(con, "items", "SELECT item_id, created_at FROM item_catalog_features")
    return item_engagement_table(con, day)


def item_engagement_table(con, day: date) -> pa.Table:
    """The view's rows from DuckDB relations ``activity`` and ``items`` (item_id, created_at)."""
    params = _windows(day) | {"long_dwell": float(LONG_DWELL_MS), "engaged": list(ENGAGEMENT_TYPES)}
    return lake.conform(lake.fetch(con, _ITEM_AGG, params), ITEM_ENGAGEMENT_FEATURES)


_USER_REALTIME = """
WITH ev AS (
    SELECT user_id, item_id, event_type, "timestamp" AS ts, coalesce(dwell_time_ms, 0) AS dwell
    FROM activity WHERE "timestamp" >= $start AND "timestamp" < $end
), marked AS (
    SELECT *, coalesce(ts - lag(ts) OVER (PARTITION BY user_id ORDER BY ts) >= $gap, true)::INT AS starts_run
    FROM ev
), runs AS (
    SELECT *, sum(starts_run) OVER (PARTITION BY user_id ORDER BY ts, starts_run DESC
                                    ROWS UNBOUNDED PRECEDING) AS run
    FROM marked
), running AS (
    SELECT user_id, ts, item_id, event_type,
        count(*) OVER w AS n, sum(dwell) OVER w AS dwell_sum,
        row_number() OVER (PARTITION BY user_id, ts ORDER BY item_id DESC, event_type DESC) AS nth_at_ts
    FROM runs WINDOW w AS (PARTITION BY user_id, run ORDER BY ts RANGE UNBOUNDED PRECEDING)
)
SELECT user_id, ts + INTERVAL 1 MICROSECOND AS event_timestamp, n AS rt_interactions_1h,
       dwell_sum AS rt_dwell_ms_1h, item_id AS rt_last_item_id, event_type AS rt_last_event_type
FROM running WHERE nth_at_ts = 1 AND ts >= $day_start
ORDER BY user_id, event_timestamp
"""


def user_realtime_features(con, day: date, settings: Settings) -> pa.Table:
    sources.activity(con, day, 2, settings)
    return user_realtime_table(con, day)


def user_realtime_table(con, day: date) -> pa.Table:
    """The hot counters as the consumer pushed them, replayed from the archived events (relation
    ``activity``): one row per user and moment of the day they had events. Redis keeps a user's
    counters while events come less than ``HOT_COUNTER_TTL_SECONDS`` apart, so a run of activity
    starts after such a gap; runs are followed back through the previous day only.

    Each row is stamped 1 µs after its events: a training row at the moment of an event joins the
    counters from before it, as a ranker deciding what to show would have read them."""
    start = lake.day_start(day)
    params = {"start": start - timedelta(days=1), "day_start": start, "end": lake.day_end(day),
              "gap": timedelta(seconds=HOT_COUNTER_TTL_SECONDS)}
    return lake.conform(lake.fetch(con, _USER_REALTIME, params), USER_REALTIME)


def _matrix(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A list<float> column of ``EMBEDDING_DIM`` vectors as an (n, dim) float32 array."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    if len(column) and (column.null_count or (lengths != EMBEDDING_DIM).any()):
        raise ValueError(f"embeddings must all have {EMBEDDING_DIM} values")
    return pc.list_flatten(column).to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, EMBEDDING_DIM)


def _embedding_array(matrix: np.ndarray) -> pa.Array:
    offsets = pa.array(np.arange(0, matrix.size + 1, EMBEDDING_DIM, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(matrix.astype(np.float32).ravel()))


def l2_normalise(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)


_ITEM_EMBEDDINGS = """
SELECT e.item_id, e.event_timestamp, e.content_embedding FROM (
    SELECT item_id, valid_from AS event_timestamp, content_embedding FROM embedding_changes
    UNION ALL
    SELECT item_id, $end AS event_timestamp, content_embedding FROM content_embeddings
) e WHERE e.item_id IN (SELECT item_id FROM item_catalog_features)
ORDER BY e.item_id, e.event_timestamp
"""


def item_embeddings(con, day: date, settings: Settings) -> pa.Table:
    """Every catalog item with an embedding, scaled to unit length: as valid at the day's end
    (stamped then), and each version that became valid during the day, stamped with its
    ``valid_from``. With the day before's end rows, a point-in-time join at any moment of the day
    finds the version valid at that moment, never a later one (the rows at the day's end are the
    ones served online and read by the candidates)."""
    start, end = lake.day_start(day), lake.day_end(day)
    sources.content_embeddings(con, settings, end)
    sources.embedding_changes(con, start, end)
    sources.features(con, "item_catalog_features", day, settings, ITEM_CATALOG_FEATURES)
    rows = lake.fetch(con, _ITEM_EMBEDDINGS, {"end": end})
    matrix = l2_normalise(_matrix(rows["content_embedding"]))
    ts = rows["event_timestamp"].cast(TS) if rows.num_rows else pa.array([], TS)
    return pa.table([rows["item_id"], ts, _embedding_array(matrix)], schema=ITEM_EMBEDDING)


_WEIGHTED_SUMS = ", ".join(f"sum(e.content_embedding[{i}] * p.weight) AS d{i}" for i in range(1, EMBEDDING_DIM + 1))
_USER_EMBEDDING_SUMS = """
WITH pairs AS (
    SELECT user_id, item_id,
        greatest(coalesce(sum(dwell_time_ms) FILTER (WHERE event_type = 'view'), 0), $min_weight)::DOUBLE AS weight
    FROM activity WHERE "timestamp" >= $start30 AND "timestamp" < $end
    GROUP BY user_id, item_id
    HAVING bool_or(list_contains($engaged, event_type))
        OR max(dwell_time_ms) FILTER (WHERE event_type = 'view') >= $long_dwell
)
SELECT p.user_id, sum(p.weight) AS weight, """ + _WEIGHTED_SUMS + """
FROM pairs p JOIN content_embeddings e USING (item_id)
GROUP BY p.user_id ORDER BY p.user_id
"""


def user_embeddings(con, day: date, settings: Settings) -> pa.Table:
    """The weighted sums are aggregated inside DuckDB, one row per user: materialising the
    (user, item, embedding) pairs first peaked at 9.8 GiB at seed scale (≈10M pairs)."""
    sources.activity(con, day, 30, settings)
    sources.content_embeddings(con, settings, lake.day_end(day))
    w = _windows(day)
    sums = lake.fetch(con, _USER_EMBEDDING_SUMS, {"start30": w["start30"], "end": w["end"],
                                                  "min_weight": MIN_ENGAGED_WEIGHT_MS, "long_dwell": LONG_DWELL_MS,
                                                  "engaged": list(ENGAGEMENT_TYPES)})
    if sums.num_rows == 0:
        return USER_EMBEDDING.empty_table()
    users = sums["user_id"].to_numpy()
    dims = np.column_stack([sums[f"d{i}"].to_numpy() for i in range(1, EMBEDDING_DIM + 1)])
    matrix = l2_normalise(dims / sums["weight"].to_numpy()[:, None]).astype(np.float32)
    return pa.table([pa.array(users), pa.array(np.full(len(users), lake.day_end(day)), TS),
                     _embedding_array(matrix)], schema=USER_EMBEDDING)


def user_candidates(con, day: date, settings: Settings, as_of: datetime | None = None) -> pa.Table:
    """Candidates as of ``as_of``: the end of ``day`` by default; later for the midday refresh,
    whose last hours come from Postgres."""
    as_of = as_of or lake.day_end(day)
    for view, schema in (("user_embedding", USER_EMBEDDING), ("item_embedding", ITEM_EMBEDDING),
                         ("item_engagement_features", ITEM_ENGAGEMENT_FEATURES)):
        sources.features(con, view, day, settings, schema)
    sources.activity(con, day, 7, settings)
    pool = lake.fetch(con, """
        SELECT e.item_id, e.views_7d, i.item_embedding FROM item_engagement_features e
        JOIN item_embedding i USING (item_id) WHERE e.views_7d > 0 AND i.event_timestamp = $end
        ORDER BY e.views_7d DESC, e.item_id LIMIT $n""",
        {"n": settings.pipeline.candidate_pool_size, "end": lake.day_end(day)})
    users = lake.fetch(con, "SELECT user_id, user_embedding FROM user_embedding ORDER BY user_id")
    if pool.num_rows == 0 or users.num_rows == 0:
        return USER_CANDIDATES.empty_table()
    seen = lake.fetch(con, """
        SELECT DISTINCT a.user_id, a.item_id FROM activity a
        WHERE a."timestamp" >= $start AND a."timestamp" < $end""",
        {"start": as_of - timedelta(days=7), "end": lake.day_end(day)})
    if as_of > lake.day_end(day):
        with db.connect(settings) as conn:
            seen = pa.concat_tables([seen, sources.interacted_pairs(conn, lake.day_end(day), as_of)],
                                    promote_options="permissive")
    return rank_candidates(users, pool, seen, settings.pipeline.candidates_per_user, as_of)


def refresh_time(day: date) -> datetime:
    """When partition ``day``'s midday candidates are stamped: half-way to the next daily rows, so
    the 12h online view never runs dry between two daily runs."""
    return lake.day_end(day) + CANDIDATE_REFRESH_AFTER


def refresh_prefix(day: date) -> str:
    """``features/user_candidates/dt=<next day>T12/``: read by the view's ``dt=*`` glob, never
    replaced by the daily partition's own writer."""
    return f"{contract.USER_CANDIDATES.prefix}/dt={refresh_time(day):%Y-%m-%dT%H}/"


def refreshed_candidates(con, day: date, settings: Settings) -> pa.Table:
    return user_candidates(con, day, settings, as_of=refresh_time(day))


def rank_candidates(users: pa.Table, pool: pa.Table, seen: pa.Table, k: int, ts: datetime) -> pa.Table:
    """Each user's ``k`` best unseen items of the pool (``USER_CANDIDATES`` in the contract says by what)."""
    item_ids = pool["item_id"].to_numpy()
    views = pool["views_7d"].to_numpy().astype(np.float64)
    popularity = (np.log1p(views) / np.log1p(views.max())).astype(np.float32)
    items = _matrix(pool["item_embedding"])
    user_ids = users["user_id"].to_numpy()
    user_matrix = _matrix(users["user_embedding"])
    order = np.argsort(item_ids)
    seen_u, seen_i = seen["user_id"].to_numpy(), seen["item_id"].to_numpy()
    pos = np.searchsorted(item_ids[order], seen_i).clip(0, len(order) - 1)
    in_pool = item_ids[order][pos] == seen_i
    seen_rows = np.searchsorted(user_ids, seen_u[in_pool])
    seen_cols = order[pos[in_pool]]
    valid = (seen_rows < len(user_ids)) & (user_ids[seen_rows.clip(0, len(user_ids) - 1)] == seen_u[in_pool])
    seen_rows, seen_cols = seen_rows[valid], seen_cols[valid]
    k = min(k, len(item_ids))
    ids_out, scores_out, lengths = [], [], []
    for lo in range(0, len(user_ids), CANDIDATE_USER_CHUNK):
        hi = min(lo + CANDIDATE_USER_CHUNK, len(user_ids))
        scores = (1 - POPULARITY_BLEND) * (user_matrix[lo:hi] @ items.T) + POPULARITY_BLEND * popularity
        mask = (seen_rows >= lo) & (seen_rows < hi)
        scores[seen_rows[mask] - lo, seen_cols[mask]] = -np.inf
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < scores.shape[1] else \
            np.tile(np.arange(scores.shape[1]), (hi - lo, 1))
        top_scores = np.take_along_axis(scores, top, axis=1)
        rank = np.argsort(-top_scores, axis=1, kind="stable")
        top, top_scores = np.take_along_axis(top, rank, axis=1), np.take_along_axis(top_scores, rank, axis=1)
        keep = np.isfinite(top_scores)
        ids_out.append(item_ids[top][keep])
        scores_out.append(top_scores[keep].astype(np.float32))
        lengths.append(keep.sum(axis=1))
    offsets = pa.array(np.r_[0, np.cumsum(np.concatenate(lengths))].astype(np.int32))
    return pa.table([pa.array(user_ids), pa.array(np.full(len(user_ids), ts), TS),
                     pa.ListArray.from_arrays(offsets, pa.array(np.concatenate(ids_out))),
                     pa.ListArray.from_arrays(offsets, pa.array(np.concatenate(scores_out)))],
                    schema=USER_CANDIDATES)


# ---- assets ------------------------------------------------------------------------------

VIEW_ASSETS: dict[str, str] = {}
"""Feature view -> the asset that writes its daily table (``features/<view>/dt=<day>/``)."""


def _feature_asset(name: str, view: str, compute, deps: list, description: str,
                   prefix: Callable[[date], str] | None = None):
    """A daily asset writing ``compute``'s table to ``prefix(day)`` (the view's ``dt=<day>/`` by default)."""
    if prefix is None:
        VIEW_ASSETS[view] = name
    @dg.asset(name=name, partitions_def=daily,
              group_name="features", kinds={"duckdb", "s3"}, deps=deps, description=description)
    def _asset(context: dg.AssetExecutionContext, s3: S3Resource) -> dg.MaterializeResult:
        day, settings = partition_day(context), s3.settings()
        with s3.engine() as con:
            table = compute(con, day, settings)
        where = prefix(day) if prefix else lake.feature_prefix(view, day)
        uri = lake.write_partition(table, where, settings)
        return dg.MaterializeResult(metadata={"dagster/row_count": table.num_rows, "view": view,
                                              "uri": dg.MetadataValue.path(uri)})
    return _asset


def _archive(days: int) -> dg.AssetDep:
    return dg.AssetDep("activity_archive", partition_mapping=window(days))


user_activity_features_asset = _feature_asset(
    "user_activity_features", "user_activity_features", user_activity_features,
    [_archive(30), "user_profile_snapshot", "item_catalog_snapshot"],
    "Per user, 7- and 30-day interaction counts, rates, dwell, active days and category mix.")
item_engagement_features_asset = _feature_asset(
    "item_engagement_features", "item_engagement_features", item_engagement_features,
    [_archive(30), "item_catalog_snapshot"],
    "Per item in play, 1/7/30-day views, unique viewers, engagement rate, implicit rating, freshness.")
item_embeddings_asset = _feature_asset(
    "item_embeddings", "item_embedding", item_embeddings, ["item_catalog_snapshot"],
    "Unit-length content embeddings of every catalog item as valid at the day's end, and each version "
    "that became valid during the day at its valid_from (point in time).")
user_embeddings_asset = _feature_asset(
    "user_embeddings", "user_embedding", user_embeddings, [_archive(30), "item_embeddings"],
    "Dwell-weighted mean of the embeddings of the items each user engaged with in 30 days.")
user_candidates_asset = _feature_asset(
    "user_candidates", "user_candidates", user_candidates,
    ["user_embeddings", "item_embeddings", "item_engagement_features", _archive(7)],
    "Top items per user (12h online view): embedding similarity blended with popularity, unseen items only.")



user_realtime_features_asset = _feature_asset(
    "user_realtime_features", "user_realtime_features", user_realtime_features, [_archive(2)],
    "The realtime counters the consumer pushed online, replayed from the day's archived events point in time.")
user_candidates_refresh = _feature_asset(
    "user_candidates_refresh", "user_candidates", refreshed_candidates,
    ["user_embeddings", "item_embeddings", "item_engagement_features", _archive(7)],
    "Midday refresh of the day's candidates (stamped 12h after them), excluding what users interacted "
    "with since; runs on its own schedule, 12h after the daily one.", prefix=refresh_prefix)

ASSETS = [user_activity_features_asset, item_engagement_features_asset, item_embeddings_asset,
          user_embeddings_asset, user_candidates_asset, user_realtime_features_asset, user_candidates_refresh]
