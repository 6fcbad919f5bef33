"""``feedstore demo``: the main job end to end on a generated feed, and what it left in each tier.

Stack up and schema → clear the previous demo's data → ``feast apply`` → generate users, items
and events (plus a few malformed ones) into Kafka → run the consumer until the topic is drained
→ run the daily Dagster assets for each generated day, oldest first → read every tier back and
print it. Each step logs to its own file under ``<stack dir>/demo/`` and a failing step names
that file. The demo replaces the data of the namespace it runs in (the local stack's default
one, or whatever ``FEED_*`` names), so it refuses non-local endpoints unless told otherwise.
"""

from __future__ import annotations

import contextlib
import io
import math
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pandas as pd
import structlog
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from feedstore.contract import lake as layout
from feedstore.contract.features import BATCH_VIEWS
from feedstore.contract.rules import Reason
from feedstore.settings import Settings, get_settings
from devtools.demo import audit
from devtools.demo.report import CheckOutcome, DemoOptions, DemoReport
from devtools.demo.feed import generate_feed, ingest, send_bad_events
from devtools.demo.pipeline import generated_days, run_pipeline, write_docs_index
from devtools.demo.prepare import apply_feast, clear_previous, database_name, require_local, start_stack
from devtools.demo.readback import label_balance, online_view, pick_user, read_back, read_training
from devtools.demo.steps import LogSink, StepFailed, Steps, progress_bar, route_logging
from orchestration import lake



# ---- steps ------------------------------------------------------------------------------------

# ---- the run ----------------------------------------------------------------------------------

def run(options: DemoOptions | None = None, console: Console | None = None,
        settings: Settings | None = None) -> DemoReport:
    """The whole demo; raises ``StepFailed`` (with the step's log) when a step fails."""
    from devtools.synthetic.generator import spec_for

    options = options or DemoOptions()
    settings = settings or get_settings()
    console = console or Console(file=sys.stdout)
    log_dir = Path(options.log_dir or settings.stack_dir / "demo").resolve()
    log_dir.mkdir(parents=True, exist_ok=True)
    docs_dir = log_dir / "data_docs"
    spec = spec_for(options.scale, seed=options.seed)
    days = generated_days(spec)
    report = DemoReport(options.scale, (spec.start, spec.end), days, log_dir=log_dir)
    console.print(f"[bold]feedstore demo[/] — {options.scale} feed, events {spec.start:%Y-%m-%d %H:%M} → "
                  f"{spec.end:%Y-%m-%d %H:%M} UTC ({len(days)} daily partitions); step logs in {log_dir}",
                  highlight=False, soft_wrap=True)
    sink = LogSink(sys.__stderr__)
    steps = Steps(console, log_dir, sink)
    undo = route_logging(sink)
    try:
        with contextlib.redirect_stderr(sink), contextlib.redirect_stdout(sink):
            _steps(steps, spec, days, docs_dir, options, settings, console, report)
    finally:
        undo()
    return report


def _steps(steps: Steps, spec, days: list[date], docs_dir: Path, options: DemoOptions, settings: Settings,
           console: Console, report: DemoReport) -> None:
    with steps.step("stack", "Local stack and schema") as note:
        note["text"] = start_stack(settings)
    with steps.step("reset", f"Clear the previous demo's data (database {database_name(settings)}, bucket "
                             f"{settings.s3_bucket}, Redis {settings.redis_url})") as note:
        if not options.allow_remote:
            require_local(settings)
        note["text"] = clear_previous(settings)
    with steps.step("feast-apply", "feast apply (feature_repo/ into the SQL registry)") as note:
        note["text"] = apply_feast(settings)
    with steps.step("generate", f"Generate the {options.scale} feed: users and items into Postgres and S3, "
                                f"events into Kafka {settings.topic_activity}") as note:
        report.generated = generate_feed(spec, settings, console)
        report.sent_to_kafka = report.generated["events"]
        note["text"] = ", ".join(f"{k} {v:,}" for k, v in report.generated.items())
    if options.defects:
        with steps.step("bad-events", "Send malformed, invalid and duplicate events too") as note:
            sent = send_bad_events(spec, settings)
            report.resent = sent.pop(Reason.DUPLICATE, 0)
            report.bad_events_sent = sent
            report.sent_to_kafka += sum(sent.values()) + report.resent
            note["text"] = f"{sum(sent.values())} bad events of {len(sent)} kinds, {report.resent} re-sent duplicates"
    dlq_start = audit.high_watermarks(settings, settings.topic_dlq)
    with steps.step("ingest", "Consume into Postgres, S3 Parquet, Redis and Feast (replay mode) until drained") as note:
        report.consumed = ingest(settings, report.sent_to_kafka, options, console)
        report.dlq = audit.dead_letter_reasons(settings, dlq_start, audit.high_watermarks(settings, settings.topic_dlq))
        c = report.consumed
        note["text"] = (f"{c['messages']:,} messages in {c['batches']} batches: {c['stored']:,} stored, "
                        f"{c['duplicates']:,} duplicates, {c['rejected']:,} to the DLQ")
    with steps.step("pipeline", f"Dagster daily assets and their checks for {days[0]} … {days[-1]}") as note:
        docs_dir.mkdir(parents=True, exist_ok=True)
        run_pipeline(days, docs_dir, options, console, report)
        report.data_docs = write_docs_index(report, docs_dir)
        note["text"] = f"{len(report.checks)} checks, {sum(c.passed for c in report.checks)} passed"
    with steps.step("read-back", "Read every tier back") as note:
        read_back(report, settings)
        note["text"] = "consistent" if report.ok else "INCONSISTENT (see below)"


