"""Great Expectations 1.x suites for every boundary of feedstore, and the runner that applies them.

    from expectations import validate
    summary = validate("activity_events", table_or_frame_or_target, ingested_at=(hour_start, hour_end))
    summary.success, summary.failures, summary.to_metadata()   # the last for Dagster asset checks

Suites: activity_events, items, users, user_features, item_features, training_dataset
(``expectations.suites``). Targets: a pandas/Arrow frame, ``s3://bucket/prefix``, a local Parquet
path, or ``postgres:TABLE`` (a partition is a table). Parameters per suite are listed in
``expectations.runner.PARAMS``. Same thing from a shell: ``feedstore validate SUITE TARGET -p k=v``.

Engines: GX on a pandas frame (or Postgres), or, for ``training_dataset``, the suite's own
expectations compiled to one DuckDB query over the Parquet (``expectations.sql``, ~10x faster at
1M rows, no frame in memory): ``validate(..., engine="gx"|"duckdb")``, ``--engine``, default
``FEED_PIPELINE_CHECKS_ENGINE`` (``duckdb``), which the Dagster training check uses.

Importing this package does not import GX (that takes seconds).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from expectations.runner import ValidationSummary


def validate(suite: str, data: Any, **params: Any) -> ValidationSummary:
    from expectations.runner import validate as run

    return run(suite, data, **params)
