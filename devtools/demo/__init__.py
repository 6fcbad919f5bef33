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
from devtools.demo.render import render
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
