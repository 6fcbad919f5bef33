"""Agreement: on a corpus with every kind of defect (devtools.synthetic.defects), the consumer's validator
(ingestion.validation) and the ``activity_events`` suite refuse the same events; and the
``training_dataset`` suite finds the same failures (rules, columns, unexpected counts) whether GX
runs it on a pandas frame or ``expectations.sql`` runs it as DuckDB SQL, on crafted training sets
that break each of its rules.

The suite validates landed rows, typed by EVENT_SCHEMA; the consumer validates wire JSON. So the
corpus reaches GX through ``landed_row``, which only *types* a line (JSON values into the row's
column types, missing fields as nulls) and judges no value. A line it cannot type (bad encoding,
not JSON, non-digit ids, ids beyond int64, zone-less timestamps...) can never be a landed row:
the consumer must refuse every such line. Every line it can type, GX must judge like the consumer:
first the row rules, then duplicates among the rows both accept (the consumer dedups valid
events only, so landed data holds each event once).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from devtools.synthetic import generator
from devtools.synthetic.defects import inject_defects
from expectations.runner import validate
from feedstore.contract.events import EVENT_SCHEMA
from feedstore.contract.rules import Reason
from ingestion.events import derive_event_id
from ingestion.validation import Validator
from feedstore.contract import rules
from tests.expectations.conftest import ITEM_IDS, NOW, USER_IDS, make_events, make_training
from tests.expectations.test_suites import cast, put

INT64_MAX = 2**63 - 1


def _as_int(value: Any) -> int:
    if type(value) is int and -INT64_MAX - 1 <= value <= INT64_MAX:
        return value
    raise TypeError(value)


def _as_id(value: Any) -> int:
    """Ids travel as digit strings (the seed's shape) or JSON integers."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    return _as_int(value)


def _as_str(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise TypeError(value)


def _as_time(value: Any) -> datetime:
    ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if ts.tzinfo is None:
        raise TypeError(value)
    return ts


def landed_row(line: bytes) -> dict | None:
    """The row a line would land as, or None when it has no typed form."""
    try:
        obj = json.loads(line.decode("utf-8"))
        if not isinstance(obj, dict):
            return None
        ctx = obj.get("context") or {}
        if not isinstance(ctx, dict):
            return None
        row = {
            "user_id": None if obj.get("user_id") is None else _as_id(obj["user_id"]),
            "item_id": None if obj.get("item_id") is None else _as_id(obj["item_id"]),
            "event_type": _as_str(obj.get("event_type")),
            "timestamp": None if obj.get("timestamp") is None else _as_time(_as_str(obj["timestamp"])),
            "dwell_time_ms": None if obj.get("dwell_time_ms") is None else _as_int(obj["dwell_time_ms"]),
            "device": _as_str(ctx.get("device")), "platform": _as_str(ctx.get("platform")),
            "session_id": _as_str(ctx.get("session_id")), "event_id": _as_str(obj.get("event_id")),
        }
        pa.array([row["dwell_time_ms"]], pa.int32())
    except (ValueError, TypeError, AttributeError, UnicodeDecodeError, OverflowError, pa.ArrowInvalid):
        return None
    keys = (row["user_id"], row["item_id"], row["event_type"], row["timestamp"])
    if row["event_id"] is None and None not in keys:
        row["event_id"] = str(derive_event_id(*keys, row["session_id"]))
    return row


def _known(ids: np.ndarray) -> callable:
    return lambda values: np.isin(values, ids)


@pytest.fixture(scope="module")
def corpus() -> tuple[list[bytes], list[Reason | None]]:
    valid = [x.encode() for x in generator.event_json(make_events(300)).to_pylist()]
    return inject_defects(valid, copies=2, duplicates=15, now=NOW, seed=5)


def _refused(summary, skip: str | None = None) -> set[int]:
    return {r for f in summary.failures if f.rule != skip for r in (f.rows or [])}


@pytest.mark.pure
def test_suite_and_consumer_refuse_the_same_events(corpus) -> None:
    lines, labels = corpus
    consumer = Validator(_known(USER_IDS), _known(ITEM_IDS)).validate(lines, now=NOW).reasons(len(lines))
    assert consumer == labels  # the corpus is what the injector says it is

    rows = [landed_row(x) for x in lines]
    untyped = [consumer[i] for i, r in enumerate(rows) if r is None]
    assert untyped and None not in untyped and Reason.DUPLICATE not in untyped

    typed = [i for i, r in enumerate(rows) if r is not None]
    table = pa.Table.from_pylist([rows[i] for i in typed], schema=EVENT_SCHEMA.remove_metadata()).cast(
        pa.schema([f.with_nullable(True) for f in EVENT_SCHEMA]))
    params = {"ingested_at": NOW, "user_ids": USER_IDS, "item_ids": ITEM_IDS}
    summary = validate("activity_events", table, with_rows=True, **params)
    gx_refused = {typed[j] for j in _refused(summary, skip="no_duplicate_events")}
    consumer_refused = {i for i in typed if consumer[i] not in (None, Reason.DUPLICATE)}
    assert gx_refused == consumer_refused
    kinds = {consumer[i] for i in consumer_refused}
    assert len(kinds) >= 8, kinds  # the typed part still covers most kinds of defect

    kept = [j for j in range(len(typed)) if typed[j] not in gx_refused]
    landed = validate("activity_events", table.take(kept), with_rows=True, **params)
    assert landed.failed_rules == {"no_duplicate_events"}
    gx_duplicate_ids = {table.column("event_id")[kept[j]].as_py() for j in _refused(landed)}
    consumer_duplicate_ids = {rows[i]["event_id"] for i in typed if consumer[i] is Reason.DUPLICATE}
    assert gx_duplicate_ids == consumer_duplicate_ids and consumer_duplicate_ids


# -- training_dataset: GX on pandas and DuckDB SQL agree -----------------------------------------
Training = Callable[[pa.Table], pa.Table]


def _rows(t: pa.Table, column: str, rows: list[int], value: Any) -> pa.Table:
    for r in rows:
        t = put(t, column, r, value)
    return t


def _vector(t: pa.Table, column: str, row: int, values: list | None) -> pa.Table:
    return put(t, column, row, values)


def _set_labels(t: pa.Table, sample_type: str) -> pa.Table:
    t = t.set_column(t.schema.get_field_index("label"), "label",
                     pa.array(np.full(t.num_rows, 1 if sample_type == rules.POSITIVE_SAMPLE_TYPE else 0)))
    return t.set_column(t.schema.get_field_index("sample_type"), "sample_type", pa.array([sample_type] * t.num_rows))


def _dist(t: pa.Table, row: int, change: Callable[[list[float]], list[float | None]]) -> pa.Table:
    return put(t, "category_dist_30d", row, change(t.column("category_dist_30d")[row].as_py()))


def _active_row(t: pa.Table) -> int:
    """A row whose user was active in 30 days (its distribution must sum to 1)."""
    return next(i for i, v in enumerate(t.column("interactions_30d").to_pylist()) if v and v > 0)


DAY = NOW.replace(hour=0, minute=0, second=0, microsecond=0)
TRAINING_SETS: dict[str, Training] = {
    "clean": lambda t: t,
    "duplicate keys (no rule: both pass)": lambda t: t.take([0, 0, *range(1, t.num_rows)]),
    "label 2": lambda t: _rows(t, "label", [0, 5], 2),
    "label contradicts sample type": lambda t: _rows(t, "label", [1, 4, 7], 1),
    "no positives": lambda t: _set_labels(t, "random_negative"),
    "only positives": lambda t: _set_labels(t, rules.POSITIVE_SAMPLE_TYPE),
    "null keys": lambda t: put(put(put(put(t, "item_id", 3, None), "user_id", 4, None), "label", 5, None),
                               "sample_type", 6, None),
    "null label and sample type in one row": lambda t: put(put(t, "label", 3, None), "sample_type", 3, None),
    "null timestamp": lambda t: put(t, "event_timestamp", 3, None),
    "rows outside the partition": lambda t: put(put(put(t, "event_timestamp", 3, DAY + timedelta(days=1)),
                                                    "event_timestamp", 4, DAY - timedelta(microseconds=1)),
                                                "event_timestamp", 5, DAY + timedelta(days=2)),
    "feature column missing": lambda t: t.drop_columns(["item_embedding", "views_1d"]),
    "bad sample type": lambda t: _rows(t, "sample_type", [3, 8], "easy_negative"),
    "feature out of bounds": lambda t: put(put(t, "engagement_rate_7d", 3, 3.0), "freshness_score", 4, 0.0),
    "NaN and null features": lambda t: put(put(t, "engagement_rate_7d", 3, float("nan")), "like_rate_7d", 4, None),
    "non-positive ids": lambda t: put(put(t, "user_id", 3, 0), "item_id", 4, -5),
    "label as text": lambda t: cast(t, "label", pa.string()),
    "user id as int16": lambda t: cast(t, "user_id", pa.int16()),
    "short embedding": lambda t: _vector(t, "user_embedding", 3, [0.1] * (rules.EMBEDDING_DIM - 1)),
    "NaN and inf in embeddings": lambda t: _vector(_vector(t, "item_embedding", 3, [float("nan")] * 32),
                                                   "user_embedding", 4, [float("inf")] + [0.0] * 31),
    "null element in embedding": lambda t: _vector(t, "item_embedding", 5, [None] + [0.0] * 31),
    "missing embedding (a legitimate null)": lambda t: _vector(t, "item_embedding", 3, None),
    "distribution not summing to 1": lambda t: _dist(t, _active_row(t), lambda d: [v / 2 for v in d]),
    "negative share in distribution": lambda t: _dist(t, _active_row(t), lambda d: [d[0] + d[1], -d[1], *d[2:]]),
    "distribution of the wrong length": lambda t: _dist(t, _active_row(t), lambda d: d[:-1] + [0.0, d[-1]]),
    "null distribution of an active user": lambda t: _dist(t, _active_row(t), lambda d: None),
    "unknown preferred category": lambda t: _vector(t, "preferred_categories", 3, ["not-a-category", None]),
    "unknown vocabulary values": lambda t: put(put(t, "top_category_30d", 3, "nope"), "media_type", 4, "hologram"),
    "7d above 30d": lambda t: put(t, "interactions_7d", 3, t.column("interactions_30d")[3].as_py() + 1),
    "empty": lambda t: t.slice(0, 0),
}
PASSING = {"clean", "duplicate keys (no rule: both pass)", "missing embedding (a legitimate null)",
           "NaN and null features"}


def findings(summary) -> set[tuple[str, str | None, int | None]]:
    return {(f.rule, f.column, f.unexpected_count) for f in summary.failures}


def _both(data: Any, **params: Any):
    params = {"ds": NOW.date(), **params}
    return (validate("training_dataset", data, engine="gx", **params),
            validate("training_dataset", data, engine="duckdb", **params))


@pytest.mark.pure
@pytest.mark.parametrize("name", sorted(TRAINING_SETS))
def test_training_suite_agrees_on_duckdb(name: str, tmp_path: Path) -> None:
    """Frames: GX on pandas; DuckDB over the same table written as Parquet (what the check reads)."""
    table = TRAINING_SETS[name](make_training(90))
    path = tmp_path / "part-00000.parquet"
    pq.write_table(table, path)
    gx, duck = _both(table)
    on_parquet = validate("training_dataset", str(tmp_path), engine="duckdb", ds=NOW.date())
    assert findings(gx) == findings(duck) == findings(on_parquet)
    assert gx.success == duck.success and gx.row_count == duck.row_count == table.num_rows
    assert gx.evaluated == duck.evaluated
    assert gx.success == (name in PASSING), findings(gx)


@pytest.mark.pure
def test_window_pair_with_a_null_integer() -> None:
    """Where the paths differ, on purpose: GX's pandas pair rule raises on a nullable integer column
    ("boolean value of NA is ambiguous"), so it fails without a count; DuckDB applies GX's own
    rule (``ignore_row_if="both_values_are_missing"``, as GX's SQL engines do): a row with one side
    missing is unexpected, a row with both missing (an item without features) is ignored."""
    table = put(put(put(make_training(90), "views_1d", 3, None), "views_7d", 3, None), "views_1d", 4, None)
    gx, duck = _both(table)
    pairs = {"views_1d<=views_7d", "views_7d<=views_30d", "unique_viewers_7d<=views_7d"}
    assert {f.column for f in gx.failures} == {f.column for f in duck.failures} == pairs
    assert all(f.unexpected_count is None and "ambiguous" in f.error for f in gx.failures)
    assert {f.column: f.unexpected_count for f in duck.failures} == dict.fromkeys(pairs, 1)


@pytest.mark.pure
def test_training_suite_agrees_on_observed_values() -> None:
    """Aggregates have no unexpected count: the mean they judge must be the same."""
    gx, duck = _both(TRAINING_SETS["only positives"](make_training(90)), max_positive_fraction=0.5)
    observed = {f.rule: f.observed for f in gx.failures}
    assert observed.keys() == {f.rule for f in duck.failures}
    assert {f.rule: f.observed for f in duck.failures} == pytest.approx(observed)


@pytest.mark.pure
def test_duckdb_compiles_every_training_rule() -> None:
    """Every expectation the suite can build has a DuckDB form (an unknown one would raise)."""
    from expectations import sql, suites

    duck = validate("training_dataset", make_training(90), engine="duckdb", ds=NOW.date())
    types = {e.expectation_type for e in suites.build_expectations("training_dataset", suites.SuiteSpec(
        engine="duckdb", columns=frozenset(make_training(3).column_names), params=duck_params()))}
    assert types <= sql.COMPILERS.keys()


def duck_params() -> dict:
    from expectations.runner import _check_params

    return _check_params("training_dataset", {"ds": NOW.date()})


@pytest.mark.pure
def test_duckdb_engine_refuses_what_it_cannot_do() -> None:
    from expectations.runner import ValidationError

    with pytest.raises(ValidationError, match="duckdb engine"):
        validate("activity_events", make_events(5), engine="duckdb")
    with pytest.raises(ValidationError, match="row positions"):
        validate("training_dataset", make_training(9), engine="duckdb", with_rows=True, ds=NOW.date())
    with pytest.raises(ValidationError, match="unknown engine"):
        validate("training_dataset", make_training(9), engine="spark", ds=NOW.date())
    with pytest.raises(ValidationError, match="no such file"):
        validate("training_dataset", "/no/such/dir", engine="duckdb", ds=NOW.date())


@pytest.mark.pure
def test_engine_unasked(monkeypatch) -> None:
    """The setting decides for the suites DuckDB covers, unless only GX can do what is asked."""
    from expectations.runner import choose_engine
    from feedstore.settings import reset_settings_cache

    assert choose_engine("training_dataset", None, with_rows=False) == "duckdb"
    assert choose_engine("training_dataset", None, with_rows=False, docs=True) == "gx"
    assert choose_engine("training_dataset", None, with_rows=False, postgres=True) == "gx"
    assert choose_engine("training_dataset", None, with_rows=True) == "gx"
    assert choose_engine("items", None, with_rows=False) == "gx"
    assert choose_engine("training_dataset", "duckdb", with_rows=False, docs=True) == "duckdb"
    monkeypatch.setenv("FEED_PIPELINE_CHECKS_ENGINE", "gx")
    reset_settings_cache()
    try:
        assert choose_engine("training_dataset", None, with_rows=False) == "gx"
        assert validate("training_dataset", make_training(90), ds=NOW.date()).engine == "gx"
    finally:
        monkeypatch.delenv("FEED_PIPELINE_CHECKS_ENGINE")
        reset_settings_cache()
    assert validate("training_dataset", make_training(90), ds=NOW.date()).engine == "duckdb"


@pytest.mark.pure
def test_column_names_are_quoted(tmp_path: Path) -> None:
    """A hostile column name is data: it is quoted, never run."""
    table = make_training(90)
    evil = 'x" FROM batch); DROP TABLE batch; --'
    table = table.append_column(evil, pa.array([[1.0]] * table.num_rows, pa.list_(pa.float32())))
    gx, duck = _both(table)
    assert findings(gx) == findings(duck) and duck.success


def test_training_suite_agrees_on_s3(settings) -> None:
    """The check's own target: an ``s3://`` prefix of the lake (two objects and the manifest)."""
    from feedstore.s3 import arrow_fs, bucket_path, s3_client

    table = TRAINING_SETS["rows outside the partition"](make_training(90))
    fs = arrow_fs(settings)
    prefix = "training/agreement/dt=2025-11-15/"
    pq.write_table(table.slice(0, 40), bucket_path(prefix + "part-00000.parquet", settings), filesystem=fs)
    pq.write_table(table.slice(40), bucket_path(prefix + "part-00001.parquet", settings), filesystem=fs)
    s3_client(settings).put_object(Bucket=settings.s3.bucket, Key=prefix + "_manifest.json", Body=b"{}")
    gx, duck = _both(f"s3://{settings.s3.bucket}/{prefix}")
    assert findings(gx) == findings(duck) == {("timestamp_in_partition", "event_timestamp", 3)}
    assert duck.row_count == table.num_rows
