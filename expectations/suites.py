"""The suites as code: one builder per dataset, every bound taken from the contract
(``feedstore.contract.rules`` for events and tables, ``feedstore.contract.features`` for features).

A builder returns fresh Expectation objects on each call because GX binds an Expectation to
the one suite it is added to. Every expectation carries ``meta.rule`` (a stable name that
tests, the CLI and Dagster report on) and ``meta.column`` (the column of the *source* data,
which for list columns differs from the derived column GX actually sees).

Three engines: ``pandas`` validates a frame prepared by ``expectations.prepare`` (derived columns
for lists, catalog membership and the time window); ``postgres`` validates a query over a
table, with membership and the window as SQL anti-joins (``UnexpectedRowsExpectation``) so a
10M-item catalog never becomes a value set; ``duckdb`` builds the pandas suite (same derived
columns) for ``expectations.sql`` to compile into one DuckDB query over Parquet.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import great_expectations.expectations as gxe
from psycopg import sql

from feedstore.contract import features as contract
from feedstore.contract import rules
from feedstore.contract.events import EVENT_SCHEMA

Engine = Literal["pandas", "postgres", "duckdb"]
UUID_REGEX = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
INT_TYPES = ["int64", "Int64Dtype", "int32", "Int32Dtype"]
STR_TYPES = ["StringDtype", "str"]
EMBEDDING_COLUMNS = ("content_embedding", "user_embedding", "item_embedding")
# What str.isprintable() refuses that can occur in practice (controls, line/paragraph separators,
# exotic spaces, invisible format characters), as literal characters so Python re, RE2 (pandas
# Arrow strings) and Postgres read the same class; NUL is left out (Postgres text cannot hold it).
NON_PRINTABLE = "".join(chr(c) for c in (*range(0x01, 0x20), *range(0x7F, 0xA0))) + (
    "\u00a0\u00ad\u1680\u2000-\u200f\u2028-\u202f\u205f-\u2064\u3000\ufeff")
LIST_VOCABULARIES: dict[str, tuple[str, ...]] = {
    f.name: f.vocabulary.values for f in contract.all_features()
    if f.kind is contract.Kind.STRING_LIST and f.vocabulary is not None}


def length_column(column: str) -> str:
    return f"{column}__length"


def nonfinite_column(column: str) -> str:
    return f"{column}__nonfinite"


def sum_error_column(column: str) -> str:
    return f"{column}__sum_error"


def negative_column(column: str) -> str:
    return f"{column}__negative"


def unknown_column(column: str) -> str:
    return f"{column}__unknown"


UNKNOWN_USER = "user_id__unknown"
UNKNOWN_ITEM = "item_id__unknown"
OUTSIDE_WINDOW = "timestamp__outside_window"
MALFORMED_EVENT_ID = "event_id__malformed"
NONPRINTABLE_SESSION = "session_id__nonprintable"
SESSION_LENGTH = "session_id__length"
LABEL_MISMATCH = "label__sample_type_mismatch"


def label_of(sample_type: str) -> int:
    """The label a sample type implies: 1 for positives, 0 for every kind of negative."""
    return 1 if sample_type == rules.POSITIVE_SAMPLE_TYPE else 0


@dataclass
class SuiteSpec:
    """What a builder needs to know about the target: its engine, columns and parameters."""

    engine: Engine
    columns: frozenset[str]
    list_columns: frozenset[str] = frozenset()
    params: dict[str, Any] = field(default_factory=dict)
    out: list[gxe.Expectation] = field(default_factory=list)

    @property
    def pandas(self) -> bool:
        return self.engine == "pandas"

    @property
    def derived(self) -> bool:
        """The engine sees lists and pair rules as the derived columns of ``expectations.prepare``
        (pandas: computed in Arrow; duckdb: the same columns as SQL expressions)."""
        return self.engine in ("pandas", "duckdb")

    def frame_column(self, column: str) -> str:
        """Lists reach GX as derived columns (pandas cannot carry 10M embeddings cheaply)."""
        return length_column(column) if column in self.list_columns and self.derived else column

    def add(self, rule: str, source: str | None, cls: type[gxe.Expectation], **kwargs: Any) -> None:
        meta = {"rule": rule, "column": source}
        self.out.append(cls(meta=meta, **kwargs))

    def has(self, column: str) -> bool:
        return column in self.columns

    # -- building blocks shared by the suites ------------------------------------------------
    def present(self, columns: Iterable[str]) -> None:
        for c in columns:
            self.add("column_present", c, gxe.ExpectColumnToExist, column=self.frame_column(c))

    def not_null(self, columns: Iterable[str]) -> None:
        for c in columns:
            if self.has(c):
                self.add("not_null", c, gxe.ExpectColumnValuesToNotBeNull, column=self.frame_column(c))

    def of_type(self, columns: Iterable[str], types: list[str]) -> None:
        """Postgres enforces column types itself (and GX cannot type a query asset)."""
        if self.engine == "postgres":
            return
        for c in columns:
            if self.has(c):
                self.add("type", c, gxe.ExpectColumnValuesToBeInTypeList, column=c, type_list=types)

    def between(self, rule: str, columns: Iterable[str], lo: Any = None, hi: Any = None,
                strict_min: bool = False) -> None:
        for c in columns:
            if self.has(c):
                self.add(rule, c, gxe.ExpectColumnValuesToBeBetween, column=c, min_value=lo, max_value=hi,
                         strict_min=strict_min)

    def in_set(self, rule: str, column: str, values: Iterable[Any]) -> None:
        if self.has(column):
            self.add(rule, column, gxe.ExpectColumnValuesToBeInSet, column=column, value_set=list(values))

    def ordered(self, smaller: str, larger: str) -> None:
        """``smaller <= larger`` row by row, e.g. a 7-day count never exceeds the 30-day one."""
        if self.has(smaller) and self.has(larger):
            self.add("window_order", f"{smaller}<={larger}", gxe.ExpectColumnPairValuesAToBeGreaterThanB,
                     column_A=larger, column_B=smaller, or_equal=True)

    def ids(self, column: str, unique: bool) -> None:
        self.not_null([column])
        self.of_type([column], INT_TYPES)
        self.between("id_positive", [column], rules.MIN_ID, rules.BIGINT_MAX)
        if unique and self.has(column):
            self.add("id_unique", column, gxe.ExpectColumnValuesToBeUnique, column=column)

    def not_in_future(self, column: str) -> None:
        as_of: datetime = self.params["as_of"]
        self.not_null([column])
        self.between("not_in_future", [column], hi=as_of)

    def vector(self, column: str, dim: int | None, vocabulary: tuple[str, ...] | None = None,
               required: bool = True) -> None:
        """List columns: shape and content via the derived columns ``expectations.prepare`` adds."""
        if not (self.has(column) and self.derived):
            return
        if required:
            self.not_null([column])
        if dim is not None:
            self.between("vector_dimension", [length_column(column)], dim, dim)
            self._retag(column)
        if vocabulary is not None:
            self.between("list_in_vocabulary", [unknown_column(column)], 0, 0)
            self._retag(column)
        elif dim is not None:
            self.between("vector_finite", [nonfinite_column(column)], 0, 0)
            self._retag(column)

    def distribution(self, column: str) -> None:
        if not (self.has(column) and self.derived):
            return
        tol = rules.DISTRIBUTION_SUM_TOLERANCE
        self.between("distribution_sums_to_1", [sum_error_column(column)], -tol, tol)
        self._retag(column)
        self.between("distribution_non_negative", [negative_column(column)], 0, 0)
        self._retag(column)

    def _retag(self, column: str) -> None:
        self.out[-1].meta["column"] = column

    def rows_where(self, rule: str, column: str, query: sql.Composable) -> None:
        """A SQL-only rule: the query returns the offending rows of ``{batch}``."""
        self.add(rule, column, gxe.UnexpectedRowsExpectation, unexpected_rows_query=query.as_string(None))


# -- the suites ---------------------------------------------------------------------------------
EVENT_COLUMNS = tuple(EVENT_SCHEMA.names)


def activity_events(s: SuiteSpec) -> None:
    s.present(EVENT_COLUMNS)
    s.not_null(["event_id", "user_id", "item_id", "event_type", "timestamp"])
    s.of_type(["event_id", "event_type", "device", "platform", "session_id"], STR_TYPES)
    s.of_type(["user_id", "item_id"], INT_TYPES)
    s.of_type(["dwell_time_ms"], ["int32", "Int32Dtype"])
    if s.pandas:  # GX matches regexes on Python objects; Arrow's RE2 did it in prepare
        s.add("event_id_format", "event_id", gxe.ExpectColumnValuesToBeNull, column=MALFORMED_EVENT_ID)
    else:
        s.add("event_id_format", "event_id", gxe.ExpectColumnValuesToMatchRegex, column="event_id", regex=UUID_REGEX)
    s.add("no_duplicate_events", "event_id", gxe.ExpectColumnValuesToBeUnique, column="event_id")
    s.between("id_positive", ["user_id", "item_id"], rules.MIN_ID, rules.BIGINT_MAX)
    s.in_set("event_type_allowed", "event_type", rules.EVENT_TYPES)
    s.between("dwell_bounds", ["dwell_time_ms"], 0, rules.MAX_DWELL_MS)
    s.in_set("device_allowed", "device", rules.DEVICES)
    s.in_set("platform_allowed", "platform", rules.PLATFORMS)
    if s.has("session_id"):
        if s.pandas:  # GX measures lengths via astype(str): numpy's fixed width, maxlen x rows of memory
            s.between("session_id_length", [SESSION_LENGTH], 0, rules.MAX_SESSION_ID_LENGTH)
            s._retag("session_id")
        else:
            s.add("session_id_length", "session_id", gxe.ExpectColumnValueLengthsToBeBetween, column="session_id",
                  min_value=0, max_value=rules.MAX_SESSION_ID_LENGTH)
        if s.pandas:
            s.add("session_id_printable", "session_id", gxe.ExpectColumnValuesToBeNull, column=NONPRINTABLE_SESSION)
        else:  # GX's SQL regex path mangles control characters; Postgres reads them fine
            s.rows_where("session_id_printable", "session_id", sql.SQL(
                "SELECT * FROM {{batch}} WHERE session_id ~ {regex}").format(regex=sql.Literal(f"[{NON_PRINTABLE}]")))
    if s.pandas:
        s.add("user_exists", "user_id", gxe.ExpectColumnValuesToBeNull, column=UNKNOWN_USER)
        s.add("item_in_catalog", "item_id", gxe.ExpectColumnValuesToBeNull, column=UNKNOWN_ITEM)
        s.add("timestamp_window", "timestamp", gxe.ExpectColumnValuesToBeNull, column=OUTSIDE_WINDOW)
        return
    anti_join = "SELECT b.* FROM {{batch}} b LEFT JOIN {table} r ON r.{key} = b.{key} WHERE r.{key} IS NULL"
    for rule, table, key in (("user_exists", "users", "user_id"), ("item_in_catalog", "items", "item_id")):
        s.rows_where(rule, key, sql.SQL(anti_join).format(table=sql.Identifier(table), key=sql.Identifier(key)))
    s.rows_where("timestamp_window", "timestamp", sql.SQL(
        'SELECT * FROM {{batch}} WHERE "timestamp" < ingested_at - make_interval(secs => {age}) '
        'OR "timestamp" > ingested_at + make_interval(secs => {skew})'
    ).format(age=sql.Literal(rules.MAX_EVENT_AGE_SECONDS), skew=sql.Literal(rules.MAX_FUTURE_SKEW_SECONDS)))


def items(s: SuiteSpec) -> None:
    s.present(["item_id", "creator_id", "category", "media_type", "created_at"])
    s.ids("item_id", unique=True)
    s.ids("creator_id", unique=False)
    s.not_null(["category", "media_type"])
    s.of_type(["category", "media_type"], STR_TYPES)
    s.in_set("category_in_vocabulary", "category", rules.CATEGORIES)
    s.in_set("media_type_allowed", "media_type", rules.MEDIA_TYPES)
    s.not_in_future("created_at")
    s.vector("content_embedding", rules.EMBEDDING_DIM)
    s.vector("item_embedding", rules.EMBEDDING_DIM)


def users(s: SuiteSpec) -> None:
    s.present(["user_id", "created_at"])
    s.ids("user_id", unique=True)
    s.not_in_future("created_at")
    s.in_set("age_range_in_vocabulary", "age_range", rules.AGE_RANGES)
    s.in_set("country_in_vocabulary", "country", rules.COUNTRIES)
    s.in_set("language_in_vocabulary", "language", rules.LANGUAGES)
    if s.pandas:
        s.vector("preferred_categories", None, vocabulary=rules.CATEGORIES)
    elif s.has("preferred_categories"):
        vocab = sql.SQL(", ").join(sql.Literal(c) for c in rules.CATEGORIES)
        s.rows_where("list_in_vocabulary", "preferred_categories", sql.SQL(
            "SELECT * FROM {{batch}} WHERE NOT (preferred_categories <@ ARRAY[{vocab}]::text[])"
        ).format(vocab=vocab))
    s.vector("user_embedding", rules.EMBEDDING_DIM)


def _features(s: SuiteSpec, key: str, default_views: tuple[str, ...]) -> None:
    views = s.params.get("views") or default_views
    s.present([key, contract.EVENT_TIMESTAMP, *(c for v in views for c in contract.VIEWS[v].columns)])
    s.ids(key, unique=False)
    s.not_null([contract.EVENT_TIMESTAMP])
    if s.has(key) and s.has(contract.EVENT_TIMESTAMP) and s.params.get("unique_keys", True):
        s.add("entity_unique_per_timestamp", key, gxe.ExpectCompoundColumnsToBeUnique,
              column_list=[key, contract.EVENT_TIMESTAMP])


def _feature_values(s: SuiteSpec, joined: bool = False) -> None:
    """The rules of every contract feature present, whichever view (or join of views) it came in.
    In a feature table a row has every vector; in a point-in-time join (``joined``) a missing
    feature is a legitimate null."""
    for f in contract.all_features():
        _feature_rules(s, f, required=not joined)


def _feature_rules(s: SuiteSpec, f: contract.Feature, required: bool) -> None:
    if f.bound is not None:
        s.between(f.bound.rule, [f.name], f.bound.lo, f.bound.hi, strict_min=f.bound.strict_min)
    for larger in f.at_most:
        s.ordered(f.name, larger)
    if f.distribution:
        s.distribution(f.name)
        if s.has(f.name) and s.derived:
            s.between("vector_dimension", [length_column(f.name)], f.dim, f.dim)
            s._retag(f.name)
    elif f.kind is contract.Kind.STRING_LIST and f.vocabulary is not None:
        s.vector(f.name, None, vocabulary=f.vocabulary.values, required=required)
    elif f.dim is not None:
        s.vector(f.name, f.dim, required=required)
    elif f.vocabulary is not None:
        s.in_set(f.vocabulary.rule, f.name, f.vocabulary.values)


def user_features(s: SuiteSpec) -> None:
    _features(s, contract.USER.join_key, (contract.USER_ACTIVITY.name,))
    _feature_values(s)


def item_features(s: SuiteSpec) -> None:
    _features(s, contract.ITEM.join_key, (contract.ITEM_ENGAGEMENT.name,))
    _feature_values(s)


def training_dataset(s: SuiteSpec) -> None:
    start: datetime = s.params["partition_start"]
    end: datetime = s.params["partition_end"]
    views = s.params.get("views") or contract.TRAINING_VIEWS
    keys = ["user_id", "item_id", contract.EVENT_TIMESTAMP, "label", "sample_type"]
    s.present([*keys, *(c for v in views for c in contract.VIEWS[v].columns)])
    s.not_null(keys)
    s.of_type(["user_id", "item_id", "label"], INT_TYPES)
    s.in_set("label_binary", "label", [0, 1])
    s.in_set("sample_type_allowed", "sample_type", rules.SAMPLE_TYPES)
    if s.has("label") and s.has("sample_type"):
        if s.derived:  # GX checks a pair set with a Python call per row (40 s on 200K rows); Arrow did it in prepare
            s.add("label_matches_sample_type", "label", gxe.ExpectColumnValuesToBeNull, column=LABEL_MISMATCH)
        else:
            pairs = [(t, label_of(t)) for t in rules.SAMPLE_TYPES]
            s.add("label_matches_sample_type", "label", gxe.ExpectColumnPairValuesToBeInSet,
                  column_A="sample_type", column_B="label", value_pairs_set=pairs)
        s.add("label_balance", "label", gxe.ExpectColumnMeanToBeBetween, column="label",
              min_value=s.params.get("min_positive_fraction", rules.MIN_POSITIVE_FRACTION),
              max_value=s.params.get("max_positive_fraction", rules.MAX_POSITIVE_FRACTION))
    s.between("id_positive", ["user_id", "item_id"], rules.MIN_ID, rules.BIGINT_MAX)
    if s.has("event_timestamp"):
        s.add("timestamp_in_partition", "event_timestamp", gxe.ExpectColumnValuesToBeBetween,
              column="event_timestamp", min_value=start, max_value=end, strict_max=True)
    _feature_values(s, joined=True)


SUITES: dict[str, Callable[[SuiteSpec], None]] = {
    "activity_events": activity_events,
    "items": items,
    "users": users,
    "user_features": user_features,
    "item_features": item_features,
    "training_dataset": training_dataset,
}


def build_expectations(suite: str, spec: SuiteSpec) -> list[gxe.Expectation]:
    if suite not in SUITES:
        raise KeyError(f"unknown suite {suite!r}; known: {', '.join(SUITES)}")
    spec.out = []
    SUITES[suite](spec)
    return spec.out
