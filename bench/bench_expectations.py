"""How long the daily Great Expectations checks take: ``activity_events`` on a day of events
(1M rows) and ``items`` on the whole catalog (10M items with 32-float embeddings).

Baseline, run side by side: catalog membership as the naive ``ExpectColumnValuesToBeInSet`` with
every user id in the set (what DESIGN.md warns against) instead of the precomputed column.

    .venv/bin/python bench/bench_expectations.py [--events 1000000] [--items 10000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from expectations.runner import validate
from feedstore.contract import rules
from feedstore.contract.events import EVENT_SCHEMA

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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    console = Console()
    user_ids = np.arange(1, USERS + 1, dtype=np.int64)
    item_ids = np.arange(1, args.items + 1, dtype=np.int64)
    rows: dict[str, dict] = {}
    with Progress(console=console) as progress:
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
        day = None  # frees the 1M-row table before the catalog is built

        items = catalog(args.items)

        def run_items() -> None:
            s = validate("items", items, as_of=NOW)
            assert s.success, s.failures

        rows["items"] = {"rows": args.items, "seconds": timed(run_items, max(1, args.repeat - 1), progress, "items")}
    table = Table("check", "rows", "median s", "runs", "rows/s")
    for name, r in rows.items():
        r["median"] = statistics.median(r["seconds"])
        table.add_row(name, f"{r['rows']:,}", f"{r['median']:.2f}", " ".join(f"{s:.2f}" for s in r["seconds"]),
                      f"{r['rows'] / r['median']:,.0f}")
    console.print(table)
    ratio = rows["baseline_in_set_user_id_only"]["median"] / rows["activity_events_same_rows_as_baseline"]["median"]
    console.print(f"on the same {rows['baseline_in_set_user_id_only']['rows']:,} rows, one naive 100K-value set "
                  f"expectation alone takes {ratio:.1f}x the whole activity_events suite")
    daily = rows["activity_events"]["median"] + rows["items"]["median"]
    console.print(f"daily checks (events day + full catalog): {daily:.1f}s; the 10% target holds if the daily "
                  f"pipeline takes more than {10 * daily:.0f}s")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"args": vars(args), "results": rows, "naive_over_suite": ratio,
                                   "daily_checks_seconds": daily}, indent=2))


if __name__ == "__main__":
    main()
