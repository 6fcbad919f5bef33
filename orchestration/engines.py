"""The daily feature SQL on Spark as well as DuckDB, from one definition.

The queries in ``orchestration.assets`` and ``orchestration.sources`` are written once, in
DuckDB's dialect with ``$name`` parameters, against named relations (``activity``, ``catalog``,
``profiles``, ``items``, ``content_embeddings`` ...). ``SparkRelations`` gives a Spark session the
same face: relations registered by name (Arrow tables, Parquet objects, or a query), and each query
compiled to Spark SQL by sqlglot (the SQL compiler Ibis is built on, installed with it) with its
parameters bound as Spark's named parameter markers, never spliced into the text. ``lake.scan``,
``lake.view`` and ``lake.fetch`` take either, so a table function such as
``user_activity_table(con, day)`` runs on whichever it is given, and ``connect`` picks the one
``FEED_PIPELINE_ENGINE`` names (DuckDB by default).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import pyarrow as pa

from feedstore.s3 import duckdb_connection
from feedstore.settings import Settings, get_settings

FILENAME = "filename"
"""The column ``scan(..., filename=True)`` adds: the object each row was read from (a tie-breaker:
a later object wins), ``s3://…`` on DuckDB, ``s3a://…`` on Spark, the same order on each."""


@lru_cache(maxsize=64)
def spark_sql(query: str) -> str:
    """``query`` (DuckDB dialect) as Spark SQL: ``$name`` becomes ``:name``, list functions, casts,
    ``QUALIFY`` and 1-based list indexes are translated."""
    import sqlglot

    logging.getLogger("sqlglot").setLevel(logging.WARNING)  # a line per translated list index otherwise
    (compiled,) = sqlglot.transpile(query, read="duckdb", write="spark")
    return compiled


class SparkRelations:
    """A Spark session seen as the feature SQL sees a DuckDB connection. As a context manager it
    drops the temp views it made on exit; the session itself is the process's and stays up
    (starting one costs ~45 s)."""

    def __init__(self, spark) -> None:
        self.spark = spark
        self._views: set[str] = set()

    def __enter__(self) -> SparkRelations:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for name in sorted(self._views):
            self.spark.catalog.dropTempView(name)
        self._views.clear()

    def _name(self, frame, name: str) -> None:
        frame.createOrReplaceTempView(name)
        self._views.add(name)

    def register(self, name: str, table: pa.Table) -> None:
        """Temp view ``name`` over an Arrow table (tests and small inputs)."""
        self._name(self.spark.createDataFrame(table), name)

    def scan(self, name: str, uris: list[str], schema: pa.Schema, filename: bool = False) -> None:
        """Temp view ``name`` over Parquet objects (``s3a://`` URIs), empty with ``schema`` when none;
        with ``filename``, a ``filename`` column naming each row's object."""
        if not uris:
            if filename:
                schema = schema.append(pa.field(FILENAME, pa.string()))
            self.register(name, schema.empty_table())
            return
        from pyspark.sql import functions as F

        frame = self.spark.read.option("mergeSchema", "true").parquet(*uris)
        if filename:
            frame = frame.withColumn(FILENAME, F.col("_metadata.file_path"))
        self._name(frame, name)

    def view(self, name: str, query: str, params: dict[str, Any] | None = None) -> None:
        """Temp view ``name`` over ``query`` (DuckDB dialect), its parameters bound now."""
        self._name(self.spark.sql(spark_sql(query), args=params or {}), name)

    def fetch(self, query: str, params: dict[str, Any] | None = None) -> pa.Table:
        return self.spark.sql(spark_sql(query), args=params or {}).toArrow()


@contextmanager
def connect(settings: Settings | None = None, engine: str | None = None, memory_limit: str | None = None) -> Iterator:
    """What the pipeline's SQL runs on: a DuckDB connection (default) or the process's Spark
    session as ``SparkRelations`` (``FEED_PIPELINE_ENGINE=spark``), able to read ``settings``' lake."""
    s = settings or get_settings()
    engine = engine or s.pipeline.engine
    if engine == "spark":
        from feedstore import spark

        with SparkRelations(spark.session(s)) as relations:
            yield relations
    elif engine == "duckdb":
        with duckdb_connection(s, memory_limit=memory_limit) as con:
            yield con
    else:
        raise ValueError(f"unknown pipeline engine {engine!r}: duckdb or spark")
