"""How long the daily Great Expectations checks take: ``activity_events`` on a day of events
(1M rows), ``items`` on the whole catalog (10M items with 32-float embeddings) and
``training_dataset`` on a day's training set (1M rows, Parquet on the stack's S3) on both engines:
GX on a pandas frame and the suite as DuckDB SQL (``expectations.sql``), side by side.

Baseline, run side by side: catalog membership as the naive ``ExpectColumnValuesToBeInSet`` with
every user id in the set (what DESIGN.md warns against) instead of the precomputed column.

    .venv/bin/python bench/bench_expectations.py [--events 1000000] [--items 10000000] [--training 1000000]
        [--repeat 3] [--only events,items,training]

``--only`` runs some parts and keeps the other parts' last figures in the results file. The
training part needs the stack (its Parquet goes to a sandbox bucket, removed afterwards).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from expectations.runner import validate  # noqa: E402
from feedstore.contract import rules  # noqa: E402
from feedstore.contract.events import EVENT_SCHEMA  # noqa: E402

NOW = datetime(2025, 11, 15, 12, tzinfo=timezone.utc)
USERS = 100_000
BASELINE_ROWS = 100_000  # the naive baseline takes minutes on a full day
RESULTS = Path(__file__).parent / "results" / "expectations.json"


def events(n: int, items: int) -> pa.Table:
    rng = np.random.default_rng(1)
    ts = np.datetime64(NOW.replace(tzinfo=None), "us") - rng.integers(0, 3_500_000_000, n).astype("timedelta64[us]")
    return pa.table({
        "event_id": pa.array([f"{i:08x}-0000-4000-8000-{i:012x}" for i in range(n)]),
        "user_id": rng.integers(1, USERS + 1, n), "item_id": rng.integers(1, items + 1, n),
        "event_type": pa.array(rng.choice(rules.EVENT_TYPES, n)),
        "timestamp": pa.array(ts, pa.timestamp("us", tz="UTC")),
        "dwell_time_ms": rng.integers(0, 60_000, n).astype(np.int32),
        "device": pa.array(rng.choice(rules.DEVICES, n)), "platform": pa.array(rng.choice(rules.PLATFORMS, n)),
        "session_id": pa.array([f"s{i % 50_000}" for i in range(n)]),
    }, schema=EVENT_SCHEMA)


def catalog(n: int) -> pa.Table:
    rng = np.random.default_rng(2)
    flat = rng.standard_normal(n * rules.EMBEDDING_DIM, dtype=np.float32)
    embedding = pa.FixedSizeListArray.from_arrays(pa.array(flat), rules.EMBEDDING_DIM)
    created = np.datetime64(NOW.replace(tzinfo=None), "us") - rng.integers(0, 10**13, n).astype("timedelta64[us]")
    return pa.table({
        "item_id": np.arange(1, n + 1, dtype=np.int64), "creator_id": rng.integers(1, 1_000_000, n),
        "category": pa.array(rng.choice(rules.CATEGORIES, n)).dictionary_encode().cast(pa.string()),
        "media_type": pa.array(rng.choice(rules.MEDIA_TYPES, n)),
        "created_at": pa.array(created, pa.timestamp("us", tz="UTC")),
        "content_embedding": embedding.cast(pa.list_(pa.float32())),
    })


TRAINING_DAY = NOW.replace(hour=0)
TRAINING_DISTINCT = 3_000  # rows of the tests' clean set the big one is drawn from
IDLE_FRACTION = 0.3


def training_set(n: int) -> pa.Table:
    """A clean training set of ``n`` rows: the tests' (every rule holds) drawn with replacement,
    with fresh ids, times and embeddings per row, so the heavy columns are not repeats."""
    from tests.expectations.conftest import make_training

    rng = np.random.default_rng(3)
    table = make_training(TRAINING_DISTINCT, day=TRAINING_DAY).take(rng.integers(0, TRAINING_DISTINCT, n))
    stamps = np.datetime64(TRAINING_DAY.replace(tzinfo=None), "us") + rng.integers(0, 86_400 * 10**6, n).astype(
        "timedelta64[us]")
    fresh = {"user_id": pa.array(rng.integers(1, USERS + 1, n)), "item_id": pa.array(rng.integers(1, 10**7, n)),
             "event_timestamp": pa.array(stamps, pa.timestamp("us", tz="UTC"))}
    for column in ("user_embedding", "item_embedding"):
        flat = pa.array(rng.standard_normal(n * rules.EMBEDDING_DIM, dtype=np.float32))
        fresh[column] = pa.FixedSizeListArray.from_arrays(flat, rules.EMBEDDING_DIM).cast(pa.list_(pa.float32()))
    # Users with no recent activity have no real-time features: legitimate nulls of a joined set,
    # which make those integer columns nullable ones on pandas (as on a seed-scale day).
    idle = rng.random(n) < IDLE_FRACTION
    for column in ("rt_interactions_1h", "rt_dwell_ms_1h", "rt_last_item_id", "rt_last_event_type"):
        fresh[column] = pc.if_else(pa.array(idle), pa.nulls(n, table.schema.field(column).type), table.column(column))
    for name, values in fresh.items():
        i = table.schema.get_field_index(name)
        table = table.set_column(i, pa.field(name, values.type), values)
    return table


def bench_training(n: int, repeat: int, progress: Progress) -> dict[str, dict]:
    """Both engines on the same Parquet prefix (what the Dagster check reads), in a sandbox."""
    import pyarrow.parquet as pq

    from devtools.sandbox import sandbox
    from feedstore.s3 import arrow_fs, bucket_path

    table = training_set(n)
    out: dict[str, dict] = {}
    with sandbox("bench-checks") as s:
        prefix = f"training/bench/dt={TRAINING_DAY.date().isoformat()}/"
        pq.write_table(table, bucket_path(prefix + "part-00000.parquet", s), filesystem=arrow_fs(s),
                       compression="zstd", row_group_size=131_072)
        target = f"s3://{s.s3.bucket}/{prefix}"
        table = None
        found: dict[str, set] = {}
        for engine in ("gx", "duckdb"):
            def run_training(engine: str = engine) -> None:
                summary = validate("training_dataset", target, engine=engine, ds=TRAINING_DAY.date())
                assert summary.success and summary.row_count == n, summary.failures
                found[engine] = {(f.rule, f.column, f.unexpected_count) for f in summary.failures}

            out[f"training_dataset_{engine}"] = {"rows": n, "seconds": timed(run_training, repeat, progress,
                                                                             f"training_dataset on {engine}")}
        assert found["gx"] == found["duckdb"]
    return out


def naive_membership(table: pa.Table, user_ids: np.ndarray) -> float:
    """The baseline: GX's own value-set expectation over the whole user table."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    from expectations.runner import _context

    context = _context(None)
    suite = context.suites.add(gx.ExpectationSuite(name="naive", expectations=[
        gxe.ExpectColumnValuesToBeInSet(column="user_id", value_set=user_ids.tolist())]))
    frame = table.select(["user_id"]).to_pandas()
    batch = context.data_sources.add_pandas("p").add_dataframe_asset("a").add_batch_definition_whole_dataframe("b")
    started = time.perf_counter()
    assert batch.get_batch(batch_parameters={"dataframe": frame}).validate(suite).success
    return time.perf_counter() - started


