"""The demo as an ordered list of steps over one shared state: each step is a job from its own
module plus the few lines that put its result into the report and its one-line note. (Not
``run.py``: the package re-exports ``run``, and that name would hide a submodule of the same name.)"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from devtools.demo import audit
from devtools.demo.feed import generate_feed, ingest, send_bad_events
from devtools.demo.pipeline import generated_days, run_pipeline, write_docs_index
from devtools.demo.prepare import apply_feast, clear_previous, database_name, require_local, start_stack
from devtools.demo.readback import read_back
from devtools.demo.report import DemoOptions, DemoReport
from devtools.demo.steps import LogSink, Steps, routed_output
from feedstore.contract.rules import Reason
from feedstore.settings import Settings, get_settings

if TYPE_CHECKING:
    from devtools.synthetic.generator import GenerationSpec


def demo_spec(options: DemoOptions, now: datetime) -> GenerationSpec:
    """The feed up to this minute, not the hour as the generator's default: the realtime view is
    then live for the users active in its last hour whatever minute the demo runs at."""
    from devtools.synthetic.generator import spec_for

    return spec_for(options.scale, seed=options.seed, end=now.replace(second=0, microsecond=0))


def run(options: DemoOptions | None = None, console: Console | None = None,
        settings: Settings | None = None) -> DemoReport:
    """The whole demo; raises ``StepFailed`` (with the step's log) when a step fails."""
    options = options or DemoOptions()
    settings = settings or get_settings()
    console = console or Console(file=sys.stdout)
    log_dir = Path(options.log_dir or settings.stack.dir / "demo").resolve()
    log_dir.mkdir(parents=True, exist_ok=True)
    spec = demo_spec(options, datetime.now(timezone.utc))
    report = DemoReport(options.scale, (spec.start, spec.end), generated_days(spec), log_dir=log_dir)
    demo = _Demo(spec, options, settings, console, report, log_dir / "data_docs")
    console.print(f"[bold]feedstore demo[/] — {options.scale} feed, events {spec.start:%Y-%m-%d %H:%M} → "
                  f"{spec.end:%Y-%m-%d %H:%M} UTC ({len(report.days)} daily partitions); step logs in {log_dir}",
                  highlight=False, soft_wrap=True)
    sink = LogSink(sys.__stderr__)
    with routed_output(sink):
        _run_steps(Steps(console, log_dir, sink), demo)
    return report


@dataclass
class _Demo:
    """What the steps share: they read the run's inputs and fill in its report."""
    spec: GenerationSpec
    options: DemoOptions
    settings: Settings
    console: Console
    report: DemoReport
    docs_dir: Path


@dataclass(frozen=True)
class _Step:
    name: str                          # of its log file, NN-name.log
    title: Callable[[_Demo], str]      # a function, as it names things only known at run time
    body: Callable[[_Demo], str]       # returns the note printed beside the step's ✓
    wanted: Callable[[_Demo], bool] = lambda demo: True


def _run_steps(steps: Steps, demo: _Demo) -> None:
    for step in STEPS:
        if step.wanted(demo):
            with steps.step(step.name, step.title(demo)) as note:
                note["text"] = step.body(demo)


# ---- the steps' bodies ------------------------------------------------------------------------

def _reset(demo: _Demo) -> str:
    if not demo.options.allow_remote:
        require_local(demo.settings)
    return clear_previous(demo.settings)


def _generate(demo: _Demo) -> str:
    report = demo.report
    report.generated = generate_feed(demo.spec, demo.settings, demo.console)
    report.sent_to_kafka = report.generated["events"]
    return ", ".join(f"{k} {v:,}" for k, v in report.generated.items())


def _bad_events(demo: _Demo) -> str:
    report = demo.report
    sent = send_bad_events(demo.spec, demo.settings)
    report.resent = sent.pop(Reason.DUPLICATE, 0)
    report.bad_events_sent = sent
    report.sent_to_kafka += sum(sent.values()) + report.resent
    return f"{sum(sent.values())} bad events of {len(sent)} kinds, {report.resent} re-sent duplicates"


def _ingest(demo: _Demo) -> str:
    """The DLQ's offsets before and after, so that only this run's dead letters are counted."""
    report, settings = demo.report, demo.settings
    dlq_start = audit.high_watermarks(settings, settings.kafka.topic_dlq)
    report.consumed = ingest(settings, report.sent_to_kafka, demo.options, demo.console)
    report.dlq = audit.dead_letter_reasons(settings, dlq_start, audit.high_watermarks(settings, settings.kafka.topic_dlq))
    c = report.consumed
    return (f"{c['messages']:,} messages in {c['batches']} batches: {c['stored']:,} stored, "
            f"{c['duplicates']:,} duplicates, {c['rejected']:,} to the DLQ")


def _pipeline(demo: _Demo) -> str:
    report = demo.report
    demo.docs_dir.mkdir(parents=True, exist_ok=True)
    run_pipeline(report.days, demo.docs_dir, demo.options, demo.console, report)
    report.data_docs = write_docs_index(report, demo.docs_dir)
    return f"{len(report.checks)} checks, {sum(c.passed for c in report.checks)} passed"


def _read_back(demo: _Demo) -> str:
    read_back(demo.report, demo.settings)
    return "consistent" if demo.report.ok else "INCONSISTENT (see below)"


def _no_secret(url: str) -> str:
    """The URL to print: no password, no query."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts._replace(netloc=f"{parts.hostname}:{parts.port}", query="").geturl()


STEPS: list[_Step] = [
    _Step("stack", lambda demo: "Local stack and schema", lambda demo: start_stack(demo.settings)),
    _Step("reset", lambda demo: f"Clear the previous demo's data (database {database_name(demo.settings)}, "
                                f"bucket {demo.settings.s3.bucket}, Redis {_no_secret(demo.settings.redis.url)})", _reset),
    _Step("feast-apply", lambda demo: "feast apply (feature_repo/ into the SQL registry)",
          lambda demo: apply_feast(demo.settings)),
    _Step("generate", lambda demo: f"Generate the {demo.options.scale} feed: users and items into Postgres and S3, "
                                   f"events into Kafka {demo.settings.kafka.topic_activity}", _generate),
    _Step("bad-events", lambda demo: "Send malformed, invalid and duplicate events too", _bad_events,
          wanted=lambda demo: demo.options.defects),
    _Step("ingest", lambda demo: "Consume into Postgres, S3 Parquet, Redis and Feast (replay mode) until drained",
          _ingest),
    _Step("pipeline", lambda demo: f"Dagster daily assets and their checks for {demo.report.days[0]} … "
                                   f"{demo.report.days[-1]}", _pipeline),
    _Step("read-back", lambda demo: "Read every tier back", _read_back),
]
