"""Runs a suite on a frame, a Parquet prefix (S3 or local) or a Postgres table, and returns a
compact summary: success, unexpected count per expectation, a few examples.

GX runs in an ephemeral, in-memory context with analytics and progress bars off; only when
Data Docs are requested does it get a site on the local filesystem (optionally copied to S3).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from psycopg import sql

from expectations import prepare, suites
from feedstore.contract.features import VIEWS
from feedstore.ids import ITEMS, USERS, IdIndex, existing

TABLES = {"users": USERS, "items": ITEMS}
from feedstore.logs import get_logger
from feedstore.settings import get_settings

log = get_logger(__name__)
logging.getLogger("great_expectations").setLevel(logging.WARNING)
EXAMPLES = 5
PARAMS: dict[str, set[str]] = {
    "activity_events": {"ingested_at", "user_ids", "item_ids"},
    "items": {"as_of"},
    "users": {"as_of"},
    "user_features": {"views", "unique_keys"},
    "item_features": {"views", "unique_keys"},
    "training_dataset": {"ds", "partition_start", "partition_end", "min_positive_fraction",
                         "max_positive_fraction", "views"},
}
COMMON_PARAMS = {"min_rows"}


class ValidationError(ValueError):
    """The request itself is wrong (unknown suite, bad parameter, unreadable target)."""


@dataclass
class Failure:
    rule: str
    column: str | None
    expectation: str
    unexpected_count: int | None = None
    examples: list[Any] = field(default_factory=list)
    observed: Any = None
    error: str | None = None
    rows: list[int] | None = None  # positions of every offending row, when asked for (frames only)


@dataclass
class ValidationSummary:
    suite: str
    target: str
    success: bool
    row_count: int | None
    evaluated: int
    failures: list[Failure]
    seconds: float
    docs: str | None = None
    engine: str = "gx"
    """What ran the suite: ``gx`` (Great Expectations) or ``duckdb`` (``expectations.sql``)."""

    @property
    def failed_rules(self) -> set[str]:
        return {f.rule for f in self.failures}

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))

    def to_metadata(self) -> dict[str, Any]:
        """Flat, JSON-safe values for a Dagster ``AssetCheckResult(metadata=...)``."""
        meta: dict[str, Any] = {
            "suite": self.suite, "target": self.target, "row_count": self.row_count,
            "expectations_evaluated": self.evaluated, "expectations_failed": len(self.failures),
            "seconds": round(self.seconds, 3), "engine": self.engine,
        }
        for f in self.failures:
            key = f"{f.rule}:{f.column}" if f.column else f.rule
            meta[key] = _jsonable({"unexpected_count": f.unexpected_count, "examples": f.examples,
                                   "observed": f.observed, "error": f.error})
        if self.docs:
            meta["data_docs"] = self.docs
        return meta


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, (datetime, date, pd.Timestamp)):
        return value.isoformat()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


# -- parameters ---------------------------------------------------------------------------------
def _check_params(suite: str, params: dict[str, Any]) -> dict[str, Any]:
    if suite not in suites.SUITES:
        raise ValidationError(f"unknown suite {suite!r}; known: {', '.join(suites.SUITES)}")
    unknown = set(params) - PARAMS[suite] - COMMON_PARAMS
    if unknown:
        allowed = ", ".join(sorted(PARAMS[suite] | COMMON_PARAMS))
        raise ValidationError(f"unknown parameter(s) for {suite}: {', '.join(sorted(unknown))} (allowed: {allowed})")
    try:
        return _coerce(suite, dict(params))
    except (ValueError, TypeError) as exc:
        raise ValidationError(f"bad parameter for {suite}: {exc}") from exc


def _coerce(suite: str, out: dict[str, Any]) -> dict[str, Any]:
    """Parameters may come from the command line as strings: make them typed values."""
    out.setdefault("as_of", datetime.now(timezone.utc))
    out["as_of"] = prepare._utc(out["as_of"])
    if isinstance(out.get("ingested_at"), str) and "," in out["ingested_at"]:
        out["ingested_at"] = tuple(out["ingested_at"].split(",", 1))
    if out.get("ingested_at") is not None:
        prepare.Window.from_param(out["ingested_at"])
    for key in ("min_positive_fraction", "max_positive_fraction"):
        if key in out:
            out[key] = float(out[key])
    if "min_rows" in out:
        out["min_rows"] = int(out["min_rows"])
    if isinstance(out.get("unique_keys"), str):
        out["unique_keys"] = out["unique_keys"].lower() not in ("0", "false", "no")
    if suite == "training_dataset":
        if "ds" in out:
            day = pd.Timestamp(out["ds"]).date()
            out["partition_start"] = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
            out["partition_end"] = out["partition_start"] + timedelta(days=1)
        if "partition_start" not in out or "partition_end" not in out:
            raise ValueError("training_dataset needs ds=YYYY-MM-DD (or partition_start and partition_end)")
        out["partition_start"], out["partition_end"] = (prepare._utc(out[k]) for k in ("partition_start", "partition_end"))
    for key in ("views",):
        if isinstance(out.get(key), str):
            out[key] = tuple(v.strip() for v in out[key].split(","))
        for view in out.get(key) or ():
            if view not in VIEWS:
                raise ValueError(f"unknown feature view {view!r}")
    return out


# -- reference data (users and items that exist) ------------------------------------------------
class Reference:
    """Which ids exist: from ids the caller passes, else from Postgres, batch by batch."""

    def __init__(self, user_ids: Any = None, item_ids: Any = None) -> None:
        self._given = {"users": _id_index(user_ids), "items": _id_index(item_ids)}
        self._conn = None

    def missing(self, kind: str, ids: pa.Array) -> np.ndarray:
        distinct = np.sort(pc.unique(pa.array(ids).drop_null().cast(pa.int64())).to_numpy())  # sorted: cache-friendly
        given = self._given[kind]
        if given is not None:
            return distinct[~given.contains(distinct)]
        from feedstore.db import connect

        if self._conn is None:
            self._conn = connect()
        return np.setdiff1d(distinct, existing(self._conn, TABLES[kind], distinct), assume_unique=True)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def _id_index(ids: Any) -> IdIndex | None:
    if ids is None:
        return None
    if isinstance(ids, (pa.Array, pa.ChunkedArray)):
        ids = ids.to_numpy()
    return IdIndex(np.asarray(ids, dtype=np.int64))


# -- targets ------------------------------------------------------------------------------------
@dataclass
class PostgresTarget:
    table: str

    def __str__(self) -> str:
        return f"postgres:{self.table}"


def parse_target(target: str) -> PostgresTarget | pads.Dataset:
    """``postgres:TABLE``, ``s3://bucket/prefix`` or a local Parquet file or directory."""
    if target.startswith("postgres:"):
        table = target.removeprefix("postgres:").strip()
        if not table or not table.replace("_", "").isalnum():
            raise ValidationError(f"bad Postgres table name in {target!r}")
        return PostgresTarget(table)
    try:
        if target.startswith("s3://"):
            from feedstore.s3 import arrow_fs

            return pads.dataset(target.removeprefix("s3://"), filesystem=arrow_fs(), format="parquet",
                                partitioning="hive")
        if not Path(target).exists():
            raise ValidationError(f"no such file or directory: {target}")
        return pads.dataset(target, format="parquet", partitioning="hive")
    except (OSError, pa.ArrowInvalid) as exc:
        raise ValidationError(f"cannot read Parquet at {target}: {str(exc).splitlines()[0]}") from exc


