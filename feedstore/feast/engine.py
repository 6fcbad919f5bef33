"""Materialization into Redis without a protobuf object per cell.

Feast's local engine reads, filters and de-duplicates the source (kept here unchanged), then
turns every cell into a ``ValueProto`` (~20K rows/s, GBs of objects). ``FastComputeEngine``
swaps only that last step: the Arrow table goes to ``TTLRedisOnlineStore.write_arrow``, which
serialises whole columns and pipelines one atomic newer-wins write per row. Selected in
``feature_store.yaml`` (``batch_engine: feedstore.feast.engine.FastComputeEngine``), so
``feast materialize``/``materialize-incremental`` and ``FeatureStore.materialize`` all use it and
Feast keeps recording the materialized intervals in the registry.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Literal

import pyarrow as pa
import structlog
from feast import FeatureStore
from feast.data_format import ParquetFormat
from feast.infra.common.materialization_job import MaterializationJob, MaterializationTask
from feast.infra.compute_engines.dag.context import ExecutionContext
from feast.infra.compute_engines.local.arrow_table_value import ArrowTableValue
from feast.infra.compute_engines.local.compute import LocalComputeEngine, LocalComputeEngineConfig
from feast.infra.compute_engines.local.feature_builder import LocalFeatureBuilder
from feast.infra.compute_engines.local.local_node import LocalNode
from feast.infra.compute_engines.local.nodes import LocalOutputNode
from feast.infra.offline_stores.file_source import FileSource
from feast.infra.registry.base_registry import BaseRegistry
from prometheus_client import Counter

from feedstore.feast import private
from feedstore.feast.offline.asof import quote
from feedstore.feast.offline.store import ensure_duckdb_s3
from feedstore.feast.online.store import TTLRedisOnlineStore

log = structlog.get_logger(__name__)

STREAM_BATCH_ROWS = 50_000

ROWS_WRITTEN = Counter(
    "feedstore_feast_materialized_rows", "Rows materialized into the online store", ["view"]
)


class ArrowOnlineOutputNode(LocalOutputNode):
    """Feast's output node, writing the online side column-wise when the store can."""

    def execute(self, context: ExecutionContext) -> ArrowTableValue:
        online = context.online_store
        if not isinstance(online, TTLRedisOnlineStore) or not self.feature_view.online:
            return super().execute(context)
        data = self.get_single_table(context).data
        batches = data if isinstance(data, pa.RecordBatchReader) else [data]
        started = time.perf_counter()
        rows = written = 0
        for batch in batches:
            table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
            if table.num_rows:
                written += online.write_arrow(context.repo_config, self.feature_view, table)
                rows += table.num_rows
                ROWS_WRITTEN.labels(self.feature_view.name).inc(table.num_rows)
        seconds = time.perf_counter() - started
        output = ArrowTableValue(data=table if isinstance(data, pa.Table) else pa.table({}))
        context.node_outputs[self.name] = output
        log.info("materialize.view", view=self.feature_view.name, rows=rows, newer=written,
                 seconds=round(seconds, 3), rows_per_s=round(rows / max(seconds, 1e-9)))
        if self.feature_view.offline:
            context.offline_store.offline_write_batch(
                config=context.repo_config, feature_view=self.feature_view, table=table, progress=lambda _: None
            )
        return output


_NO_CREATED = -(2**63 - 1)


def _created(info, table: str) -> str:
    """The created time in microseconds, missing ones below any other (``DESC`` sorts NULLs last)."""
    if not info.created_ts_col:
        return str(_NO_CREATED)
    return f"coalesce(epoch_us({table}{quote(info.created_ts_col)}), {_NO_CREATED})"


