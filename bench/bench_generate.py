"""How long `feedstore generate` takes and how much it writes, against the running stack.

Every run goes into a throwaway namespace (its own Postgres database, S3 bucket and Kafka
topics, dropped at the end), never into the shared `feedstore` one. Baselines, run in the
same process on the same data:
- COPY of items row by row through psycopg's ``write_row`` vs our CSV chunks from pyarrow;
- the wire form of events (id + JSON) built per row in Python vs vectorised.

    .venv/bin/python bench/bench_generate.py               # small scale, 3 runs
    .venv/bin/python bench/bench_generate.py --seed-scale  # plus seed scale once (10M items)
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import pyarrow as pa
from psycopg import sql
from rich.console import Console
from rich.table import Table

from devtools.sandbox import sandbox
from feedstore.settings import Settings

RESULTS = Path(__file__).parent / "results" / "generate.json"
END = datetime(2025, 11, 16, tzinfo=timezone.utc)
console = Console(width=180)


def pg_table_bytes(s: Settings) -> int:
    with psycopg.connect(s.postgres.dsn) as conn:
        return int(conn.execute("SELECT sum(pg_total_relation_size(t::regclass)) FROM "
                            "unnest(ARRAY['users', 'user_follows', 'items']) t").fetchone()[0])


def run_generate(scale: str, s: Settings) -> dict:
    from devtools.synthetic import generator as gen
    from devtools.synthetic.seeding import generate

    gen.world.cache_clear()
    gen.follows_table.cache_clear()
    spec = gen.spec_for(scale, seed=1, end=END)
    started = time.perf_counter()
    report = generate(spec, s, events_to="kafka")
    wall = time.perf_counter() - started
    rows = sum(report.rows.values())
    return {
        "scale": scale, "wall_s": wall, "rows": report.rows, "rows_per_s": rows / wall,
        "phases_s": report.seconds, "postgres_copy_mb": report.postgres_bytes / 1e6,
        "postgres_on_disk_mb": pg_table_bytes(s) / 1e6, "s3_mb": report.s3_bytes / 1e6,
        "s3_objects": len(report.s3_keys), "kafka_mb": report.event_bytes / 1e6,
    }


def timed(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def copy_baseline(s: Settings, repeat: int) -> dict:
    """Items into Postgres: psycopg ``write_row`` per row vs one CSV chunk per 250K rows."""
    from devtools.synthetic import generator as gen
    from devtools.synthetic.seeding import copy_rows, items_rows

    rows = items_rows(gen.items_table(gen.spec_for("small", seed=1, end=END)))
    columns = rows.column_names

    def per_row() -> None:
        with psycopg.connect(s.postgres.dsn) as conn, conn.cursor() as cur:
            cur.execute("TRUNCATE items")
            stmt = sql.SQL("COPY items ({}) FROM STDIN").format(sql.SQL(", ").join(map(sql.Identifier, columns)))
            with cur.copy(stmt) as copy:
                for r in rows.to_pylist():  # the frames are Arrow: a per-row path pays this too
                    copy.write_row([r[c] for c in columns])

    def chunked() -> None:
        with psycopg.connect(s.postgres.dsn) as conn, conn.cursor() as cur:
            cur.execute("TRUNCATE items")
            copy_rows(cur, "items", rows)

    base, ours = timed(per_row, repeat), timed(chunked, repeat)
    return {"what": f"COPY {rows.num_rows:,} items", "baseline": "write_row per row", "baseline_s": base,
            "ours": "pyarrow CSV chunks", "ours_s": ours, "speedup": base / ours}


def wire_baseline(repeat: int) -> dict:
    """Event id + JSON: per-row Python vs vectorised."""
    from devtools.synthetic import generator as gen
    from ingestion.events import derive_event_id, format_timestamp

    events = gen.events_table(gen.spec_for("small", seed=1, end=END))
    records = events.to_pylist()

    def per_row() -> list[bytes]:
        out = []
        for r in records:
            eid = derive_event_id(r["user_id"], r["item_id"], r["event_type"], r["timestamp"], r["session_id"])
            out.append(json.dumps({
                "user_id": str(r["user_id"]), "item_id": str(r["item_id"]), "event_type": r["event_type"],
                "timestamp": format_timestamp(r["timestamp"]),
                "context": {"device": r["device"], "platform": r["platform"], "session_id": r["session_id"]},
                "dwell_time_ms": r["dwell_time_ms"], "event_id": str(eid)}).encode())
        return out

    def vectorised() -> pa.Array:
        ts = gen.format_timestamps(events["timestamp"])
        gen.derive_event_ids(events["user_id"], events["item_id"], events["event_type"], ts, events["session_id"])
        return gen.event_json(events)

    assert [v.encode() for v in vectorised().to_pylist()] == per_row()  # same bytes, or the race means nothing
    base, ours = timed(per_row, repeat), timed(vectorised, repeat)
    return {"what": f"wire form of {events.num_rows:,} events", "baseline": "per-row uuid5 + json.dumps",
            "baseline_s": base, "ours": "vectorised", "ours_s": ours, "speedup": base / ours}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed-scale", action="store_true", help="also run the seed scale once (10M items)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    runs, baselines = [], []
    with sandbox("bench") as s:
        small = [run_generate("small", s) for _ in range(args.repeat)]
        median = statistics.median(r["wall_s"] for r in small)
        runs.append({**min(small, key=lambda r: abs(r["wall_s"] - median)), "runs": args.repeat,
                     "wall_s_all": [r["wall_s"] for r in small]})
        baselines.append(copy_baseline(s, args.repeat))
    baselines.append(wire_baseline(args.repeat))
    if args.seed_scale:
        with sandbox("bench") as s:
            runs.append({**run_generate("seed", s), "runs": 1})
    elif RESULTS.exists():  # the seed scale is too heavy to re-run every time: keep its last figures
        runs += [{**r, "from_earlier_run": True} for r in json.loads(RESULTS.read_text())["runs"]
                 if r["scale"] == "seed"]

    table = Table("scale", "runs", "wall s (median)", "rows", "rows/s", "PG COPY MB", "PG on disk MB", "S3 MB",
                  "Kafka MB", "phases s", title="feedstore generate")
    for r in runs:
        table.add_row(r["scale"] + (" (earlier run)" if r.get("from_earlier_run") else ""), str(r["runs"]), f"{r['wall_s']:.1f}", f"{sum(r['rows'].values()):,}",
                      f"{r['rows_per_s']:,.0f}", f"{r['postgres_copy_mb']:.0f}", f"{r['postgres_on_disk_mb']:.0f}",
                      f"{r['s3_mb']:.0f}", f"{r['kafka_mb']:.0f}",
                      " ".join(f"{k}={v:.1f}" for k, v in r["phases_s"].items()))
    console.print(table)
    side = Table("work", "baseline", "s", "ours", "s", "speedup", title=f"baselines (median of {args.repeat})")
    for b in baselines:
        side.add_row(b["what"], b["baseline"], f"{b['baseline_s']:.2f}", b["ours"], f"{b['ours_s']:.2f}",
                     f"{b['speedup']:.1f}x")
    console.print(side)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"runs": runs, "baselines": baselines}, indent=2, default=str))
    console.print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
