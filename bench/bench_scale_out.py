"""Consumers side by side: 1, 2 and 4 ``feedstore ingest`` processes in one group over the topic's
four partitions, into every tier, on the same produced events. The single process is the
baseline of the same run; each row gives events/s in all (first batch read to last batch
committed, over every process), per process, and the ratio to one process. Medians over repeats.

    .venv/bin/python bench/bench_scale_out.py [--events 200000] [--repeats 2] [--consumers 1,2,4]

Runs in a namespace of its own (database, bucket, topics, Redis db) and removes it afterwards.
Prints a table and writes bench/results/scale_out.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from bench_ingest import _fresh  # noqa: E402

from tests.ingestion.conftest import produce, valid_lines  # noqa: E402


def _seconds(record: dict) -> float:
    return datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00")).timestamp()


def group_run(s, lines: list[bytes], consumers: int) -> dict:
    """``consumers`` processes with ``--until-idle`` over the produced lines; the span from the
    first batch's start to the last batch's commit over all of them."""
    from tests.ingestion.harness import CliLauncher, IngestProcess

    produce(s, lines)
    with CliLauncher(s) as launcher:
        procs = [IngestProcess(s, "--until-idle", "5", launcher=launcher) for _ in range(consumers)]
        codes = [p.wait(1800) for p in procs]
    assert codes == [0] * consumers, [p.tail() for p in procs]
    commits = [r for p in procs for r in p.events("batch_committed")]
    first = min(_seconds(r) - r["seconds"] for r in commits)
    last = max(_seconds(r) for r in commits)
    stored = sum(p.events("ingest_stopped")[-1]["stored"] for p in procs)
    assert stored == len(lines), f"{stored} stored of {len(lines)} produced"
    working = sum(1 for p in procs if p.events("batch_committed"))
    return {"consumers": consumers, "working": working, "seconds": last - first,
            "events_per_s": len(lines) / (last - first)}


def main() -> None:
    from rich.console import Console
    from rich.table import Table

    from devtools.sandbox import sandbox
    from tests.ingestion.conftest import seed_catalog

    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--consumers", default="1,2,4")
    parser.add_argument("--batch-size", type=int, default=5_000)
    args = parser.parse_args()
    counts = [int(x) for x in args.consumers.split(",")]
    console = Console()
    runs: dict[int, list[dict]] = {n: [] for n in counts}
    with sandbox("bench") as namespace:
        base = namespace.replace(ingest={"batch_size": args.batch_size})
        seed_catalog(base.postgres.dsn)
        lines = valid_lines(args.events, now=datetime.now(timezone.utc), seed=5, spread_seconds=600)
        for k in range(args.repeats):
            for n in counts:
                with console.status(f"{n} consumer(s), {len(lines):,} events, repeat {k + 1}…"):
                    runs[n].append(group_run(_fresh(base, f"g{n}r{k}"), lines, n))
    base_rate = statistics.median(r["events_per_s"] for r in runs[counts[0]])
    table = Table("consumers", "events/s in all", "per process", f"ratio to {counts[0]}")
    summary = []
    for n in counts:
        rate = statistics.median(r["events_per_s"] for r in runs[n])
        summary.append({"consumers": n, "events_per_s": rate, "per_process": rate / n, "ratio": rate / base_rate})
        table.add_row(str(n), f"{rate:,.0f}", f"{rate / n:,.0f}", f"{rate / base_rate:.2f}x")
    console.print(table)
    load = os.getloadavg()
    console.print(f"{len(lines):,} events, batch {args.batch_size}, {os.cpu_count()} cores, "
                  f"load {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; medians of {args.repeats}")
    out = ROOT / "bench" / "results" / "scale_out.json"
    out.write_text(json.dumps({"events": len(lines), "batch_size": args.batch_size, "summary": summary,
                               "runs": runs, "cores": os.cpu_count(), "load": load,
                               "measured_at": datetime.now(timezone.utc).isoformat()}, indent=2))
    console.print(f"written {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