def timed(fn, repeat: int, progress: Progress, label: str) -> list[float]:
    task = progress.add_task(label, total=repeat)
    out = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
        progress.advance(task)
    return out


PARTS = ("events", "items", "training")


def bench_events(args: argparse.Namespace, progress: Progress) -> dict[str, dict]:
    rows: dict[str, dict] = {}
    user_ids = np.arange(1, USERS + 1, dtype=np.int64)
    item_ids = np.arange(1, args.items + 1, dtype=np.int64)
    day = events(args.events, args.items)

    def run_events() -> None:
        s = validate("activity_events", day, ingested_at=(NOW - timedelta(days=1), NOW),
                     user_ids=user_ids, item_ids=item_ids)
        assert s.success, s.failures

    rows["activity_events"] = {"rows": args.events, "seconds": timed(run_events, args.repeat, progress,
                                                                      "activity_events")}
    sample = day.slice(0, min(args.events, BASELINE_ROWS))
    task = progress.add_task("baseline: user_id in a 100K-value set", total=1)
    rows["baseline_in_set_user_id_only"] = {"rows": sample.num_rows, "seconds": [naive_membership(sample, user_ids)]}
    progress.advance(task)
    started = time.perf_counter()
    s = validate("activity_events", sample, ingested_at=(NOW - timedelta(days=1), NOW), user_ids=user_ids,
                 item_ids=item_ids)
    rows["activity_events_same_rows_as_baseline"] = {"rows": sample.num_rows,
                                                      "seconds": [time.perf_counter() - started]}
    assert s.success
    return rows


