"""``feedstore load items``: rows/s and peak memory for a catalog with 32-d content embeddings,
against a bare COPY of the same rows (no validation, no upsert, no lake) in the same run.

    .venv/bin/python bench/bench_load.py [--items 10000000] [--chunk 50000]

Writes a Parquet file of synthetic items (the generator's item chunks), loads it twice into a
namespace of its own (the second run changes nothing: the idempotent re-run's cost), and
prints rows/s and the peak RSS (VmHWM) of each run, measured in a child process of its own. Writes
bench/results/load.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHILD = """
import json, sys, time
from pathlib import Path
mode, path, rejects, chunk = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
started = time.perf_counter()
if mode == "load":
    from ingestion.load import load
    summary = load("items", [path], rejects, chunk_rows=chunk).as_dict()
else:
    import pyarrow.parquet as pq
    from devtools.synthetic.seeding import copy_rows, items_rows
    from feedstore.db import connect
    with connect() as conn, conn.cursor() as cur:
        cur.execute("CREATE TEMP TABLE items_copy (LIKE items INCLUDING DEFAULTS)")
        rows = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk):
            import pyarrow as pa
            t = pa.Table.from_batches([batch])
            copy_rows(cur, "items_copy", items_rows(t))
            rows += t.num_rows
    summary = {"rows": rows}
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"seconds": time.perf_counter() - started, "peak_rss_mb": hwm / 1024, **summary}))
"""


def make_items(n: int, path: Path) -> float:
    """The generator's item chunks (with embeddings) written as one Parquet file."""
    import pyarrow.parquet as pq

    from devtools.synthetic import generator as gen

    started = time.perf_counter()
    spec = gen.spec_for("seed", seed=3, days=1)
    writer, done, part = None, 0, 0
    while done < n:
        chunk = gen.item_chunk(spec, part).slice(0, n - done)
        chunk = chunk.select(["item_id", "creator_id", "category", "tags", "media_type", "created_at",
                              "content_embedding"])
        writer = writer or pq.ParquetWriter(path, chunk.schema, compression="zstd")
        writer.write_table(chunk)
        done, part = done + chunk.num_rows, part + 1
    writer.close()
    return time.perf_counter() - started


def run(mode: str, path: Path, rejects: Path, chunk: int, env: dict) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, mode, str(path), str(rejects), str(chunk)], cwd=ROOT,
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    import os

    from devtools.sandbox import sandbox

    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=10_000_000)
    parser.add_argument("--chunk", type=int, default=50_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp, sandbox("bench-load"):
        path = Path(tmp) / "items.parquet"
        gen_seconds = make_items(args.items, path)
        env = dict(os.environ)
        baseline = run("copy", path, Path(tmp) / "r0", args.chunk, env)
        first = run("load", path, Path(tmp) / "r1", args.chunk, env)
        second = run("load", path, Path(tmp) / "r2", args.chunk, env)
        file_mb = round(path.stat().st_size / 2**20, 1)
    rows = args.items
    result = {
        "items": rows, "embedding_dim": 32, "file_mb": file_mb,
        "generate_seconds": round(gen_seconds, 1),
        "load_rows_per_s": round(rows / first["seconds"]), "load_seconds": round(first["seconds"], 1),
        "load_peak_rss_mb": round(first["peak_rss_mb"]), "inserted": first["inserted"], "rejected": first["rejected"],
        "rerun_rows_per_s": round(rows / second["seconds"]), "rerun_unchanged": second["unchanged"],
        "rerun_peak_rss_mb": round(second["peak_rss_mb"]),
        "baseline_copy_rows_per_s": round(rows / baseline["seconds"]),
        "baseline_peak_rss_mb": round(baseline["peak_rss_mb"]),
        "ratio_copy_over_load": round(first["seconds"] / baseline["seconds"], 2),
        "bench_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "date": time.strftime("%Y-%m-%d"),
    }
    out = ROOT / "bench" / "results" / "load.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    width = max(map(len, result))
    for k, v in result.items():
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