def _arrow_batches(data: Any) -> tuple[pa.Schema, Iterable[pa.RecordBatch]]:
    if isinstance(data, pd.DataFrame):
        data = pa.Table.from_pandas(data, preserve_index=False)
    if isinstance(data, pa.RecordBatch):
        data = pa.Table.from_batches([data])
    if isinstance(data, pa.Table):
        return data.schema, prepare.batches(data)
    if isinstance(data, pads.Dataset):
        return data.schema, data.to_batches(batch_size=prepare.BATCH_ROWS)
    if isinstance(data, pa.RecordBatchReader):
        return data.schema, data
    raise ValidationError(f"cannot validate a {type(data).__name__}")


# -- GX -----------------------------------------------------------------------------------------
def _context(docs_dir: Path | None):
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    sites = {}
    if docs_dir is not None:
        sites = {"local_site": {
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        }}
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        progress_bars=ProgressBarsConfig(globally=False),
        analytics_enabled=False,
        data_docs_sites=sites,
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _run(suite_name: str, expectations: list, batch_definition, context, batch_parameters: dict | None,
         docs_dir: Path | None, with_rows: bool = False):
    import great_expectations as gx

    # Expectations go in before the suite is stored: adding them one by one to a stored suite
    # re-serialises the whole suite each time (quadratic; seconds for the training suite).
    suite = context.suites.add(gx.ExpectationSuite(name=suite_name, expectations=expectations))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{suite_name}-{uuid.uuid4().hex[:8]}", data=batch_definition, suite=suite))
    # GX checks a "StringDtype" column against pd.StringDtype(), whose storage follows this option;
    # the frames carry Arrow-backed strings (see prepare.to_pandas).
    with pd.option_context("mode.string_storage", "pyarrow"):
        # BASIC, not SUMMARY: SUMMARY also asks each column expectation for its unexpected index list
        # and query, and GX's pandas engine filters the whole frame (every column) for each of
        # them: a third of the training suite's time on 300K rows; the examples come with BASIC too.
        result_format = {"result_format": "COMPLETE" if with_rows else "BASIC",
                         "partial_unexpected_count": EXAMPLES}
        result = definition.run(batch_parameters=batch_parameters, result_format=result_format)
    if docs_dir is not None:
        from expectations.datadocs import localise

        context.build_data_docs()
        localise(docs_dir)
    return result


