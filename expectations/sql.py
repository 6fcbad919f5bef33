"""The training-set suite as one DuckDB query over its Parquet, instead of a pandas frame for GX.

GX 1.x has no DuckDB data source (and ``duckdb_engine`` is not a dependency), and its SQL path
runs a query per metric, with no way to look inside list columns. So the expectations are not
written twice: ``expectations.suites`` builds the suite for the ``duckdb`` engine (the same
objects, rules and bounds the pandas path gets) and this module compiles each of them into SQL:

* the derived columns ``expectations.prepare`` computes in Arrow (a list's length, non-finite,
  negative and out-of-vocabulary counts, a distribution's sum error, the label/sample-type
  mismatch) become SQL expressions of a ``batch`` view over the data;
* each row rule becomes a predicate, counted with ``count(*) FILTER (WHERE ...)`` and sampled
  with ``min(value, 5) FILTER (...)``; aggregate rules (row count, mean) become aggregates; all
  of them in one ``SELECT``, so the data is scanned once;
* column presence and types are judged on the schema, in Python.

Values reach DuckDB as ``$name`` parameters, identifiers are quoted, paths go through DuckDB's
relational API: no value is ever spliced into the SQL text. Null means what it means to pandas
(a float NaN is missing), so both paths count the same unexpected rows; the agreement test
(``tests/expectations/test_agreement.py``) holds them to it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from expectations import suites
from feedstore.contract import rules

SUITES = frozenset({"training_dataset"})
"""The suites whose every expectation this module compiles (the others need reference data)."""
EXAMPLES = 5
BATCH = "batch"
FLOATS = frozenset({"FLOAT", "DOUBLE", "REAL"})
INTEGERS = frozenset({"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
                      "UBIGINT"})
PANDAS_TYPES: dict[str, frozenset[str]] = {
    "BIGINT": frozenset({"int64", "Int64Dtype"}), "INTEGER": frozenset({"int32", "Int32Dtype"}),
    "VARCHAR": frozenset({"StringDtype", "str"}),
}
"""How a DuckDB column type reads in GX's pandas type names (``suites.INT_TYPES``/``STR_TYPES``)."""


def quote(name: str) -> str:
    """A SQL identifier, quoted (column names come from the data)."""
    return '"' + name.replace('"', '""') + '"'


@dataclass
class Query:
    """SQL text under construction and the parameters it binds: values only ever go in here."""

    params: dict[str, Any] = field(default_factory=dict)

    def param(self, value: Any) -> str:
        name = f"p{len(self.params)}"
        self.params[name] = value
        return f"${name}"


# -- the batch: source columns plus the derived ones ------------------------------------------
def element_type(column_type: str) -> str | None:
    """``FLOAT`` for ``FLOAT[]`` or ``FLOAT[32]``; None for a column that is not a list."""
    return column_type[:column_type.rindex("[")] if column_type.endswith("]") else None


def _list_columns(name: str, element: str, types: dict[str, str], q: Query) -> dict[str, str]:
    """``prepare._list_columns`` in SQL: counts default to 0 (a null list has a null length only)."""
    col = quote(name)
    out = {suites.length_column(name): f"len({col})::BIGINT"}
    vocabulary = suites.LIST_VOCABULARIES.get(name)
    if vocabulary is not None:
        vocab = q.param(list(vocabulary))
        out[suites.unknown_column(name)] = \
            f"coalesce(len(list_filter({col}, lambda x: x IS NULL OR NOT list_contains({vocab}, x))), 0)::BIGINT"
        return out
    if element not in FLOATS | INTEGERS:
        return out
    finite = "x IS NOT NULL AND isfinite(x::DOUBLE)"
    out[suites.nonfinite_column(name)] = f"coalesce(len(list_filter({col}, lambda x: NOT ({finite}))), 0)::BIGINT"
    out[suites.negative_column(name)] = f"coalesce(len(list_filter({col}, lambda x: {finite} AND x < 0)), 0)::BIGINT"
    sums = f"coalesce(list_sum(list_transform(list_filter({col}, lambda x: {finite}), lambda x: x::DOUBLE)), 0.0)"
    if "interactions_30d" in types:
        expected = f"coalesce({quote('interactions_30d')} > 0, false)"
    else:
        expected = f"{sums} > {q.param(rules.DISTRIBUTION_SUM_TOLERANCE)}"
    out[suites.sum_error_column(name)] = f"{sums} - ({expected})::DOUBLE"
    return out