class LatestRowsNode(LocalNode):
    """Source read, time filter and newest-row-per-entity as one DuckDB query into Arrow.

    Feast's local nodes read the source into Arrow, then convert it to pandas twice (filter,
    dedup): for 1M rows holding a 32-float embedding that is a million numpy arrays, most of
    the stock run time and well over 1 GB. Same rows and column names as Feast's pull-latest
    (event time, then created time, newest first)."""

    def __init__(self, name: str, view, column_info, start: datetime, end: datetime, latest_only: bool) -> None:
        super().__init__(name)
        self.view, self.source, self.column_info = view, view.batch_source, column_info
        self.start, self.end, self.latest_only = start, end, latest_only

    def sql(self) -> str:
        """Newest row per entity as a semi-join on the newest (event, created) time per key, not
        a window over whole rows: DuckDB's window holds every wide row in memory (10M items with
        their embedding ran out of a 2 GB limit), while the grouping is narrow and the join
        streams. Rows tied on both times for one key all pass; the online write keeps one."""
        info = self.column_info
        mapping = info.field_mapping or {}
        source_cols = [*info.join_keys, *info.feature_cols, info.ts_col]
        if info.created_ts_col:
            source_cols.append(info.created_ts_col)
        select = ", ".join(f"t.{quote(c)} AS {quote(mapping.get(c, c))}" for c in dict.fromkeys(source_cols))
        ts = quote(info.ts_col)
        source = "read_parquet($path, union_by_name => true)"
        query = f"SELECT {select} FROM {source} t"
        if self.latest_only and info.join_keys:
            keys = [quote(k) for k in info.join_keys]
            newest = f"max(struct_pack(e := {ts}, c := {_created(info, '')}))"
            on = [*(f"t.{k} IS NOT DISTINCT FROM n.{k}" for k in keys),
                  f"t.{ts} = n.newest.e", f"{_created(info, 't.')} = n.newest.c"]
            query += (f" SEMI JOIN (SELECT {', '.join(keys)}, {newest} AS newest FROM {source}"
                      f" WHERE {ts} >= $start AND {ts} <= $end GROUP BY ALL) n ON {' AND '.join(on)}")
        return query + f" WHERE t.{ts} >= $start AND t.{ts} <= $end"

    def execute(self, context: ExecutionContext) -> ArrowTableValue:
        """Streams record batches when only our online store consumes them (peak memory is then
        the narrow grouping, not also a full copy of the result)."""
        import ibis

        ensure_duckdb_s3()
        cur = ibis.get_backend().con.cursor()
        cur.execute("SET TimeZone = 'UTC'")
        result = cur.execute(self.sql(), {"path": self.source.path, "start": _utc(self.start), "end": _utc(self.end)})
        view = self.view
        if isinstance(context.online_store, TTLRedisOnlineStore) and view.online and not view.offline:
            reader = result.to_arrow_reader(STREAM_BATCH_ROWS)

            def batches():
                try:
                    yield from reader
                finally:
                    cur.close()

            data = pa.RecordBatchReader.from_batches(reader.schema, batches())
        else:
            try:
                data = result.to_arrow_table()
            finally:
                cur.close()
        output = ArrowTableValue(data=data)
        context.node_outputs[self.name] = output
        return output


def _utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


def _plain_parquet_view(view) -> bool:
    """Views whose rows are the source rows: no transformation, aggregation or filter."""
    source = getattr(view, "batch_source", None)
    return (isinstance(source, FileSource) and isinstance(source.file_format, ParquetFormat)
            and not getattr(view, "feature_transformation", None) and not getattr(view, "aggregations", None)
            and not getattr(view, "filter", None) and not getattr(view, "enable_validation", False))


class ArrowFeatureBuilder(LocalFeatureBuilder):
    def build_source_node(self, view):
        if not isinstance(self.task, MaterializationTask) or not _plain_parquet_view(view):
            return super().build_source_node(view)
        node = LatestRowsNode("source", view, self.get_column_info(view), self.task.start_time,
                              self.task.end_time, private.should_dedupe(self, view))
        self.nodes.append(node)
        return node

    def build_filter_node(self, view, input_node):
        if isinstance(input_node, LatestRowsNode):
            return input_node  # filtered in the query (no entity frame in a materialization)
        return super().build_filter_node(view, input_node)

    def build_dedup_node(self, view, input_node):
        if isinstance(input_node, LatestRowsNode):
            return input_node
        return super().build_dedup_node(view, input_node)

    def build_output_nodes(self, view, input_node):
        node = ArrowOnlineOutputNode("output", self.dag_root.view, inputs=[input_node])
        self.nodes.append(node)
        return node


class FastComputeEngineConfig(LocalComputeEngineConfig):
    type: Literal["feedstore.feast.engine.FastComputeEngine"] = (  # type: ignore[assignment]
        "feedstore.feast.engine.FastComputeEngine"
    )


class FastComputeEngine(LocalComputeEngine):
    """Feast's local engine, its materialization plans built by ``ArrowFeatureBuilder``."""

    def _materialize_one(self, registry: BaseRegistry, task: MaterializationTask, **kwargs) -> MaterializationJob:
        """Feast's own method (it names its builder class inline), with our builder, once the
        DuckDB session can read S3."""
        ensure_duckdb_s3()
        return private.materialize_one(self, registry, task, ArrowFeatureBuilder, **kwargs)


def materialize(store: FeatureStore, views: Sequence[str] | None, start: datetime, end: datetime) -> None:
    """Materialize ``views`` (all when ``None``) for event times in ``[start, end]``.

    Goes through ``FeatureStore.materialize`` so the registry records the interval and
    ``materialize-incremental`` continues from it; the fast path comes from the engine
    configured in ``feature_store.yaml``. Raises if any view fails.
    """
    ensure_duckdb_s3()
    store.materialize(start_date=start, end_date=end, feature_views=list(views) if views else None)