def _summarise(suite: str, target: str, result, seconds: float, docs: str | None) -> ValidationSummary:
    failures: list[Failure] = []
    row_count = None
    for r in result.results:
        config = r.expectation_config
        meta = config.meta or {}
        if meta.get("rule") == "row_count":
            row_count = r.result.get("observed_value")
        if r.success:
            continue
        res = r.result or {}
        error = r.exception_info.get("exception_message") if r.exception_info.get("raised_exception") else None
        if error is None:
            errors = [v.get("exception_message") for v in r.exception_info.values() if isinstance(v, dict)
                      and v.get("raised_exception")]
            error = errors[0] if errors else None
        count = res.get("unexpected_count")
        if config.type == "unexpected_rows_expectation":
            count = res.get("observed_value")
        examples = res.get("partial_unexpected_list") or res.get("details", {}).get("unexpected_rows", [])
        failures.append(Failure(
            rule=meta.get("rule", config.type), column=meta.get("column"), expectation=config.type,
            unexpected_count=count, examples=[_clip(v) for v in _jsonable(list(examples)[:EXAMPLES])],
            observed=_jsonable(res.get("observed_value")), error=error and str(error).splitlines()[0],
            rows=[int(i) for i in res["unexpected_index_list"]] if "unexpected_index_list" in res else None))
    return ValidationSummary(suite=suite, target=target, success=bool(result.success), row_count=row_count,
                             evaluated=len(result.results), failures=failures, seconds=seconds, docs=docs)


