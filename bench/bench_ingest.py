"""Ingestion throughput: the validator against a naive per-event baseline, and the consumer end
to end into every sink (DLQ, S3 Parquet, Postgres, Redis) on the running stack.

    .venv/bin/python bench/bench_ingest.py [--events 200000] [--repeats 5]

Runs in a namespace of its own (database, bucket, topics, Redis db 15) and removes it afterwards. Prints a table and writes bench/results/ingest.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devtools.synthetic.defects import inject_defects  # noqa: E402
from feedstore.contract import rules  # noqa: E402
from ingestion.catalog import IdIndex  # noqa: E402
from ingestion.events import derive_event_id  # noqa: E402
from ingestion.validation import Validator  # noqa: E402
from tests.ingestion.conftest import ITEM_IDS, USER_IDS, valid_lines  # noqa: E402


def naive_validate(payloads: list[bytes], users: set[int], items: set[int], now: datetime) -> list[str | None]:
    """The seed's way: json.loads and dict checks per event, uuid5 per event, a set per batch."""
    out: list[str | None] = []
    seen: set = set()
    for raw in payloads:
        if len(raw) > rules.MAX_MESSAGE_BYTES:
            out.append("too_large")
            continue
        try:
            e = json.loads(raw)
        except ValueError:
            out.append("bad_json")
            continue
        if not isinstance(e, dict) or any(e.get(f) is None for f in rules.REQUIRED_EVENT_FIELDS):
            out.append("bad_shape")
            continue
        try:
            uid, iid = int(e["user_id"]), int(e["item_id"])
            ts = datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00"))
            if ts.tzinfo is None:
                raise ValueError("naive timestamp")
        except (TypeError, ValueError, AttributeError):
            out.append("bad_value")
            continue
        ctx = e.get("context") or {}
        dwell = e.get("dwell_time_ms")
        if (not isinstance(ctx, dict) or e["event_type"] not in rules.EVENT_TYPES
                or (dwell is not None and (not isinstance(dwell, int) or not 0 <= dwell <= rules.MAX_DWELL_MS))):
            out.append("bad_value")
            continue
        age = (now - ts).total_seconds()
        if age > rules.MAX_EVENT_AGE_SECONDS or age < -rules.MAX_FUTURE_SKEW_SECONDS:
            out.append("clock")
            continue
        if uid not in users or iid not in items:
            out.append("unknown")
            continue
        eid = e.get("event_id") or str(derive_event_id(uid, iid, e["event_type"], ts, ctx.get("session_id")))
        if eid in seen:
            out.append("duplicate")
            continue
        seen.add(eid)
        out.append(None)
    return out


def bench_validator(n: int, repeats: int) -> dict:
    now = datetime.now(timezone.utc)
    lines, _ = inject_defects(valid_lines(n, now=now, seed=3), copies=5, duplicates=200, now=now,
                              unknown_user_id=999_999, unknown_item_id=999_999)
    lines = [x for x in lines if len(x) < 1_000_000]  # the 10 MB lines would dominate both sides
    validator = Validator(IdIndex(USER_IDS).contains, IdIndex(ITEM_IDS).contains)
    users, items = set(USER_IDS.tolist()), set(ITEM_IDS.tolist())
    ours, naive = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        result = validator.validate(lines, now=now)
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        base = naive_validate(lines, users, items, now)
        naive.append(time.perf_counter() - t)
    med_ours, med_naive = statistics.median(ours), statistics.median(naive)
    return {"events": len(lines), "repeats": repeats,
            "validator_median_s": med_ours, "naive_median_s": med_naive,
            "validator_events_per_s": len(lines) / med_ours, "naive_events_per_s": len(lines) / med_naive,
            "speedup": med_naive / med_ours, "valid_ours": result.valid.num_rows,
            "valid_naive": sum(r is None for r in base)}


def bench_end_to_end(n: int, batch_size: int) -> dict:
    """One consumer run over n pre-produced events (1% defects) in a sandbox namespace."""
    import psycopg

    from devtools.sandbox import sandbox
    from ingestion.consumer import IngestConsumer, Options
    from tests.ingestion.conftest import produce, seed_catalog

    with sandbox("bench") as namespace:
        s = namespace.replace(ingest={"batch_size": batch_size})
        seed_catalog(s.postgres.dsn)
        now = datetime.now(timezone.utc)
        lines, reasons = inject_defects(valid_lines(n, now=now, seed=4), copies=max(1, n // 20000), duplicates=200,
                                        now=now, unknown_user_id=999_999, unknown_item_id=999_999)
        produce(s, lines)
        stats = IngestConsumer(s, Options(until_idle=3)).run()
        with psycopg.connect(s.postgres.dsn) as conn:
            stored = conn.execute("SELECT count(*) FROM user_activity").fetchone()[0]
        assert stored == sum(r is None for r in reasons), (stored, stats)
        return {"events": len(lines), "batch_size": batch_size, "seconds": stats.busy_seconds,
                "events_per_s": stats.messages / stats.busy_seconds, "batches": stats.batches,
                "stored": stats.stored, "rejected": stats.rejected, "duplicates": stats.duplicates}


def main() -> None:
    from rich.console import Console
    from rich.table import Table

    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--validator-events", type=int, default=50_000)
    parser.add_argument("--batch-sizes", default="5000,500")
    args = parser.parse_args()
    console = Console()
    with console.status("validator vs naive baseline…"):
        validator = bench_validator(args.validator_events, args.repeats)
    runs = []
    for size in [int(x) for x in args.batch_sizes.split(",")]:
        with console.status(f"end to end, {args.events} events, batch {size}…"):
            runs.append(bench_end_to_end(args.events, size))

    table = Table("measure", "events", "median s", "events/s", "ratio")
    table.add_row("validator (msgspec + numpy)", str(validator["events"]), f"{validator['validator_median_s']:.3f}",
                  f"{validator['validator_events_per_s']:,.0f}", f"{validator['speedup']:.1f}x")
    table.add_row("naive per-event baseline", str(validator["events"]), f"{validator['naive_median_s']:.3f}",
                  f"{validator['naive_events_per_s']:,.0f}", "1.0x")
    for run in runs:
        table.add_row(f"consumer end to end, batch {run['batch_size']}", str(run["events"]), f"{run['seconds']:.2f}",
                      f"{run['events_per_s']:,.0f}", "")
    console.print(table)
    out = ROOT / "bench" / "results" / "ingest.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"validator": validator, "end_to_end": runs,
                               "measured_at": datetime.now(timezone.utc).isoformat()}, indent=2))
    console.print(f"written {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
