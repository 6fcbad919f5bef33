"""Every benchmark in ``bench/`` into one report: ``bench/REPORT.md`` and ``bench/report.json``,
each figure beside its baseline, with the machine it ran on and which run each figure came from.

    .venv/bin/python bench/run_all.py            # quick runs of the cheap benchmarks + the last full results
    .venv/bin/python bench/run_all.py --full     # every benchmark at its full size (long: seed scale)
    .venv/bin/python bench/run_all.py --no-run   # only rebuild the report from the results on disk

A full run writes ``bench/results/<topic>.json`` as each script does on its own. Quick runs use
reduced sizes and go to ``bench/results/quick/<topic>.json``, leaving the full figures in place;
the report shows both, each with its date and arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devtools.stack.tools import require  # noqa: E402

BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
QUICK = RESULTS / "quick"
# Reduced sizes for the quick run; topics absent here are too heavy to run quickly (the Feast
# benchmark at any useful size, the pipeline at seed scale) and are reported from their last full run.
QUICK_ARGS: dict[str, list[str]] = {
    "generate": ["--repeat", "1"],
    "ingest": ["--events", "20000", "--repeats", "3", "--validator-events", "10000", "--batch-sizes", "5000",
               "--lag-seconds", "5"],
    "expectations": ["--events", "100000", "--items", "300000", "--training", "100000", "--repeat", "2"],
    "serve": ["--seconds", "2", "--reps", "1"],
}
KNOWN_ORDER = ["generate", "ingest", "expectations", "feast", "serve", "pipeline"]


def discover() -> list[str]:
    """Every ``bench/bench_<topic>.py``: a new benchmark is run and reported without edits here
    (known topics first, in the order above, then the others by name)."""
    found = {p.stem.removeprefix("bench_") for p in BENCH.glob("bench_*.py")}
    return [t for t in KNOWN_ORDER if t in found] + sorted(found - set(KNOWN_ORDER))


TOPICS = discover()


def machine() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        model = platform.processor()
    return {"cpus": os.cpu_count(), "cpu_model": model or platform.machine(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "load_1_5_15": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version(),
            "system": f"{platform.system()} {platform.release()}",
            "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


# ---- running ----------------------------------------------------------------------------------

def commit() -> str:
    """The commit the benchmarks ran on, ``+dirty`` when the tree had local changes."""
    def git(*args: str) -> str:
        try:
            return subprocess.run([require("git"), "-C", str(ROOT), *args], capture_output=True, text=True, timeout=10,
                                  check=False).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    head = git("rev-parse", "--short", "HEAD")
    return head + ("+dirty" if head and git("status", "--porcelain", "--untracked-files=no") else "")


def run_script(topic: str, args: list[str], quick: bool) -> tuple[bool, float, str]:
    """Runs ``bench_<topic>.py``; a quick run's JSON is moved to ``results/quick/`` and the full
    results it overwrote are put back."""
    script = BENCH / f"bench_{topic}.py"
    target = RESULTS / f"{topic}.json"
    saved = None
    if quick and target.exists():
        saved = Path(tempfile.mkdtemp(prefix="bench-")) / target.name
        shutil.copy2(target, saved)
    started = time.monotonic()
    log = QUICK / f"{topic}.log" if quick else RESULTS / f"{topic}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        proc = subprocess.run([sys.executable, str(script), *args], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    seconds = time.monotonic() - started
    if quick:
        if proc.returncode == 0 and target.exists():
            QUICK.mkdir(parents=True, exist_ok=True)
            data = json.loads(target.read_text())
            data["_run"] = {"args": args, "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                            "mode": "quick", "commit": commit(), "load": [round(x, 2) for x in os.getloadavg()]}
            (QUICK / target.name).write_text(json.dumps(data, indent=2))
        if saved is not None:
            shutil.copy2(saved, target)
        elif target.exists():
            target.unlink()
    elif proc.returncode == 0 and target.exists():
        data = json.loads(target.read_text())
        data["_run"] = {"args": args, "at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "mode": "full",
                        "commit": commit(), "load": [round(x, 2) for x in os.getloadavg()]}
        target.write_text(json.dumps(data, indent=2))
    return proc.returncode == 0, seconds, str(log.relative_to(ROOT))


# ---- normalising -------------------------------------------------------------------------------

def row(figure: str, value: float | None, unit: str, baseline: str = "", baseline_value: float | None = None,
        better: str = "lower") -> dict:
    """One figure; ``ratio`` > 1 always means ours is better than the baseline."""
    ratio = None
    if value and baseline_value:
        ratio = baseline_value / value if better == "lower" else value / baseline_value
    return {"figure": figure, "value": value, "unit": unit, "baseline": baseline, "baseline_value": baseline_value,
            "ratio": ratio}


def _median(xs) -> float:
    return statistics.median(xs) if xs else 0.0


def generate_rows(d: dict) -> list[dict]:
    out = []
    for r in d.get("runs", []):
        total = sum(r["rows"].values())
        label = f"generate {r['scale']} ({total:,} rows" + (", earlier run" if r.get("from_earlier_run") else "") + ")"
        out.append(row(label, r["wall_s"], "s"))
        out.append(row(f"generate {r['scale']} throughput", r["rows_per_s"], "rows/s", better="higher"))
    for b in d.get("baselines", []):
        out.append(row(f"{b['what']}: {b['ours']}", b["ours_s"], "s", b["baseline"], b["baseline_s"]))
    return out


def ingest_rows(d: dict) -> list[dict]:
    v = d["validator"]
    out = [row(f"validator, {v['events']:,} events", v["validator_events_per_s"], "events/s",
               "naive per-event validation", v["naive_events_per_s"], better="higher")]
    for r in sorted(d.get("end_to_end", []), key=lambda r: -r["batch_size"]):
        if "bare_events_per_s" in r:
            out.append(row(f"consumer end to end, {r['events']:,} events, batch {r['batch_size']:,}",
                           r["events_per_s"], "events/s", "bare batched path (COPY + INSERT … ON CONFLICT + Redis)",
                           r["bare_events_per_s"], better="higher"))
        else:
            out.append(row(f"consumer end to end, {r['events']:,} events, batch {r['batch_size']:,}",
                           r["events_per_s"], "events/s", better="higher"))
    lag = d.get("storage_lag")
    if lag:
        rate = f"{lag['offered_events_per_s']:,.0f} events/s offered"
        out.append(row(f"storage lag p50 at {rate}", lag["p50_s"], "s"))
        out.append(row(f"storage lag p99 at {rate}", lag["p99_s"], "s"))
    return out


def expectations_rows(d: dict) -> list[dict]:
    r = d["results"]
    med = {k: v.get("median", _median(v["seconds"])) for k, v in r.items()}
    return [
        row(f"activity_events suite, {r['activity_events']['rows']:,} rows", med["activity_events"], "s"),
        row(f"items suite, {r['items']['rows']:,} rows", med["items"], "s"),
        row(f"activity_events suite, {r['activity_events_same_rows_as_baseline']['rows']:,} rows",
            med["activity_events_same_rows_as_baseline"], "s", "one naive 100K-value in-set expectation",
            med["baseline_in_set_user_id_only"]),
        *([row(f"training_dataset suite as DuckDB SQL, {r['training_dataset_duckdb']['rows']:,} rows",
               med["training_dataset_duckdb"], "s", "GX on pandas", med["training_dataset_gx"])]
          if "training_dataset_duckdb" in r else []),
    ]


def feast_rows(d: dict) -> list[dict]:
    out = []
    if "materialize_ours" in d:
        out.append(row(f"materialize, {d['args']['items']:,} rows", d["materialize_ours"]["seconds"], "s",
                       "stock Feast materialize", d["materialize_stock"]["seconds"]))
    for n in ("1", "500"):
        ours, stock = d.get(f"online_{n}_ours"), d.get(f"online_{n}_stock")
        if ours and stock:
            what = "1 user" if n == "1" else "1 user × 500 items"
            out.append(row(f"get_online_features {what}, p50", ours["p50_ms"], "ms", "stock Feast", stock["p50_ms"]))
            out.append(row(f"get_online_features {what}, p99", ours["p99_ms"], "ms", "stock Feast", stock["p99_ms"]))
            gc = d.get(f"online_{n}_stock_gc")
            if gc:
                out.append(row(f"get_online_features {what}, p99", ours["p99_ms"], "ms", "stock Feast, GC tuned",
                               gc["p99_ms"]))
    if "http_ours" in d:
        for q in ("p50_ms", "p99_ms", "max_ms"):
            out.append(row(f"HTTP get-online-features, {q.split('_')[0]}", d["http_ours"][q], "ms",
                           "feast serve", d["http_stock"][q]))
    if "historical_ours" in d:
        h = d["historical_ours"]
        out.append(row(f"get_historical_features, {h['rows']:,} entity rows", h["seconds"], "s",
                       "stock Feast duckdb store", d["historical_stock"]["seconds"]))
    return out


def serve_rows(d: dict) -> list[dict]:
    """``feedstore serve --workers W`` against ``feast serve --workers W`` per client count."""
    n = d["args"]["items_per_request"]
    out = []
    for r in d["table"]:
        what = f"serve --workers {r['workers']}, {r['clients']} clients, 1 user × {n} items"
        baseline = f"feast serve --workers {r['workers']}"
        out.append(row(f"{what}, req/s", r["feedstore_rps"], "req/s", baseline, r["feast_rps"], better="higher"))
        out.append(row(f"{what}, p99", r["feedstore_p99_ms"], "ms", baseline, r["feast_p99_ms"]))
    return out


def pipeline_rows(d: dict) -> list[dict]:
    t = d.get("targets", {})
    cold = d.get("cold_total_seconds") or sum(v["seconds"] for v in d["cold_day"].values())
    runs = d.get("steady_totals_seconds")
    median = f"median of {len(runs)} steady days, " if runs else ""
    out = [
        row(f"daily pipeline, {d['scale']} scale, steady day ({median}checks included)", d["steady_total_seconds"],
            "s", "target", t.get("total_seconds")),
        row("daily pipeline, steady day", d["steady_total_seconds"], "s", "cold day (full catalog export)", cold),
        row("daily pipeline peak memory", d["steady_peak_rss_gib"], "GiB", "target", t.get("peak_rss_gib")),
    ]
    previous = d.get("previous_steady_seconds") or {}
    if previous.get("total"):
        out.append(row("daily pipeline, steady day", d["steady_total_seconds"], "s", "previous results file",
                       previous["total"]))
    for asset, v in d["steady_day"].items():
        load = f", load {v['load_1m']:.1f}" if "load_1m" in v else ""
        if asset in previous:
            out.append(row(f"{asset}, steady day{load}", v["seconds"], "s", "previous results file", previous[asset]))
        else:
            out.append(row(f"{asset}, steady day{load}", v["seconds"], "s", "cold day",
                           d["cold_day"].get(asset, {}).get("seconds")))
    return out


def generic_rows(d: dict) -> list[dict]:
    """A benchmark this file does not know: its ``rows`` if it writes them in this report's shape
    (figure, value, unit, baseline, baseline_value), else every top-level number."""
    if isinstance(d.get("rows"), list) and all(isinstance(r, dict) and "figure" in r for r in d["rows"]):
        return [row(r["figure"], r.get("value"), r.get("unit", ""), r.get("baseline", ""), r.get("baseline_value"),
                    r.get("better", "lower")) for r in d["rows"]]
    return [row(k, float(v), "") for k, v in d.items() if isinstance(v, int | float) and not isinstance(v, bool)]


NORMALISERS: dict[str, Callable[[dict], list[dict]]] = {
    "generate": generate_rows, "ingest": ingest_rows, "expectations": expectations_rows, "feast": feast_rows,
    "serve": serve_rows, "pipeline": pipeline_rows,
}


def _git_date(path: Path) -> str | None:
    try:
        out = subprocess.run([require("git"), "-C", str(ROOT), "log", "-1", "--format=%cI %h", "--", str(path)],
                             capture_output=True, text=True, timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out or None


def source(path: Path, data: dict, mode: str) -> dict:
    run = data.get("_run", {})
    committed = _git_date(path) if mode == "full" else None
    when = (run.get("at") or data.get("measured_at") or (committed.split()[0] if committed else None)
            or datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).isoformat(timespec="seconds"))
    args = run.get("args") if run else data.get("args")
    machine_ = data.get("machine") if isinstance(data.get("machine"), dict) else {}
    load = run.get("load") or data.get("load_1_5_15") or machine_.get("load_1_5_15") or data.get("load")
    return {"mode": mode, "file": str(path.relative_to(ROOT)), "at": when,
            "commit": run.get("commit") or data.get("commit") or committed, "args": args,
            "cpus": data.get("cpus") or data.get("machine_cpus") or machine_.get("cpus"), "load": load}


def collect() -> list[dict]:
    sections = []
    for topic in TOPICS:
        for mode, path in (("full", RESULTS / f"{topic}.json"), ("quick", QUICK / f"{topic}.json")):
            if not path.exists():
                continue
            data = json.loads(path.read_text())
            try:
                rows = NORMALISERS.get(topic, generic_rows)(data)
            except (KeyError, TypeError, ValueError) as exc:
                rows, error = [], f"unreadable results: {type(exc).__name__}: {exc}"
            else:
                error = None
            sections.append({"topic": topic, "source": source(path, data, mode), "rows": rows, "error": error})
        if not any(s["topic"] == topic for s in sections):
            sections.append({"topic": topic, "source": None, "rows": [],
                             "error": f"no results yet: run .venv/bin/python bench/bench_{topic}.py"})
    return sections


# ---- writing -----------------------------------------------------------------------------------

def _num(x: float | None) -> str:
    if x is None:
        return ""
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = ["# Benchmark report", "",
             f"Written {m['at']} by `.venv/bin/python bench/run_all.py` on {m['cpus']} cores ({m['cpu_model']}), "
             f"{m['memory_gib']} GiB memory, load {' / '.join(map(str, m['load_1_5_15']))} (1/5/15 min), "
             f"Python {m['python']}, {m['system']}, commit `{report.get('commit') or 'unknown'}`. The machine is shared: other work ran alongside, so read "
             "the ratios (ours and its baseline measured in the same run) before the absolute figures.", "",
             "**full** figures are each script's last run at its own sizes (`bench/results/<topic>.json`); "
             "**quick** ones are this report's reduced-size runs (`bench/results/quick/`). Ratio > 1 means "
             "ours beats the baseline.", ""]
    for s in report["sections"]:
        src = s["source"]
        head = f"## {s['topic']}"
        if src:
            head += f" — {src['mode']}, {src['at']}"
        lines += [head, ""]
        if src:
            extra = f", commit {src['commit'].split()[-1]}" if src.get("commit") else ""
            cpus = f", {src['cpus']} cores" if src.get("cpus") else ""
            load = src.get("load")
            load = f", load {' / '.join(map(str, load)) if isinstance(load, list | tuple) else load}" if load else ""
            lines += [f"From `{src['file']}`{extra}{cpus}{load}; arguments: `{json.dumps(src['args'])}`.", ""]
        if s["error"]:
            lines += [f"_{s['error']}_", ""]
            continue
        lines += ["| figure | ours | baseline | baseline figure | ratio |", "|---|---:|---|---:|---:|"]
        for r in s["rows"]:
            ratio = f"{r['ratio']:.2f}x" if r["ratio"] else ""
            base = f"{_num(r['baseline_value'])} {r['unit']}" if r["baseline_value"] is not None else ""
            lines.append(f"| {r['figure']} | {_num(r['value'])} {r['unit']} | {r['baseline']} | {base} | {ratio} |")
        lines.append("")
    if report.get("runs"):
        lines += ["## This report's runs", "", "| benchmark | mode | ok | seconds | load (1 min) before / after | log |",
                  "|---|---|---|---:|---|---|"]
        for r in report["runs"]:
            load = f"{r.get('load_before', '')} / {r.get('load_after', '')}"
            lines.append(f"| {r['topic']} | {r['mode']} | {'yes' if r['ok'] else '**failed**'} | "
                         f"{r['seconds']:.0f} | {load} | `{r['log']}` |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--full", action="store_true", help="run every benchmark at its full size (long)")
    p.add_argument("--no-run", action="store_true", help="only rebuild the report from the results on disk")
    p.add_argument("--only", default="", help="comma list of topics to run (default: all that apply)")
    args = p.parse_args()
    only = {t for t in args.only.split(",") if t}
    unknown = only - set(TOPICS)
    if unknown:
        p.error(f"unknown topics: {', '.join(sorted(unknown))} (known: {', '.join(TOPICS)})")
    runs = []
    if not args.no_run:
        plan = [(t, [], "full") for t in TOPICS] if args.full else [(t, a, "quick") for t, a in QUICK_ARGS.items()]
        for topic, script_args, mode in plan:
            if only and topic not in only:
                continue
            print(f"running bench_{topic}.py ({mode}) …", file=sys.stderr, flush=True)
            load_before = round(os.getloadavg()[0], 2)
            ok, seconds, log = run_script(topic, script_args, quick=mode == "quick")
            print(f"  {'ok' if ok else 'FAILED'} in {seconds:.0f}s, log {log}", file=sys.stderr, flush=True)
            runs.append({"topic": topic, "mode": mode, "ok": ok, "seconds": seconds, "log": log,
                         "load_before": load_before, "load_after": round(os.getloadavg()[0], 2)})
    report = {"machine": machine(), "commit": commit(), "sections": collect(), "runs": runs}
    (BENCH / "report.json").write_text(json.dumps(report, indent=2, default=str))
    (BENCH / "REPORT.md").write_text(markdown(report))
    print(f"wrote {BENCH / 'REPORT.md'} and {BENCH / 'report.json'}", file=sys.stderr)
    if any(not r["ok"] for r in runs):
        sys.exit(1)


if __name__ == "__main__":
    main()
