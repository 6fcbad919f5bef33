"""Feast's DuckDB offline store, reading Parquet on our S3 endpoint.

Feast's ``duckdb`` store reads through ibis' default DuckDB backend and ignores
``s3_endpoint_override``; DuckDB cannot download httpfs here either. Every entry point of this
subclass first loads httpfs from the wheel and creates the S3 secret on that backend (once per
backend), so the SDK and the ``feast`` CLI (``materialize``, ``materialize-incremental``) both
work without any per-process setup.
Selected in ``feature_store.yaml`` with ``type: feedstore.feast.offline_store.S3DuckDBOfflineStore``.
"""

from __future__ import annotations

import functools
import threading

from feast.infra.offline_stores.duckdb import DuckDBOfflineStore, DuckDBOfflineStoreConfig
from pydantic import StrictStr

_lock = threading.Lock()
_configured: set[int] = set()


def ensure_duckdb_s3() -> None:
    """Idempotent: httpfs + S3 secret on ``ibis.get_backend()`` (the connection Feast uses)."""
    import ibis

    from feedstore.s3 import configure_duckdb

    backend = ibis.get_backend()
    with _lock:
        if id(backend) in _configured:
            return
        configure_duckdb(backend.con)
        _configured.add(id(backend))


class S3DuckDBOfflineStoreConfig(DuckDBOfflineStoreConfig):
    type: StrictStr = "feedstore.feast.offline_store.S3DuckDBOfflineStore"


def _configured_first(method):
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        ensure_duckdb_s3()
        return method(*args, **kwargs)

    return staticmethod(wrapper)


class S3DuckDBOfflineStore(DuckDBOfflineStore):
    pull_latest_from_table_or_query = _configured_first(DuckDBOfflineStore.pull_latest_from_table_or_query)
    pull_all_from_table_or_query = _configured_first(DuckDBOfflineStore.pull_all_from_table_or_query)
    get_historical_features = _configured_first(DuckDBOfflineStore.get_historical_features)
    offline_write_batch = _configured_first(DuckDBOfflineStore.offline_write_batch)
    write_logged_features = _configured_first(DuckDBOfflineStore.write_logged_features)
