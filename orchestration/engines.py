"""The daily feature SQL on Spark as well as DuckDB, from one definition.

The queries in ``orchestration.assets.features`` are written once, in DuckDB's dialect with
``$name`` parameters, against named relations (``activity``, ``catalog``, ``profiles``, ``items``).
``SparkRelations`` gives a Spark session the same face: relations registered by name, and each
query compiled to Spark SQL by sqlglot (the SQL compiler Ibis is built on, installed with it)
with its parameters bound as Spark's named parameter markers, never spliced into the text.
``lake.fetch`` takes either, so a table function such as ``user_activity_table(con, day)`` runs
on whichever it is given.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import pyarrow as pa


@lru_cache(maxsize=64)
def spark_sql(query: str) -> str:
    """``query`` (DuckDB dialect) as Spark SQL: ``$name`` becomes ``:name``, list functions, casts and
    1-based list indexes are translated."""
    import sqlglot

    (compiled,) = sqlglot.transpile(query, read="duckdb", write="spark")
    return compiled


class SparkRelations:
    """A Spark session seen as the feature SQL sees a DuckDB connection."""

    def __init__(self, spark) -> None:
        self.spark = spark

    def register(self, name: str, table: pa.Table) -> None:
        """Temp view ``name`` over an Arrow table (tests and small inputs)."""
        self.spark.createDataFrame(table).createOrReplaceTempView(name)

    def scan(self, name: str, uris: list[str], schema: pa.Schema) -> None:
        """Temp view ``name`` over Parquet objects (``s3a://`` URIs), empty with ``schema`` when none."""
        if uris:
            self.spark.read.option("mergeSchema", "true").parquet(*uris).createOrReplaceTempView(name)
        else:
            self.register(name, schema.empty_table())

    def fetch(self, query: str, params: dict[str, Any] | None = None) -> pa.Table:
        return self.spark.sql(spark_sql(query), args=params or {}).toArrow()