def bench_items(args: argparse.Namespace, progress: Progress) -> dict[str, dict]:
    items = catalog(args.items)

    def run_items() -> None:
        s = validate("items", items, as_of=NOW)
        assert s.success, s.failures

    return {"items": {"rows": args.items, "seconds": timed(run_items, max(1, args.repeat - 1), progress, "items")}}


def previous() -> dict:
    """The last results file, whose figures a partial run (``--only``) keeps."""
    try:
        return json.loads(RESULTS.read_text())
    except (OSError, ValueError):
        return {}


def summary_lines(rows: dict[str, dict]) -> list[str]:
    out = []
    if "baseline_in_set_user_id_only" in rows and "activity_events_same_rows_as_baseline" in rows:
        ratio = rows["baseline_in_set_user_id_only"]["median"] / rows["activity_events_same_rows_as_baseline"]["median"]
        out.append(f"on the same {rows['baseline_in_set_user_id_only']['rows']:,} rows, one naive 100K-value set "
                   f"expectation alone takes {ratio:.1f}x the whole activity_events suite")
    if "training_dataset_gx" in rows and "training_dataset_duckdb" in rows:
        gx, duck = rows["training_dataset_gx"], rows["training_dataset_duckdb"]
        out.append(f"training_dataset on {gx['rows']:,} rows: GX on pandas {gx['median']:.2f}s, DuckDB SQL "
                   f"{duck['median']:.2f}s, {gx['median'] / duck['median']:.1f}x faster")
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=10_000_000)
    parser.add_argument("--training", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", default=",".join(PARTS), help="comma-separated parts: events, items, training")
    args = parser.parse_args()
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    if set(parts) - set(PARTS):
        parser.error(f"--only takes {', '.join(PARTS)}")
    console = Console()
    rows: dict[str, dict] = {}
    load_before = os.getloadavg()[0]
    with Progress(console=console) as progress:
        if "events" in parts:
            rows.update(bench_events(args, progress))
        if "items" in parts:
            rows.update(bench_items(args, progress))
        if "training" in parts:
            rows.update(bench_training(args.training, args.repeat, progress))
    table = Table("check", "rows", "median s", "runs", "rows/s")
    for name, r in rows.items():
        r["median"] = statistics.median(r["seconds"])
        table.add_row(name, f"{r['rows']:,}", f"{r['median']:.2f}", " ".join(f"{s:.2f}" for s in r["seconds"]),
                      f"{r['rows'] / r['median']:,.0f}")
    console.print(table)
    for line in summary_lines(rows):
        console.print(line)
    report = previous() if set(parts) != set(PARTS) else {}
    results = {**report.get("results", {}), **rows}
    report.update({"args": {**report.get("args", {}), **vars(args)}, "results": results, "cores": os.cpu_count(),
                   "load_1m": {"start": round(load_before, 1), "end": round(os.getloadavg()[0], 1)}})
    if "baseline_in_set_user_id_only" in rows:
        report["naive_over_suite"] = (rows["baseline_in_set_user_id_only"]["median"]
                                      / rows["activity_events_same_rows_as_baseline"]["median"])
    if "activity_events" in results and "items" in results:
        daily = results["activity_events"]["median"] + results["items"]["median"]
        report["daily_checks_seconds"] = daily
        console.print(f"daily checks (events day + full catalog): {daily:.1f}s")
    if "training_dataset_gx" in rows:
        ratio = rows["training_dataset_gx"]["median"] / rows["training_dataset_duckdb"]["median"]
        report["training_gx_over_duckdb"] = ratio
        # every training run's medians, so runs on a busy machine can be told from each other
        report.setdefault("training_runs", []).append({
            "when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "rows": args.training,
            "repeat": args.repeat, "gx_median": rows["training_dataset_gx"]["median"],
            "duckdb_median": rows["training_dataset_duckdb"]["median"], "gx_over_duckdb": ratio,
            "load_1m": report["load_1m"]})
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2))

if __name__ == "__main__":
    main()