def _label_mismatch(q: Query) -> str:
    """``prepare._label_mismatch`` in SQL: ``type=label`` where the pair is not allowed."""
    types, labels = quote("sample_type"), f"{quote('label')}::VARCHAR"
    allowed = q.param([f"{t}={suites.label_of(t)}" for t in rules.SAMPLE_TYPES])
    shown = f"coalesce({types}, 'null') || '=' || coalesce({labels}, 'null')"
    return (f"CASE WHEN {types} IS NULL AND {labels} IS NULL THEN NULL "
            f"WHEN coalesce(list_contains({allowed}, {types} || '=' || {labels}), false) THEN NULL "
            f"ELSE {shown} END")


def derived_columns(suite: str, types: dict[str, str], q: Query) -> dict[str, str]:
    """Derived column name -> SQL expression, for the columns ``prepare.prepare_batch`` would add."""
    out: dict[str, str] = {}
    for name, column_type in types.items():
        element = element_type(column_type)
        if element is not None:
            out.update(_list_columns(name, element, types, q))
    if suite == "training_dataset" and types.get("sample_type") == "VARCHAR" \
            and types.get("label") in INTEGERS:
        out[suites.LABEL_MISMATCH] = _label_mismatch(q)
    return out


# -- one compiled expectation ------------------------------------------------------------------
@dataclass
class Check:
    """An expectation as SQL: a row rule has ``bad`` (the offending rows) and ``value`` (what an
    example shows); an aggregate has ``observed`` and ``passes``; a schema rule has ``verdict``."""

    expectation: Any
    bad: str | None = None
    value: str | None = None
    observed: str | None = None
    passes: Callable[[Any], bool] | None = None
    verdict: tuple[bool, Any] | None = None
    error: str | None = None


def _present(col: str, types: dict[str, str], name: str) -> str:
    """Not missing as pandas sees it: a float NaN is missing too."""
    return f"({col} IS NOT NULL AND NOT isnan({col}))" if types.get(name) in FLOATS else f"{col} IS NOT NULL"


def _row(e, col: str, bad: str) -> Check:
    return Check(e, bad=bad, value=col)


def _not_null(e, types: dict[str, str], q: Query) -> Check:
    return Check(e, bad=f"NOT ({_present(quote(e.column), types, e.column)})")


def _be_null(e, types: dict[str, str], q: Query) -> Check:
    col = quote(e.column)
    return _row(e, col, _present(col, types, e.column))


def _in_set(e, types: dict[str, str], q: Query) -> Check:
    """Python's equality, as pandas uses it: text never equals a number, so a text column against
    a set of numbers (or numbers against text) has every present value unexpected."""
    col = quote(e.column)
    present = _present(col, types, e.column)
    text_values = all(isinstance(v, str) for v in e.value_set)
    if (types[e.column] == "VARCHAR") != text_values:
        return _row(e, col, present)
    return _row(e, col, f"{present} AND NOT list_contains({q.param(list(e.value_set))}, {col})")


def _between(e, types: dict[str, str], q: Query) -> Check:
    col = quote(e.column)
    outside = []
    if e.min_value is not None:
        outside.append(f"{col} {'<=' if e.strict_min else '<'} {q.param(e.min_value)}")
    if e.max_value is not None:
        outside.append(f"{col} {'>=' if e.strict_max else '>'} {q.param(e.max_value)}")
    return _row(e, col, f"{_present(col, types, e.column)} AND ({' OR '.join(outside) or 'false'})")


def _a_greater_than_b(e, types: dict[str, str], q: Query) -> Check:
    """GX ignores a row only when both values are missing (``ignore_row_if`` default)."""
    if e.ignore_row_if != "both_values_are_missing":
        raise NotImplementedError(f"ignore_row_if={e.ignore_row_if!r}")
    a, b = quote(e.column_A), quote(e.column_B)
    both_missing = f"NOT ({_present(a, types, e.column_A)}) AND NOT ({_present(b, types, e.column_B)})"
    holds = f"coalesce({a} {'>=' if e.or_equal else '>'} {b}, false)"
    return Check(e, bad=f"NOT ({both_missing}) AND NOT {holds}", value=f"[{a}, {b}]")


