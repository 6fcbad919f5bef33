"""The S3 DuckDB offline store, laid out as Feast lays out ``infra/offline_stores/<kind>/``:
``store`` (the store, its config and the DuckDB S3 session), ``asof`` (point-in-time retrieval
as one ASOF-join query)."""
