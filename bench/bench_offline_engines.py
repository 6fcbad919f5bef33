"""Historical retrieval on the two offline engines, same lake, same entity rows, same run:
Feast's DuckDB store (ours, the default) and Feast's Spark store (``FEED_FEAST_OFFLINE_ENGINE=spark``,
local mode on this machine's cores).

    .venv/bin/python bench/bench_offline_engines.py [--entity-rows 100000] [--ids 20000] [--days 7]

Entity rows/s is entity rows over the seconds of ``get_historical_features(...).to_df()``, best of
``--repeats``; Spark's session start is reported apart (paid once per process). Both results are
hashed (``feedstore.feast.offline.digest``) and must agree. Runs in a namespace of its own
(database, bucket) and removes it afterwards. Prints a table and writes
bench/results/offline_engines.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]
RESULTS = ROOT / "bench" / "results" / "offline_engines.json"

VIEWS = {"user_activity_features": "user_id", "user_embedding": "user_id", "item_embedding": "item_id"}
FEATURES = ["user_activity_features:interactions_7d", "user_activity_features:like_rate_7d",
            "user_activity_features:category_dist_30d", "user_activity_features:top_category_30d",
            "user_embedding:user_embedding", "item_embedding:item_embedding"]
DAY_US = 86_400_000_000


def write_lake(s, ids: int, days: int) -> None:
    """One row per entity and day for each view, stamped at a random moment of the day."""
    import numpy as np
    import pyarrow as pa
    from feast import Field, FeatureView
    from feast.types import Int64

    from devtools.synthetic import features as synthetic
    from feedstore.feast.definitions import repository

    rng = np.random.default_rng(18)
    base = int(datetime(2026, 5, 1, tzinfo=timezone.utc).timestamp() * 1_000_000)
    objects = repository(s)
    for seed, (name, key) in enumerate(VIEWS.items()):
        view: FeatureView = objects[name]
        view.entity_columns = [Field(name=key, dtype=Int64)]
        for day in range(days):
            entity_ids = np.arange(1, ids + 1)
            ts = base + day * DAY_US + rng.integers(0, DAY_US, ids)
            table = synthetic.frame(view, entity_ids, ts, seed=seed * 1000 + day)
            synthetic.write(name, table.cast(pa.schema(table.schema)), s, part="bench")


def entity_frame(rows: int, ids: int, days: int):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(7)
    base = int(datetime(2026, 5, 1, tzinfo=timezone.utc).timestamp() * 1_000_000)
    return pd.DataFrame({
        "user_id": rng.integers(1, ids + 1, rows), "item_id": rng.integers(1, ids + 1, rows),
        "event_timestamp": pd.to_datetime(base + rng.integers(0, (days + 1) * DAY_US, rows), unit="us", utc=True),
    })


def measure(s, entity, repeats: int) -> dict:
    from feedstore.feast.offline.digest import digest
    from feedstore.feast.store import apply, close, store

    started = time.perf_counter()
    fs = store(s)  # starts the Spark session for the Spark engine
    opened = time.perf_counter() - started
    try:
        apply(fs, s)
        seconds = []
        for _ in range(repeats):
            t = time.perf_counter()
            frame = fs.get_historical_features(entity_df=entity.copy(), features=FEATURES).to_df()
            seconds.append(time.perf_counter() - t)
        best = min(seconds)
        return {"engine": s.feast.offline_engine, "entity_rows": len(entity), "store_open_s": round(opened, 2),
                "seconds": [round(x, 2) for x in seconds], "best_s": round(best, 2),
                "rows_per_s": round(len(entity) / best), "digest": digest(frame), "result_rows": len(frame)}
    finally:
        close(fs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entity-rows", type=int, default=100_000)
    parser.add_argument("--ids", type=int, default=20_000, help="users and items per view")
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

    from devtools.sandbox import sandbox
    from feedstore.settings import get_settings

    results = []
    load_before = os.getloadavg()[0]
    with sandbox("bench-engines") as s, tempfile.TemporaryDirectory() as scratch:
        write_lake(s, args.ids, args.days)
        entity = entity_frame(args.entity_rows, args.ids, args.days)
        results.append(measure(s, entity, args.repeats))
        # a registry of its own: one registry holds one kind of source
        spark_settings = s.replace(feast={"offline_engine": "spark", "registry": f"sqlite:///{scratch}/registry.db"})
        results.append(measure(spark_settings, entity, args.repeats))
        spark = get_settings().spark
    duck, sp = results
    report = {
        "command": " ".join(["bench/bench_offline_engines.py", *sys.argv[1:]]),
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "lake": {"views": list(VIEWS), "ids_per_view": args.ids, "days": args.days,
                 "feature_rows": args.ids * args.days * len(VIEWS)},
        "spark": {"master": spark.master, "driver_memory": spark.driver_memory,
                  "shuffle_partitions": spark.shuffle_partitions},
        "cores": os.cpu_count(),
        "load_1m": {"start": round(load_before, 1), "end": round(os.getloadavg()[0], 1)},
        "results": results,
        "digests_equal": duck["digest"] == sp["digest"],
        "duckdb_over_spark": round(duck["rows_per_s"] / sp["rows_per_s"], 1),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'engine':8} {'entity rows':>11} {'best s':>8} {'rows/s':>10} {'open s':>7}  digest")
    for r in results:
        print(f"{r['engine']:8} {r['entity_rows']:>11,} {r['best_s']:>8} {r['rows_per_s']:>10,} "
              f"{r['store_open_s']:>7}  {r['digest'][:16]}")
    print(f"digests equal: {report['digests_equal']}; DuckDB/Spark: {report['duckdb_over_spark']}x")
    if not report["digests_equal"]:
        sys.exit("the engines disagree")


if __name__ == "__main__":
    main()