def _mean(e, types: dict[str, str], q: Query) -> Check:
    col = quote(e.column)
    if types[e.column] not in FLOATS | INTEGERS:
        return Check(e, verdict=(False, None), error=f"no mean of a {types[e.column]} column")
    return Check(e, observed=f"avg({col}) FILTER (WHERE {_present(col, types, e.column)})",
                 passes=lambda v: v is not None and _within(v, e.min_value, e.max_value))


def _row_count(e, types: dict[str, str], q: Query) -> Check:
    return Check(e, observed="count(*)", passes=lambda v: _within(v, e.min_value, e.max_value))


def _exists(e, types: dict[str, str], q: Query) -> Check:
    return Check(e, verdict=(e.column in types, None))


def _type_list(e, types: dict[str, str], q: Query) -> Check:
    found = types.get(e.column)
    return Check(e, verdict=(bool(PANDAS_TYPES.get(found, frozenset()) & set(e.type_list)), found))


def _within(value: Any, lo: Any, hi: Any) -> bool:
    return (lo is None or value >= lo) and (hi is None or value <= hi)


COMPILERS: dict[str, Callable[[Any, dict[str, str], Query], Check]] = {
    "expect_column_to_exist": _exists,
    "expect_column_values_to_be_in_type_list": _type_list,
    "expect_column_values_to_not_be_null": _not_null,
    "expect_column_values_to_be_null": _be_null,
    "expect_column_values_to_be_in_set": _in_set,
    "expect_column_values_to_be_between": _between,
    "expect_column_pair_values_a_to_be_greater_than_b": _a_greater_than_b,
    "expect_column_mean_to_be_between": _mean,
    "expect_table_row_count_to_be_between": _row_count,
}


def compile_expectation(e, types: dict[str, str], q: Query) -> Check:
    """One expectation as a ``Check``; refuses what it cannot mirror exactly. One on a column the
    batch lacks fails with an error, as GX's does (``column_present`` is the rule for that)."""
    compiler = COMPILERS.get(e.expectation_type)
    if compiler is None:
        raise NotImplementedError(f"no DuckDB form for {e.expectation_type}")
    if getattr(e, "mostly", 1) != 1:
        raise NotImplementedError(f"{e.expectation_type} with mostly={e.mostly}")
    if e.expectation_type != "expect_column_to_exist":
        missing = [c for c in _columns(e) if c not in types]
        if missing:
            return Check(e, verdict=(False, None), error=f'The column "{missing[0]}" does not exist.')
    return compiler(e, types, q)


def _columns(e) -> list[str]:
    return [c for c in (getattr(e, "column", None), getattr(e, "column_A", None), getattr(e, "column_B", None)) if c]


# -- the query and its result ------------------------------------------------------------------
def aggregate_sql(checks: list[Check]) -> tuple[str, list[tuple[int, str]]]:
    """The one SELECT over ``batch``; returns it and, per output column, (check index, what)."""
    parts: list[str] = []
    slots: list[tuple[int, str]] = []
    for i, c in enumerate(checks):
        if c.bad is not None:
            parts.append(f"count(*) FILTER (WHERE {c.bad})")
            slots.append((i, "count"))
            if c.value is not None:
                parts.append(f"min({c.value}, {EXAMPLES}) FILTER (WHERE {c.bad})")
                slots.append((i, "examples"))
        elif c.observed is not None:
            parts.append(c.observed)
            slots.append((i, "observed"))
    return f"SELECT {', '.join(parts) or 'NULL'} FROM {quote(BATCH)}", slots


@dataclass
class Outcome:
    """What one check found, in the shape ``runner._summarise`` reads from a GX result."""

    expectation: Any
    success: bool
    unexpected_count: int | None = None
    examples: list[Any] = field(default_factory=list)
    observed: Any = None
    error: str | None = None


def outcomes(checks: list[Check], row: tuple, slots: list[tuple[int, str]]) -> list[Outcome]:
    found: dict[int, dict[str, Any]] = {}
    for (i, what), value in zip(slots, row):
        found.setdefault(i, {})[what] = value
    out = []
    for i, c in enumerate(checks):
        got = found.get(i, {})
        if c.verdict is not None:
            out.append(Outcome(c.expectation, c.verdict[0], observed=c.verdict[1], error=c.error))
        elif c.bad is not None:
            count = int(got.get("count") or 0)
            examples = got.get("examples") or ([None] * min(count, EXAMPLES) if c.value is None else [])
            out.append(Outcome(c.expectation, count == 0, count, list(examples)))
        else:
            value = got.get("observed")
            out.append(Outcome(c.expectation, bool(c.passes(value)), observed=value))
    return out