# ---- printing ---------------------------------------------------------------------------------

def _fmt(value: Any) -> str:
    return escape(_text(value))


def _text(value: Any) -> str:
    if hasattr(value, "item") and not hasattr(value, "__len__"):
        value = value.item()
    if isinstance(value, pd.Timestamp | datetime):
        return f"{value:%m-%d %H:%M:%S}"
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:,.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    if hasattr(value, "__len__") and not isinstance(value, str):
        value = list(value)
        if len(value) > 6:
            return "[" + ", ".join(_text(v) for v in value[:3]) + f", … {len(value)} values]"
        return "[" + ", ".join(_text(v) for v in value) + "]"
    return str(value)


def _mark(ok: bool) -> str:
    return "[green]✓[/]" if ok else "[bold red]✗[/]"


def render(report: DemoReport, console: Console, settings: Settings | None = None) -> None:
    s = settings or get_settings()
    t = report.tiers
    console.rule("[bold]What landed where")
    tiers = Table("tier", "where", "events", "")
    tiers.add_row("generated", f"{report.scale} feed", _fmt(report.events), "")
    tiers.add_row("Kafka", f"topic {s.topic_activity}, this run",
                  _fmt(report.consumed.get("messages")), f"incl. {sum(report.bad_events_sent.values())} bad, "
                  f"{report.resent} re-sent")
    tiers.add_row("cold (landed)", report.lake_uris.get("landed events", ""), _fmt(t.landed_distinct),
                  f"{t.landed_rows:,} rows with re-sent duplicates")
    tiers.add_row("warm", f"Postgres {database_name(s)}.user_activity", _fmt(t.postgres_distinct),
                  f"{t.postgres_rows:,} rows")
    tiers.add_row("cold (archive)", report.lake_uris.get("daily archive", ""), _fmt(t.archive_rows),
                  f"days {report.days[0]} … {report.days[-1]}: Postgres has {t.postgres_archived:,}; "
                  "a day is archived once it is over")
    tiers.add_row("hot", "Redis user:* counters", _fmt(t.hot_events), f"{t.hot_users:,} users")
    console.print(tiers)
    console.print(f"{_mark(report.tiers_equal)} every tier holds each of the {report.events:,} generated events "
                  "once (the archive: those of the days that are over)", highlight=False, soft_wrap=True)
    online = Table("feature view", "entities in Redis", title="Feast online store (Redis)")
    for view, n in t.online_keys.items():
        online.add_row(view, f"{n:,}")
    console.print(online)

    console.rule("[bold]Dead-letter queue")
    dlq = Table("reason", "messages", title=f"topic {s.topic_dlq}, this run")
    for reason, n in sorted(report.dlq.items()):
        dlq.add_row(reason, str(n))
    console.print(dlq)
    console.print(f"{_mark(report.dlq_as_sent)} {sum(report.dlq.values())} dead letters, each with the reason it "
                  "was sent for", highlight=False)

    console.rule("[bold]Validation (Great Expectations, blocking Dagster checks)")
    checks = Table("asset", "check", *[d.isoformat() for d in report.days])
    by_key: dict[tuple[str, str], dict[str, CheckOutcome]] = {}
    for c in report.checks:
        by_key.setdefault((c.asset, c.check), {})[c.day] = c
    for (asset, check), per_day in by_key.items():
        cells = []
        for d in report.days:
            c = per_day.get(d.isoformat())
            cells.append("" if c is None else f"{'[green]pass[/]' if c.passed else '[red]FAIL[/]'}"
                         + (f" {c.rows:,}" if isinstance(c.rows, int) else ""))
        checks.add_row(asset, check, *cells)
    console.print(checks)
    if report.archive:
        console.print("archive reconciliation: " + "; ".join(
            f"{a['day']} {a['archive_rows']:,} rows = Postgres {a['postgres_rows']:,}"
            f"{'' if a['reconciled'] else ' [red]MISMATCH[/]'}" for a in report.archive), highlight=False)
    console.print(f"{_mark(report.checks_passed)} {sum(c.passed for c in report.checks)} of {len(report.checks)} "
                  "checks passed", highlight=False)
    if report.data_docs:
        console.print(f"Data Docs ({report.days[-1]}): {report.data_docs}", highlight=False, soft_wrap=True)

    console.rule(f"[bold]Serving: get_online_features for user {report.user_id}")
    feats = Table("feature", "value")
    for ref, value in report.user_features.items():
        feats.add_row(ref, _fmt(value))
    console.print(feats)
    if report.candidates is not None and len(report.candidates):
        cand = Table("rank", *report.candidates.columns, title="top candidates (user_candidates + item views)")
        for i, row in enumerate(report.candidates.itertuples(index=False), 1):
            cand.add_row(str(i), *[_fmt(v) for v in row])
        console.print(cand)
    if report.candidates_note:
        console.print(f"[yellow]note:[/] {escape(report.candidates_note)}", highlight=False, soft_wrap=True)
    agree = ", ".join(f"{c.view} {c.live}/{c.entities}" for c in report.online)
    console.print(f"{_mark(report.online_equal)} online values equal the materialised Parquet rows of "
                  f"{report.days[-1]}, and rows past their view's TTL are not served (live/compared: {agree})",
                  highlight=False, soft_wrap=True)
    for c in report.online:
        for entity, name, got, want in c.mismatches[:3]:
            console.print(f"  {c.view} {entity} {name}: online {_fmt(got)}, lake {_fmt(want)}", highlight=False)
        if not c.entities:
            console.print(f"  {c.view}: no rows to compare", highlight=False)

    console.rule("[bold]Training set (get_historical_features, point in time)")
    if report.training_counts is not None:
        bal = Table(*report.training_counts.columns, title="rows per day and label balance")
        for row in report.training_counts.itertuples(index=False):
            bal.add_row(*[_fmt(v) for v in row])
        console.print(bal)
    if report.training_sample is not None:
        cols = ["user_id", "item_id", "event_timestamp", "label", "sample_type", "interactions_7d", "like_rate_7d",
                "top_category_30d", "category", "views_7d", "engagement_rate_7d"]
        sample = report.training_sample[[c for c in cols if c in report.training_sample.columns]]
        tab = Table(*sample.columns, title="a sample of the newest day")
        for row in sample.itertuples(index=False):
            tab.add_row(*[_fmt(v) for v in row])
        console.print(tab)
    if report.pit is not None:
        p = report.pit
        console.print(f"{_mark(not p.mismatches)} {p.rows:,} training rows checked against a hand-made "
                      f"point-in-time join of the Parquet features ({p.values:,} values, {len(p.mismatches)} "
                      f"differ; {p.with_features:,} rows have features)", highlight=False, soft_wrap=True)

    console.rule("[bold]Where things are")
    for name, uri in report.lake_uris.items():
        console.print(f"{name:<14} {uri}", highlight=False, soft_wrap=True)
    console.print(f"{'step logs':<14} {report.log_dir}", highlight=False, soft_wrap=True)
    training = report.lake_uris.get("training sets", "").removeprefix("s3://")
    console.print("Read the lake:  .venv/bin/python -c \"import pyarrow.dataset as ds; from feedstore.s3 import "
                  f"arrow_fs; print(ds.dataset('{training}', filesystem=arrow_fs(), format='parquet', "
                  "partitioning='hive').to_table().num_rows)\"", highlight=False, soft_wrap=True)
    console.print("Dagster UI:     ./run dagster            → http://127.0.0.1:3000 (this run's assets are "
                  "in its catalog)", highlight=False, soft_wrap=True)
    console.print("Feature server: ./run serve --port 6566  (or stock Feast: ./run feast serve; "
                  "its UI: ./run feast ui)", highlight=False, soft_wrap=True)
    console.print("                curl -s -H 'Content-Type: application/json' localhost:6566/get-online-features "
                  "-d '{\"feature_service\": "
                  f"\"ranking\", \"entities\": {{\"user_id\": [{report.user_id}], \"item_id\": [1]}}}}'",
                  highlight=False, soft_wrap=True)
    console.rule(f"{_mark(report.ok)} [bold]{'demo complete' if report.ok else 'demo finished with inconsistencies'}")

