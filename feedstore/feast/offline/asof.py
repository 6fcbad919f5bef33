"""Point-in-time retrieval as one DuckDB query: an ASOF join per feature view.

Feast's ``duckdb`` store builds, through ibis, an inner join of every entity row with every
feature row of the same key inside the TTL window, then a ``row_number()`` window to keep the
latest one per entity row, then a left join back, per view. DuckDB's ASOF join does the same
in one pass over sorted inputs (bench/results/feast.json: 1M entity rows, 30 days of rows).

Semantics kept from Feast: per view, the latest row with ``event_timestamp <= entity ts`` and
``>= entity ts - ttl`` (ttl 0: unbounded); equal event timestamps are broken by the source's
created-timestamp column when it has one; every entity row comes back (in input order, a
bonus over stock); ``full_feature_names`` prefixes ``<view or alias>__``; field mappings and
projection join-key maps apply. ``plan`` returns ``None`` for what this does not cover
(SQL entity frames, non-Parquet sources, substrait on-demand views,
``filter_by_created_timestamp`` on a source with a created column) and the caller falls back
to stock Feast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from feast import FeatureView
from feast.data_format import ParquetFormat
from feast.infra.offline_stores.file_source import FileSource
from feast.infra.offline_stores.offline_store import RetrievalJob, RetrievalMetadata
from feast.infra.offline_stores.offline_utils import infer_event_timestamp_from_entity_df
from feast.on_demand_feature_view import OnDemandFeatureView

ROW = "__feedstore_row"
ENTITY_TS = "__feedstore_ts"
KEYS = "__feedstore_keys"


def quote(name: str) -> str:
    """A DuckDB identifier (column names come from definitions, never from values)."""
    return '"' + name.replace('"', '""') + '"'


@dataclass
class ViewJoin:
    """What one feature view contributes: its source, keys, TTL and output columns."""

    path: str
    timestamp: str
    created: str | None
    keys: dict[str, str]            # source column -> entity frame column
    features: dict[str, str]        # source column -> output column
    ttl_us: int


@dataclass
class Plan:
    entity: pa.Table                # the caller's frame, as Arrow
    entity_ts: str
    views: list[ViewJoin]
    params: dict[str, Any] = field(default_factory=dict)

    def sql(self) -> str:
        """One statement; values (paths, TTLs, time bounds) are bound parameters."""
        selects, joins = [f"e.{ROW}"], []
        min_ts, max_ts = ts_range(self.entity[self.entity_ts])
        self.params = {"max_ts": max_ts}
        for i, v in enumerate(self.views):
            alias = f"f{i}"
            self.params[f"path{i}"] = v.path
            inner = [f"{quote(src)} AS k{j}" for j, src in enumerate(v.keys)]
            inner.append(f"{quote(v.timestamp)} AS __ts")
            inner += [f"{quote(src)} AS c{j}" for j, src in enumerate(v.features)]
            where = [f"{quote(v.timestamp)} <= $max_ts"]
            if v.ttl_us and min_ts is not None:
                self.params[f"lo{i}"] = min_ts - timedelta(microseconds=v.ttl_us)
                where.append(f"{quote(v.timestamp)} >= $lo{i}")
            dedup = ""
            if v.created:
                part = ", ".join([quote(k) for k in v.keys] + [quote(v.timestamp)])
                dedup = f" QUALIFY row_number() OVER (PARTITION BY {part} ORDER BY {quote(v.created)} DESC) = 1"
            source = (f"(SELECT {', '.join(inner)} FROM read_parquet($path{i}, union_by_name => true)"
                      f" WHERE {' AND '.join(where)}{dedup})")
            on = [f"e.{quote(ent)} = {alias}.k{j}" for j, ent in enumerate(v.keys.values())]
            on.append(f"e.{ENTITY_TS} >= {alias}.__ts")
            joins.append(f"ASOF LEFT JOIN {source} {alias} ON {' AND '.join(on)}")
            if v.ttl_us:
                self.params[f"ttl{i}"] = v.ttl_us
                fresh = f"{alias}.__ts >= e.{ENTITY_TS} - to_microseconds($ttl{i})"
                selects += [f"CASE WHEN {fresh} THEN {alias}.c{j} END AS {quote(out)}"
                            for j, out in enumerate(v.features.values())]
            else:
                selects += [f"{alias}.c{j} AS {quote(out)}" for j, out in enumerate(v.features.values())]
        return (f"SELECT {', '.join(selects)} FROM __feedstore_entity e {' '.join(joins)} ORDER BY e.{ROW}")

    def keys_frame(self) -> pa.Table:
        """Only what the join needs goes to DuckDB: keys, the UTC timestamp and the row number."""
        names = sorted({k for v in self.views for k in v.keys.values()})
        cols = {n: self.entity[n] for n in names}
        # the features' type (µs, UTC): no cast per comparison inside the join
        cols[ENTITY_TS] = pc.cast(_utc(self.entity[self.entity_ts]), pa.timestamp("us", tz="UTC"), safe=False)
        cols[ROW] = pa.array(np.arange(self.entity.num_rows, dtype=np.int64))
        return pa.table(cols)

    def prepare(self, cur) -> None:
        """The session the statement needs, on a cursor of its own (temp tables are per cursor).

        The entity keys go in as a temp table, not a registered Arrow table: DuckDB estimates an
        Arrow scan at ~1 row, under ``asof_loop_join_threshold`` (64), and then plans the first
        ASOF join as a nested-loop join (quadratic: 40 s instead of 1 s on 1M rows). A table has
        its exact cardinality; the threshold itself is a GLOBAL setting we must not change on
        the shared connection.
        """
        cur.execute("SET TimeZone = 'UTC'")  # naive source timestamps are UTC, as in Feast
        cur.register(KEYS, self.keys_frame())
        cur.execute("CREATE OR REPLACE TEMP TABLE __feedstore_entity AS SELECT * FROM __feedstore_keys")
        cur.unregister(KEYS)

    def execute(self, con) -> pa.Table:
        sql = self.sql()
        cur = con.cursor()
        try:
            self.prepare(cur)
            features = cur.execute(sql, self.params).to_arrow_table()
        finally:
            cur.close()
        out = self.entity
        for name in features.column_names[1:]:
            out = out.append_column(name, features[name])
        return out


def _utc(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """Naive entity timestamps are UTC, as in Feast."""
    if col.type.tz is None:
        return col.cast(pa.timestamp(col.type.unit, tz="UTC"))
    return col


def ts_range(col: pa.ChunkedArray) -> tuple[datetime | None, datetime | None]:
    import pyarrow.compute as pc

    mm = pc.min_max(_utc(col).cast(pa.timestamp("us", tz="UTC")))
    return mm["min"].as_py(), mm["max"].as_py()


def entity_table(entity_df: pd.DataFrame) -> tuple[pa.Table, str] | None:
    """The frame as Arrow with its event timestamp column found and parsed as Feast does."""
    ts_col = infer_event_timestamp_from_entity_df(dict(zip(entity_df.columns, entity_df.dtypes)))
    if not (pd.api.types.is_datetime64_any_dtype(entity_df[ts_col])):
        entity_df = entity_df.assign(**{ts_col: pd.to_datetime(entity_df[ts_col], utc=True)})
    table = pa.Table.from_pandas(entity_df, preserve_index=False)
    if table.column(ts_col).null_count:
        return None
    return table, ts_col


def view_join(view: FeatureView, feature_refs: list[str], full_feature_names: bool) -> ViewJoin | None:
    source = view.batch_source
    if not isinstance(source, FileSource) or not isinstance(source.file_format, ParquetFormat):
        return None
    reverse = {new: old for old, new in (source.field_mapping or {}).items()}
    prefix = view.projection.name_to_use()
    requested = [r.split(":", 1)[1] for r in feature_refs if r.startswith(f"{prefix}:")]
    base = view.projection.name_alias or view.name
    join_key_map = view.projection.join_key_map or {e.name: e.name for e in view.entity_columns}
    return ViewJoin(
        path=source.path,
        timestamp=reverse.get(source.timestamp_field, source.timestamp_field),
        created=reverse.get(source.created_timestamp_column, source.created_timestamp_column) or None,
        keys={reverse.get(k, k): v for k, v in join_key_map.items()},
        features={reverse.get(f, f): f"{base}__{f}" if full_feature_names else f for f in requested},
        ttl_us=int(view.ttl.total_seconds() * 1_000_000) if view.ttl else 0,
    )


def plan(feature_views: list[FeatureView], feature_refs: list[str], entity_df: Any,
         full_feature_names: bool, filter_by_created_timestamp: bool) -> Plan | None:
    if not isinstance(entity_df, pd.DataFrame):
        return None
    views = [view_join(v, feature_refs, full_feature_names) for v in feature_views]
    if any(v is None for v in views):
        return None
    if filter_by_created_timestamp and any(v.created for v in views):
        return None
    found = entity_table(entity_df)
    if found is None:
        return None
    table, ts_col = found
    missing = {k for v in views for k in v.keys.values()} - set(table.column_names)
    if missing:
        from feast.errors import FeastEntityDFMissingColumnsError

        raise FeastEntityDFMissingColumnsError(sorted(missing), table.column_names)
    return Plan(entity=table, entity_ts=ts_col, views=views)


class AsofRetrievalJob(RetrievalJob):
    """Runs the plan when asked (``to_df``/``to_arrow``), like every Feast retrieval job."""

    def __init__(self, query: Plan, connection, odfvs: list[OnDemandFeatureView], full_feature_names: bool,
                 metadata: RetrievalMetadata, writer, repo_path: str) -> None:
        super().__init__()
        self._plan, self._con = query, connection
        self._odfvs, self._full_feature_names = odfvs, full_feature_names
        self._metadata, self._writer, self._repo_path = metadata, writer, repo_path

    def _to_arrow_internal(self, timeout: int | None = None) -> pa.Table:
        return self._plan.execute(self._con)

    def _to_df_internal(self, timeout: int | None = None) -> pd.DataFrame:
        return self._to_arrow_internal(timeout).to_pandas()

    @property
    def full_feature_names(self) -> bool:
        return self._full_feature_names

    @property
    def on_demand_feature_views(self) -> list[OnDemandFeatureView]:
        return self._odfvs

    @property
    def metadata(self) -> RetrievalMetadata | None:
        return self._metadata

    def persist(self, storage, allow_overwrite: bool = False, timeout: int | None = None) -> None:
        """Writes the result through Feast's own DuckDB writer (same files as stock)."""
        import ibis

        self._writer(ibis.memtable(self.to_arrow()), storage.to_data_source(), self._repo_path,
                     "overwrite", allow_overwrite)