def check_batch(con, suite: str, source: str, params: dict[str, Any]) -> list[Outcome]:
    """Runs ``suite`` over relation ``source`` of ``con`` (plus the row-count rule first)."""
    from expectations.runner import _row_count_expectation

    relation = con.view(source)
    types = dict(zip(relation.columns, map(str, relation.types)))
    q = Query()
    derived = derived_columns(suite, types, q)
    select = ", ".join(["*", *(f"{expr} AS {quote(name)}" for name, expr in derived.items())])
    batch_types = {**types, **{name: _derived_type(name) for name in derived}}
    lists = frozenset(n for n, t in types.items() if element_type(t) is not None)
    spec = suites.SuiteSpec(engine="duckdb", columns=frozenset(batch_types), list_columns=lists, params=params)
    expectations = [_row_count_expectation(params), *suites.build_expectations(suite, spec)]
    checks = [compile_expectation(e, batch_types, q) for e in expectations]
    text, slots = aggregate_sql(checks)
    query = f"WITH {quote(BATCH)} AS (SELECT {select} FROM {quote(source)}) {text}"
    row = con.execute(query, q.params).fetchone()
    return outcomes(checks, row, slots)


def _derived_type(name: str) -> str:
    """Derived columns are BIGINT counts, a DOUBLE sum error or the VARCHAR mismatch."""
    if name == suites.LABEL_MISMATCH:
        return "VARCHAR"
    return "DOUBLE" if name.endswith("__sum_error") else "BIGINT"


# -- sources -----------------------------------------------------------------------------------
def register(con, data: Any, name: str = "source") -> str:
    """Makes ``data`` relation ``name`` of ``con``: an ``s3://`` prefix or local Parquet path (read
    by DuckDB, through its relational API), or an in-memory Arrow table or pandas frame."""
    if isinstance(data, str):
        files = parquet_files(data)
        if not files:
            from expectations.runner import ValidationError

            raise ValidationError(f"no Parquet under {data}")
        con.read_parquet(files, union_by_name=True).create_view(name, replace=True)
    elif isinstance(data, (pa.Table, pa.RecordBatch, pa.RecordBatchReader)) or hasattr(data, "to_parquet"):
        con.from_arrow(data if not hasattr(data, "to_parquet") else pa.Table.from_pandas(data, preserve_index=False)) \
            .create_view(name, replace=True)
    else:
        from expectations.runner import ValidationError

        raise ValidationError(f"cannot validate a {type(data).__name__} on DuckDB")
    return name


def parquet_files(target: str) -> list[str]:
    """The Parquet objects under a target, as pyarrow's dataset would read them (``_``/``.``-named
    files such as ``_manifest.json`` left out)."""
    from pathlib import Path

    def wanted(path: str) -> bool:
        return path.endswith(".parquet") and not path.rsplit("/", 1)[-1].startswith(("_", "."))

    if target.startswith("s3://"):
        from feedstore.s3 import s3_client

        bucket, _, prefix = target.removeprefix("s3://").partition("/")
        keys: list[str] = []
        for page in s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys.extend(o["Key"] for o in page.get("Contents", []))
        return [f"s3://{bucket}/{k}" for k in sorted(keys) if wanted(k)]
    path = Path(target)
    if not path.exists():
        from expectations.runner import ValidationError

        raise ValidationError(f"no such file or directory: {target}")
    if path.is_file():
        return [str(path)]
    return [str(p) for p in sorted(path.rglob("*.parquet")) if wanted(p.as_posix())]


def connection(settings=None):
    """The pipeline's DuckDB connection (S3 secret, memory limit, UTC)."""
    from feedstore.s3 import duckdb_connection

    return duckdb_connection(settings)


def run(suite: str, data: Any, params: dict[str, Any]) -> tuple[list[Outcome], float]:
    """Validates ``data`` on a fresh DuckDB connection; returns the outcomes and the seconds taken."""
    if suite not in SUITES:
        from expectations.runner import ValidationError

        raise ValidationError(f"the duckdb engine runs {', '.join(sorted(SUITES))}, not {suite}")
    started = time.perf_counter()
    con = connection()
    try:
        found = check_batch(con, suite, register(con, data), params)
    finally:
        con.close()
    return found, time.perf_counter() - started

