"""One daily partition of the Dagster pipeline at a given scale (default ``seed``: 100K users,
10M items, 1M events a day over 30 days of history): seconds and peak RSS per asset, in total,
for a cold day (the catalog's first, full export) beside a steady day (incremental catalog),
which is the baseline the incremental snapshot is measured against.

Runs in a throwaway database, bucket and Redis db on the running stack, and removes them after.
Needs the generator (``devtools.synthetic.generator``/``devtools.synthetic.seeding``).

    .venv/bin/python bench/bench_pipeline.py --scale seed
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.compute as pc
from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).parent / "results" / "pipeline.json"
ORDER = ["activity_archive", "user_profile_snapshot", "item_catalog_snapshot", "item_embeddings",
         "item_engagement_features", "user_activity_features", "user_embeddings", "user_candidates",
         "online_features", "training_dataset", "activity_retention"]
console = Console(stderr=True)


class PeakRss:
    """Peak resident memory of this process while a block runs (sampled every 50 ms)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self) -> PeakRss:
        proc = psutil.Process()
        self.peak = proc.memory_info().rss

        def sample() -> None:
            while not self._stop.wait(0.05):
                self.peak = max(self.peak, proc.memory_info().rss)
        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def load_events(events: pa.Table, conn, settings, land: bool) -> None:
    """Activity straight into Postgres (COPY) and, for the benchmarked day, as landed files too."""
    from devtools.synthetic.seeding import activity_rows, copy_rows
    from feedstore.s3 import arrow_fs, bucket_path

    with conn.cursor() as cur:
        copy_rows(cur, "user_activity", activity_rows(events))
    conn.commit()
    if land:
        import pyarrow.parquet as pq

        hours = pc.hour(events["timestamp"]).to_numpy()
        day = events["timestamp"][0].as_py().date()
        for h in sorted(set(hours.tolist())):
            part = events.filter(pa.array(hours == h))
            key = f"events/dt={day}/hour={h:02d}/user-activity-0-{h}-{h}.parquet"
            pq.write_table(part, bucket_path(key, settings), filesystem=arrow_fs(settings))


def prepare(scale: str, day: date, history: int, seed: int) -> None:
    from devtools.synthetic import generator as gen
    from devtools.synthetic.seeding import generate
    from feedstore.db import connect
    from feedstore.settings import get_settings
    from orchestration.lake import day_end

    settings = get_settings()
    spec = gen.spec_for(scale, seed=seed, end=day_end(day), days=history)
    started = time.perf_counter()
    generate(spec, settings, events_to="none")
    with connect(settings) as conn:
        conn.execute("SELECT ensure_activity_partitions(%s, %s)", (day - timedelta(days=history), day))
        conn.commit()
        for events in gen.iter_event_chunks(spec):
            if events.num_rows:
                last = events["timestamp"][0].as_py().date() == day
                load_events(events, conn, settings, land=last)
    console.print(f"generated and loaded {scale} in {time.perf_counter() - started:.0f}s")


def run_day(day: date, assets: list[str]) -> dict[str, dict]:
    import dagster as dg

    from orchestration.definitions import ASSETS, CHECKS
    from orchestration.resources import resources

    figures = {}
    instance = dg.DagsterInstance.ephemeral()
    for asset in assets:
        with PeakRss() as rss:
            started = time.perf_counter()
            result = dg.materialize([*ASSETS, *CHECKS], partition_key=day.isoformat(), resources=resources(),
                                    selection=dg.AssetSelection.assets(asset), instance=instance,
                                    raise_on_error=False)
            seconds = time.perf_counter() - started
        figures[asset] = {"seconds": round(seconds, 2), "peak_rss_mb": round(rss.peak / 2**20), "ok": result.success}
        console.print(f"{day} {asset:<26} {seconds:7.1f}s  {rss.peak / 2**30:5.2f} GiB  "
                      f"{'ok' if result.success else 'FAILED'}")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="seed")
    parser.add_argument("--history-days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from devtools.sandbox import sandbox

    day = datetime.now(timezone.utc).date() - timedelta(days=1)
    with sandbox("bench"):
        prepare(args.scale, day, args.history_days, args.seed)
        history = [day - timedelta(days=n) for n in range(args.history_days - 1, 1, -1)]
        started = time.perf_counter()
        for d in history:
            run_day(d, ["activity_archive"])
        backfill = time.perf_counter() - started
        cold = run_day(day - timedelta(days=1), ORDER)
        steady = run_day(day, ORDER)

    table = Table("asset", "cold day s", "steady day s", "steady/cold", "steady peak GiB")
    for asset in ORDER:
        c, s = cold[asset], steady[asset]
        table.add_row(asset, f"{c['seconds']:.1f}", f"{s['seconds']:.1f}",
                      f"{s['seconds'] / c['seconds']:.2f}" if c["seconds"] else "-", f"{s['peak_rss_mb'] / 1024:.2f}")
    total_cold, total_steady = (sum(v["seconds"] for v in x.values()) for x in (cold, steady))
    peak = max(v["peak_rss_mb"] for v in steady.values()) / 1024
    table.add_row("[b]total", f"{total_cold:.1f}", f"{total_steady:.1f}", f"{total_steady / total_cold:.2f}",
                  f"{peak:.2f}")
    Console().print(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "scale": args.scale, "day": day.isoformat(), "history_days": args.history_days,
        "archive_backfill_seconds": round(backfill, 1), "cold_day": cold, "steady_day": steady,
        "steady_total_seconds": round(total_steady, 1), "steady_peak_rss_gib": round(peak, 2),
        "targets": {"total_seconds": 900, "peak_rss_gib": 8}, "cpus": os.cpu_count(),
    }, indent=2))


if __name__ == "__main__":
    main()
