"""The offline stores, laid out as Feast lays out ``infra/offline_stores/<kind>/``: ``store`` (the
S3 DuckDB store, its config and the DuckDB S3 session), ``asof`` (point-in-time retrieval as one
ASOF-join query), ``spark`` (Feast's Spark store configured from settings), ``engine`` (the one
``feature_store.yaml`` names: whichever of the two the engine setting selects), ``digest``."""