def _clip(value: Any, limit: int = 200) -> Any:
    """A 10 MB session id is an example too; keep summaries small."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]}… ({len(value):,} chars)"
    return value


def _row_count_expectation(params: dict[str, Any]):
    import great_expectations.expectations as gxe

    return gxe.ExpectTableRowCountToBeBetween(min_value=int(params.get("min_rows", 0)),
                                              meta={"rule": "row_count", "column": None})


ENGINES = ("gx", "duckdb")


def choose_engine(suite: str, engine: str | None, with_rows: bool, docs: bool = False, postgres: bool = False) -> str:
    """``gx`` (GX on a pandas frame or Postgres) or ``duckdb`` (``expectations.sql``). Unasked,
    a suite the SQL compiler covers runs where ``FEED_PIPELINE_CHECKS_ENGINE`` says, unless
    row positions or Data Docs are wanted or the target is a Postgres table (only GX does those)."""
    from expectations import sql as duck

    if engine is not None and engine not in ENGINES:
        raise ValidationError(f"unknown engine {engine!r}: {' or '.join(ENGINES)}")
    if engine == "duckdb" and (suite not in duck.SUITES or with_rows):
        why = "row positions" if with_rows else suite
        raise ValidationError(f"the duckdb engine cannot give {why} (it runs {', '.join(sorted(duck.SUITES))})")
    if engine is None:
        plain = suite in duck.SUITES and not (with_rows or docs or postgres)
        engine = get_settings().pipeline.checks_engine if plain else "gx"
    return engine


def validate(suite: str, data: Any, *, docs_dir: str | Path | None = None, docs_s3_prefix: str | None = None,
             with_rows: bool = False, engine: str | None = None, **params: Any) -> ValidationSummary:
    """Validate ``data`` against ``suite``; never raises on bad data, only on a bad request.

    ``with_rows`` lists every offending row position per failure (a frame's row order), e.g. to
    quarantine them; it costs memory in proportion to the failures. ``engine``: see
    ``choose_engine``; DuckDB writes no Data Docs (they are GX's renderings of its own results)."""
    started = time.perf_counter()
    params = _check_params(suite, params)
    postgres = isinstance(data, str) and data.startswith("postgres:")
    if choose_engine(suite, engine, with_rows, docs=bool(docs_dir or docs_s3_prefix), postgres=postgres) == "duckdb":
        return _duckdb(suite, data, params, started, docs_requested=bool(docs_dir or docs_s3_prefix))
    target = data if isinstance(data, str) else f"<{type(data).__name__}>"
    source = parse_target(data) if isinstance(data, str) else data
    docs_path = Path(docs_dir) if docs_dir is not None else (Path(_tempdir()) if docs_s3_prefix else None)
    context = _context(docs_path)
    if isinstance(source, PostgresTarget):
        expectations, batch_definition, batch_parameters = _postgres(suite, source, params, context)
    else:
        expectations, batch_definition, batch_parameters = _frame(suite, source, params, context)
    expectations.insert(0, _row_count_expectation(params))
    result = _run(suite, expectations, batch_definition, context, batch_parameters, docs_path, with_rows)
    docs = None
    if docs_path is not None:
        docs = str(docs_path / "index.html")
        if docs_s3_prefix:
            docs = upload_docs(docs_path, docs_s3_prefix)
    summary = _summarise(suite, str(target), result, time.perf_counter() - started, docs)
    log.info("validated", suite=suite, target=summary.target, success=summary.success, rows=summary.row_count,
             failed=sorted(summary.failed_rules), seconds=round(summary.seconds, 3))
    return summary


def _duckdb(suite: str, data: Any, params: dict[str, Any], started: float, docs_requested: bool) -> ValidationSummary:
    """The suite as one DuckDB query over the data (``expectations.sql``), summarised like GX's run."""
    from expectations import sql as duck

    if isinstance(data, str) and data.startswith("postgres:"):
        raise ValidationError("the duckdb engine reads Parquet or frames, not Postgres")
    try:
        found, _ = duck.run(suite, data, params)
    except (OSError, *duckdb_read_errors()) as exc:
        raise ValidationError(f"cannot read {data if isinstance(data, str) else type(data).__name__}: "
                              f"{str(exc).strip().splitlines()[0]}") from exc
    summary = summarise_outcomes(suite, data if isinstance(data, str) else f"<{type(data).__name__}>", found,
                                 time.perf_counter() - started)
    log.info("validated", suite=suite, target=summary.target, engine="duckdb", success=summary.success,
             rows=summary.row_count, failed=sorted(summary.failed_rules), seconds=round(summary.seconds, 3),
             data_docs="not on duckdb" if docs_requested else None)
    return summary


def duckdb_read_errors() -> tuple[type[Exception], ...]:
    """What DuckDB raises on unreachable or unreadable Parquet (a bad request, not a bug)."""
    import duckdb

    return duckdb.IOException, duckdb.InvalidInputException, duckdb.HTTPException


def summarise_outcomes(suite: str, target: str, found: list, seconds: float) -> ValidationSummary:
    """``_summarise`` for ``expectations.sql``'s outcomes: the same rules, counts and examples."""
    failures: list[Failure] = []
    row_count = None
    for o in found:
        meta = o.expectation.meta or {}
        if meta.get("rule") == "row_count":
            row_count = o.observed
        if o.success:
            continue
        failures.append(Failure(
            rule=meta.get("rule", o.expectation.expectation_type), column=meta.get("column"),
            expectation=o.expectation.expectation_type, unexpected_count=o.unexpected_count,
            examples=[_clip(v) for v in _jsonable(o.examples[:EXAMPLES])], observed=_jsonable(o.observed),
            error=o.error))
    return ValidationSummary(suite=suite, target=target, success=not failures, row_count=row_count,
                             evaluated=len(found), failures=failures, seconds=seconds, engine="duckdb")


def _tempdir() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="feedstore-docs-")


def _frame(suite: str, source: Any, params: dict[str, Any], context):
    schema, stream = _arrow_batches(source)
    reference = Reference(params.get("user_ids"), params.get("item_ids")) if suite == "activity_events" else None
    window = prepare.Window.from_param(params.get("ingested_at"))
    prepared: list[pa.RecordBatch] = []
    try:
        for batch in stream:
            prepared.append(_prepare(suite, batch, reference, window))
        if not prepared:
            prepared.append(_prepare(suite, pa.RecordBatch.from_pylist([], schema=schema), reference, window))
    finally:
        if reference is not None:
            reference.close()
    frame = prepare.to_pandas(prepared)
    columns = frozenset(schema.names) | frozenset(frame.columns)
    lists = frozenset(f.name for f in schema if prepare.is_list(f.type))
    spec = suites.SuiteSpec(engine="pandas", columns=columns, list_columns=lists, params=params)
    expectations = suites.build_expectations(suite, spec)
    asset = context.data_sources.add_pandas("frame").add_dataframe_asset("data")
    return expectations, asset.add_batch_definition_whole_dataframe("whole"), {"dataframe": frame}


def _prepare(suite: str, batch: pa.RecordBatch, reference: Reference | None, window: prepare.Window):
    missing: dict[str, np.ndarray | None] = {"users": None, "items": None}
    if reference is not None:
        for kind, column in (("users", "user_id"), ("items", "item_id")):
            if column in batch.schema.names and pa.types.is_integer(batch.schema.field(column).type):
                missing[kind] = reference.missing(kind, batch.column(column))
    return prepare.prepare_batch(suite, batch, unknown_users=missing["users"], unknown_items=missing["items"],
                                 window=window)


def _postgres(suite: str, target: PostgresTarget, params: dict[str, Any], context):
    from feedstore.db import connect

    table = sql.Identifier(target.table)
    if suite == "activity_events":
        query = sql.SQL(
            "SELECT event_id::text AS event_id, user_id, item_id, event_type, \"timestamp\", dwell_time_ms, "
            "context->>'device' AS device, context->>'platform' AS platform, context->>'session_id' AS session_id, "
            "created_at AS ingested_at FROM {table}").format(table=table)
    else:
        query = sql.SQL("SELECT * FROM {table}").format(table=table)
    settings = get_settings()
    try:
        with connect(settings) as conn:
            cursor = conn.execute(sql.SQL("SELECT * FROM ({q}) AS q LIMIT 0").format(q=query))
            columns = frozenset(d.name for d in cursor.description)
            text = query.as_string(conn)
    except Exception as exc:  # noqa: BLE001 - a missing table is a bad request, said in one line
        raise ValidationError(f"cannot read {target}: {str(exc).strip().splitlines()[0]}") from exc
    spec = suites.SuiteSpec(engine="postgres", columns=columns, params=params)
    expectations = suites.build_expectations(suite, spec)
    dsn = settings.postgres.dsn.replace("postgresql://", "postgresql+psycopg2://", 1)
    asset = context.data_sources.add_postgres("postgres", connection_string=dsn).add_query_asset("data", query=text)
    return expectations, asset.add_batch_definition_whole_table("whole"), None


def upload_docs(docs_dir: Path, prefix: str) -> str:
    """Copies a Data Docs site to ``s3://$FEED_S3_BUCKET/<prefix>/``; returns the index's URI."""
    from feedstore.s3 import s3_client, s3_uri

    client = s3_client()
    bucket = get_settings().s3.bucket
    prefix = prefix.strip("/")
    for path in sorted(p for p in docs_dir.rglob("*") if p.is_file()):
        key = f"{prefix}/{path.relative_to(docs_dir).as_posix()}"
        content_type = "text/html" if path.suffix == ".html" else "application/octet-stream"
        client.upload_file(str(path), bucket, key, ExtraArgs={"ContentType": content_type})
    return s3_uri(f"{prefix}/index.html")
