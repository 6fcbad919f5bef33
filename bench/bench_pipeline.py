"""One daily partition of the Dagster pipeline at a given scale (default ``seed``: 100K users,
10M items, 1M events a day over 30 days of history): seconds and peak RSS per asset, in total,
for a cold day (the catalog's first, full export) beside ``--steady-days`` steady days
(incremental catalog, the previous day's features in place), reported as medians, each with
the machine's load average while it ran and beside the figures of the previous results file.
Every asset of the daily job runs, in the job's order, with its checks.

Runs in a throwaway database, bucket and Redis db on the running stack, and removes them after.
Needs the generator (``devtools.synthetic.generator``/``devtools.synthetic.seeding``).

    .venv/bin/python bench/bench_pipeline.py --scale seed
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
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


def daily_order() -> list[str]:
    """The daily job's assets in dependency order (a new asset is benchmarked without edits here)."""
    from orchestration.definitions import DAILY, defs

    graph = defs.resolve_asset_graph()
    keys = DAILY.resolve(graph)
    return [k.to_user_string() for k in graph.toposorted_asset_keys if k in keys]


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
        load = os.getloadavg()[0]
        figures[asset] = {"seconds": round(seconds, 2), "peak_rss_mb": round(rss.peak / 2**20), "ok": result.success,
                          "load_1m": round(load, 2)}
        console.print(f"{day} {asset:<26} {seconds:7.1f}s  {rss.peak / 2**30:5.2f} GiB  load {load:4.1f}  "
                      f"{'ok' if result.success else 'FAILED'}")
    return figures


def median_day(days: list[dict[str, dict]]) -> dict[str, dict]:
    """Per asset, the median seconds and load and the largest peak over the steady days."""
    return {asset: {"seconds": round(statistics.median(d[asset]["seconds"] for d in days), 2),
                    "runs_seconds": [d[asset]["seconds"] for d in days],
                    "peak_rss_mb": max(d[asset]["peak_rss_mb"] for d in days),
                    "load_1m": round(statistics.median(d[asset]["load_1m"] for d in days), 2),
                    "ok": all(d[asset]["ok"] for d in days)} for asset in days[0]}


def previous_figures(scale: str, history_days: int) -> dict[str, float]:
    """Steady-day seconds per asset of the results file this run replaces (empty if none, or if
    it was measured at another scale or history)."""
    try:
        old = json.loads(RESULTS.read_text())
    except (OSError, ValueError):
        return {}
    if old.get("scale") != scale or old.get("history_days") != history_days:
        return {}
    return {a: v["seconds"] for a, v in old.get("steady_day", {}).items()} | \
        {"total": old.get("steady_total_seconds", 0.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="seed")
    parser.add_argument("--history-days", type=int, default=30)
    parser.add_argument("--steady-days", type=int, default=2, help="steady days after the cold one (medians)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not 1 <= args.steady_days < args.history_days - 2:
        parser.error("--steady-days must be at least 1 and leave history before the cold day")

    from devtools.sandbox import sandbox

    order = daily_order()
    previous = previous_figures(args.scale, args.history_days)
    day = datetime.now(timezone.utc).date() - timedelta(days=1)
    cold_day = day - timedelta(days=args.steady_days)
    with sandbox("bench"):
        prepare(args.scale, day, args.history_days, args.seed)
        history = [day - timedelta(days=n) for n in range(args.history_days - 1, args.steady_days, -1)]
        started = time.perf_counter()
        for d in history:
            run_day(d, ["activity_archive"])
        backfill = time.perf_counter() - started
        cold = run_day(cold_day, order)
        steadies = [run_day(cold_day + timedelta(days=n), order) for n in range(1, args.steady_days + 1)]
    steady = median_day(steadies)

    table = Table("asset", "cold day s", "steady day s (median)", "steady runs s", "previous steady s",
                  "steady/cold", "steady peak GiB", "load (1 min)")
    for asset in order:
        c, s = cold[asset], steady[asset]
        table.add_row(asset, f"{c['seconds']:.1f}", f"{s['seconds']:.1f}",
                      " ".join(f"{x:.1f}" for x in s["runs_seconds"]),
                      f"{previous[asset]:.1f}" if asset in previous else "-",
                      f"{s['seconds'] / c['seconds']:.2f}" if c["seconds"] else "-", f"{s['peak_rss_mb'] / 1024:.2f}",
                      f"{s['load_1m']:.1f}")
    total_cold = sum(v["seconds"] for v in cold.values())
    totals = [sum(v["seconds"] for v in d.values()) for d in steadies]
    total_steady = statistics.median(totals)
    peak = max(v["peak_rss_mb"] for v in steady.values()) / 1024
    table.add_row("[b]total", f"{total_cold:.1f}", f"{total_steady:.1f}", " ".join(f"{x:.1f}" for x in totals),
                  f"{previous['total']:.1f}" if previous.get("total") else "-", f"{total_steady / total_cold:.2f}",
                  f"{peak:.2f}", f"{os.getloadavg()[0]:.1f}")
    Console().print(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "scale": args.scale, "day": day.isoformat(), "history_days": args.history_days,
        "steady_days": args.steady_days, "archive_backfill_seconds": round(backfill, 1), "cold_day": cold,
        "steady_day": steady, "steady_runs": steadies, "steady_totals_seconds": [round(t, 1) for t in totals],
        "steady_total_seconds": round(total_steady, 1), "steady_peak_rss_gib": round(peak, 2),
        "cold_total_seconds": round(total_cold, 1), "previous_steady_seconds": previous,
        "targets": {"total_seconds": 300, "peak_rss_gib": 6}, "cpus": os.cpu_count(),
        "load_1_5_15": [round(x, 2) for x in os.getloadavg()], "commit": commit(),
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }, indent=2))


def commit() -> str:
    import subprocess

    out = subprocess.run(["git", "-C", str(Path(__file__).parent), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True, check=False)
    return out.stdout.strip()


if __name__ == "__main__":
    main()
