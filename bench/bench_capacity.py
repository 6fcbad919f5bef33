"""What one event and one online row cost in each tier, measured on the running stack: the
figures docs/capacity.md multiplies out. ``feedstore ingest`` lands ``--events`` events in a
namespace of its own; then Postgres bytes per event (the activity partitions with their indexes,
and the event-id table), landed Parquet bytes per event on S3, Redis bytes per hot-counter user;
and, for every feature view, Redis bytes per online entity after writing ``--entities``
synthetic rows through the online store, plus the consumer's events/s per process.

    .venv/bin/python bench/bench_capacity.py [--events 200000] [--entities 5000]

Prints a table and writes bench/results/capacity.json.
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

from bench_ingest import _fresh, consumer_run  # noqa: E402

from tests.ingestion.conftest import valid_lines  # noqa: E402

_PG_SIZES = """
SELECT coalesce(sum(pg_total_relation_size(relid)), 0) FROM pg_partition_tree('user_activity')
UNION ALL SELECT pg_total_relation_size('activity_event_ids')
"""


def _memory_per_key(client, pattern: str, sample: int = 500) -> float:
    sizes = []
    for key in client.scan_iter(pattern, count=1000):
        sizes.append(client.memory_usage(key, samples=0))
        if len(sizes) >= sample:
            break
    return statistics.mean(sizes) if sizes else 0.0


def tier_bytes(s, events: int) -> dict:
    import psycopg
    import redis

    from feedstore.contract.lake import LANDED
    from feedstore.s3 import s3_client

    with psycopg.connect(s.postgres.dsn) as conn:
        activity, ids = (int(row[0]) for row in conn.execute(_PG_SIZES).fetchall())
    client = s3_client(s)
    landed = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=s.s3.bucket, Prefix=f"{LANDED}/"):
        landed += sum(o["Size"] for o in page.get("Contents", []))
    r = redis.Redis.from_url(s.redis.url)
    users = sum(1 for _ in r.scan_iter("user:*", count=1000))
    return {"postgres_activity_bytes_per_event": activity / events, "postgres_ids_bytes_per_event": ids / events,
            "s3_landed_bytes_per_event": landed / events, "redis_bytes_per_hot_user": _memory_per_key(r, "user:*"),
            "hot_users": users}


def online_bytes(s, entities: int) -> dict[str, float]:
    """Redis bytes per entity for each view, from rows written through the online store."""
    import numpy as np
    import redis

    from devtools.synthetic import features as synthetic
    from feedstore.feast.store import apply, store

    fs = store(s)
    apply(fs, s)
    online = fs._get_provider().online_store
    now_us = int(datetime.now(timezone.utc).timestamp() * 1e6)
    r = redis.Redis.from_url(s.redis.url)
    out = {}
    for view in fs.list_feature_views():
        ids = np.arange(1, entities + 1, dtype=np.int64)
        online.write_arrow(fs.config, view, synthetic.frame(view, ids, np.full(entities, now_us - 60_000_000)))
        out[view.name] = _memory_per_key(r, f"{fs.project}:*:{view.name}")
    return out


def main() -> None:
    from rich.console import Console
    from rich.table import Table

    from devtools.sandbox import sandbox
    from tests.ingestion.conftest import seed_catalog

    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--entities", type=int, default=5_000)
    parser.add_argument("--batch-size", type=int, default=5_000)
    args = parser.parse_args()
    console = Console()
    with sandbox("bench") as namespace:
        base = namespace.replace(ingest={"batch_size": args.batch_size})
        seed_catalog(base.postgres.dsn)
        run = _fresh(base, "cap")
        lines = valid_lines(args.events, now=datetime.now(timezone.utc), seed=6, spread_seconds=600)
        with console.status(f"ingesting {len(lines):,} events…"):
            consumer = consumer_run(run, lines)
        tiers = tier_bytes(run, consumer["stored"])
        with console.status(f"online rows for {args.entities:,} entities per view…"):
            online = online_bytes(run, args.entities)
    table = Table("figure", "value")
    table.add_row("consumer events/s (one process, every tier)", f"{consumer['events_per_s']:,.0f}")
    for name, value in tiers.items():
        table.add_row(name.replace("_", " "), f"{value:,.0f}")
    for view, value in online.items():
        table.add_row(f"redis bytes per entity: {view}", f"{value:,.0f}")
    console.print(table)
    load = os.getloadavg()
    console.print(f"{len(lines):,} events, {os.cpu_count()} cores, load {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    out = ROOT / "bench" / "results" / "capacity.json"
    out.write_text(json.dumps({"events": len(lines), "consumer": consumer, "tiers": tiers, "online_bytes": online,
                               "cores": os.cpu_count(), "load": load,
                               "measured_at": datetime.now(timezone.utc).isoformat()}, indent=2))
    console.print(f"written {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
