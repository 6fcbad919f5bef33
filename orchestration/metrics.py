"""Prometheus metrics of the daily pipeline, read at scrape time from Dagster's instance (its
runs and event log) and Feast's registry, so a run process never has to stay up to be scraped.
``feedstore exporter`` serves them; every name starts ``feedstore_pipeline_`` (README:
Monitoring; ops/prometheus alerts on them)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from feedstore.contract.features import BATCH_VIEWS
from feedstore.logs import get_logger

PREFIX = "feedstore_pipeline_"
log = get_logger("feedstore.exporter")


def _day_end(partition: str) -> float:
    start = datetime.fromisoformat(partition[:10]).replace(tzinfo=timezone.utc)
    return (start + timedelta(days=1)).timestamp()


class PipelineCollector(Collector):
    """One pass over the instance per scrape: the newest partition, rows and step time of each
    asset's latest materialisation, each blocking check's latest verdict; and per batch feature
    view, when its online rows were last materialised up to and its TTL."""

    def __init__(self, instance_factory: Callable, store_factory: Callable | None = None) -> None:
        self._instance = instance_factory
        self._store = store_factory

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from orchestration.definitions import ASSETS, CHECKS

        p = PREFIX
        rows = GaugeMetricFamily(p + "asset_rows", "Rows the asset's latest materialisation wrote (dagster/row_count)",
                                 labels=["asset"])
        seconds = GaugeMetricFamily(p + "asset_duration_seconds", "Wall time of the step of the asset's latest "
                                    "materialisation", labels=["asset"])
        materialized = GaugeMetricFamily(p + "asset_materialized_timestamp_seconds",
                                         "Unix time of the asset's latest materialisation", labels=["asset"])
        partition_end = GaugeMetricFamily(p + "partition_end_timestamp_seconds",
                                          "End (Unix time) of the newest daily partition materialised", labels=["asset"])
        passed = GaugeMetricFamily(p + "check_passed", "1 when the blocking check's latest evaluation passed, 0 when "
                                   "it failed", labels=["asset", "check"])
        up = GaugeMetricFamily(p + "instance_up", "1 when Dagster's instance could be read", labels=[])
        try:
            instance = self._instance()
            keys = [key for asset in ASSETS for key in asset.keys]
            latest = instance.get_latest_materialization_events(keys)
            for key in keys:
                name = key.to_user_string()
                self._asset(instance, name, latest.get(key), rows, seconds, materialized)
                done = instance.get_materialized_partitions(key)
                if done:
                    partition_end.add_metric([name], _day_end(max(done)))
            # Separate checks, and those an asset reports with its materialisation (the archive's).
            check_keys = {k for d in (*ASSETS, *CHECKS) for k in d.check_keys}
            for check_key in sorted(check_keys, key=lambda k: (k.asset_key.to_user_string(), k.name)):
                self._check(instance, check_key, passed)
            up.add_metric([], 1)
        except Exception as exc:  # noqa: BLE001 - a scrape reports the failure, it does not raise
            log.warning("exporter_instance_failed", error=f"{type(exc).__name__}: {exc}")
            up.add_metric([], 0)
        yield from (rows, seconds, materialized, partition_end, passed, up)
        yield from self._views()

    @staticmethod
    def _asset(instance, name: str, entry, rows, seconds, materialized) -> None:
        from dagster import DagsterEventType

        if entry is None:
            return
        materialized.add_metric([name], entry.timestamp)
        meta = entry.asset_materialization.metadata if entry.asset_materialization else {}
        count = meta.get("dagster/row_count")
        if count is not None:
            rows.add_metric([name], float(count.value))
        starts = instance.all_logs(entry.run_id, of_type=DagsterEventType.STEP_START)
        start = next((e.timestamp for e in starts if e.step_key == entry.step_key), None)
        if start is not None:
            seconds.add_metric([name], entry.timestamp - start)

    @staticmethod
    def _check(instance, check_key, passed) -> None:
        from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus as Status

        record = instance.get_latest_asset_check_evaluation_record(check_key)
        if record is not None and record.status in (Status.SUCCEEDED, Status.FAILED):
            passed.add_metric([check_key.asset_key.to_user_string(), check_key.name],
                              1.0 if record.status is Status.SUCCEEDED else 0.0)

    def _views(self) -> Iterator[GaugeMetricFamily]:
        p = PREFIX
        fresh = GaugeMetricFamily(p + "view_materialized_timestamp_seconds", "Unix time up to which the view's online "
                                  "rows were last materialised (Feast's registry)", labels=["view"])
        ttl = GaugeMetricFamily(p + "view_ttl_seconds", "The view's TTL: online rows older than this read as missing",
                                labels=["view"])
        if self._store is not None:
            try:
                fs = self._store()
                for view in fs.list_feature_views():
                    if view.name not in BATCH_VIEWS:
                        continue
                    if view.ttl:
                        ttl.add_metric([view.name], view.ttl.total_seconds())
                    if view.most_recent_end_time is not None:
                        fresh.add_metric([view.name], view.most_recent_end_time.timestamp())
            except Exception as exc:  # noqa: BLE001
                log.warning("exporter_registry_failed", error=f"{type(exc).__name__}: {exc}")
        yield from (fresh, ttl)


def registry(instance_factory: Callable, store_factory: Callable | None = None) -> CollectorRegistry:
    reg = CollectorRegistry()
    reg.register(PipelineCollector(instance_factory, store_factory))
    return reg


def serve(port: int, addr: str = "127.0.0.1", stop: Callable[[], bool] = lambda: False) -> None:
    """Serve until ``stop()``; Dagster's instance from ``$DAGSTER_HOME`` (``feedstore dagster``'s)."""
    import dagster as dg

    from feedstore.feast.store import close, store

    instance = dg.DagsterInstance.get()
    opened: list = []
    lock = threading.Lock()

    def registry_store():
        """One store for the exporter's life, its registry re-read per scrape: a store per scrape
        kept its registry's Postgres pool open for good (Feast's refresh timer holds it)."""
        with lock:
            if not opened:
                opened.append(store())
            opened[0].refresh_registry()
            return opened[0]

    start_http_server(port, addr=addr, registry=registry(lambda: instance, registry_store))
    log.info("exporter_started", url=f"http://{addr}:{port}/metrics", dagster_home=str(instance.root_directory))
    try:
        while not stop():
            time.sleep(0.5)
    finally:
        for fs in opened:
            close(fs)
