"""The ``feedstore`` command. Each command is a thin shell over a module; errors users can
fix are one line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import sys
import time
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.table import Table

from feedstore.settings import get_settings

# Plain help (click's layout): no rich markup to escape, and flags shown without a type.
PLAIN = {"rich_markup_mode": None, "no_args_is_help": True}
app = typer.Typer(
    help="feedstore: data collection and feature store for a feed ranker.",
    pretty_exceptions_enable=False,
    add_completion=True,
    **PLAIN,
)
stack_app = typer.Typer(help="Run the local stack: PostgreSQL, Redis, Kafka, SeaweedFS S3.", **PLAIN)
app.add_typer(stack_app, name="stack")
models_app = typer.Typer(help="Model checkpoints: register, list, show, download.", **PLAIN)
app.add_typer(models_app, name="models")
experiments_app = typer.Typer(help="Experiment results: log a run's metrics and artefacts.", **PLAIN)
app.add_typer(experiments_app, name="experiments")
dlq_app = typer.Typer(help="Dead letters: send them back through ingestion after a fix.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")
console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"feedstore {version('feedstore')} (feast {version('feast')}, dagster {version('dagster')})")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the versions of feedstore, Feast and Dagster, and exit."),
) -> None:
    """feedstore: data collection and feature store for a feed ranker."""


def _run_as(component: str) -> None:
    """This process (and what it starts) uses ``component``'s credentials from here on."""
    import os

    from feedstore.settings import reset_settings_cache

    os.environ["FEED_COMPONENT"] = component
    reset_settings_cache()


def fail(message: str, code: int = 2) -> NoReturn:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@stack_app.command("up")
def stack_up(
    monitoring: bool = typer.Option(False, "--monitoring", help="Also run Prometheus (alert rules of ops/prometheus) "
                                    "scraping ingest, serve and exporter at the ports of FEED_STACK_SCRAPE_*."),
    redis_cluster: bool = typer.Option(False, "--redis-cluster", help="Also run a Redis Cluster (three masters, a "
                                       "replica each) from FEED_STACK_REDIS_CLUSTER_PORT (7001)."),
) -> None:
    """Install what is missing and start every service; running ones are left alone."""
    from devtools.stack import StackError, services

    for service in services(get_settings(), monitoring, redis_cluster):
        started = time.monotonic()
        with console.status(f"starting {service.name}…"):
            try:
                was_started = service.up()
            except StackError as exc:
                fail(str(exc))
        what = "started" if was_started else "already running"
        console.print(f"[green]✓[/] {service.name:<10} {what} ({time.monotonic() - started:.1f}s)  {service.endpoint()}")


@stack_app.command("provision")
def stack_provision(
    only: list[str] = typer.Option([], "--only", help="Provision only this service (repeatable): docker compose "
                                   "grants SeaweedFS's identities from inside its network, where its master is."),
) -> None:
    """Create the database, topics and bucket, and grant the components' users and identities, on services that
    already run (docker compose's provision steps)."""
    from devtools.stack import StackError, services

    chosen = [s for s in services(get_settings()) if not only or s.name in only]
    unknown = set(only) - {s.name for s in chosen}
    if unknown:
        names = ", ".join(s.name for s in services(get_settings()))
        fail(f"no service {', '.join(sorted(unknown))}: choose from {names}")
    for service in chosen:
        if not service.ready():
            fail(f"{service.name} does not answer at {service.endpoint()}")
        try:
            service.provision()
        except StackError as exc:
            fail(str(exc))
        console.print(f"[green]✓[/] {service.name:<10} provisioned  {service.endpoint()}")


@stack_app.command("down")
def stack_down() -> None:
    """Stop every service; data stays in the stack directory for the next 'up'."""
    from devtools.stack import services

    for service in reversed(services(get_settings(), monitoring=True, redis_cluster=True)):
        service.stop()
        console.print(f"[yellow]■[/] {service.name} stopped")


@stack_app.command("status")
def stack_status() -> None:
    """Exit non-zero when any service is not answering."""
    from devtools.stack import monitoring_running, redis_cluster_running, services

    table = Table("service", "state", "endpoint", "log")
    for name in ("endpoint", "log"):  # folded onto more lines at a narrow width, never cut
        table.columns[2 if name == "endpoint" else 3].overflow = "fold"
    healthy = True
    settings = get_settings()
    for service in services(settings, monitoring_running(settings), redis_cluster_running(settings)):
        up = service.ready()
        healthy &= up
        table.add_row(service.name, "[green]up[/]" if up else "[red]down[/]", service.endpoint(), str(service.log_file))
    Console(width=None if sys.stdout.isatty() else 200).print(table)
    if not healthy:
        raise typer.Exit(1)


@stack_app.command("env")
def stack_env() -> None:
    """Print 'export' lines (endpoints, credentials, topics, consumer group): eval "$(feedstore stack env)"."""
    from devtools.stack import env_lines

    for line in env_lines(get_settings()):
        print(line)


@app.command()
def migrate() -> None:
    """Apply the schema in sql/ (idempotent, safe to run concurrently)."""
    import psycopg

    from feedstore.db import connect
    from feedstore.migrate import MigrationError
    from feedstore.migrate import migrate as run_migrations

    try:
        with connect() as conn:
            applied = run_migrations(conn)
    except (MigrationError, psycopg.OperationalError) as exc:
        fail(str(exc).strip().splitlines()[0])
    names = ", ".join(f"{m.version:03d}_{m.name}" for m in applied) or "nothing new"
    console.print(f"[green]✓[/] migrations applied: {names}")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def dagster(ctx: typer.Context) -> None:
    """Run 'dagster dev' on the daily pipeline, with DAGSTER_HOME prepared (extra args pass through).

    SIGTERM or Ctrl-C stops it within FEED_PIPELINE_SHUTDOWN_GRACE_SECONDS (default 10)."""
    from orchestration.instance import dagster_env, prepare_home, supervise

    _run_as("pipeline")
    home = prepare_home()
    console.print(f"DAGSTER_HOME={home}")
    try:
        code = supervise(["dev", "-m", "orchestration.definitions", *ctx.args], dagster_env(home),
                         get_settings().pipeline.shutdown_grace_seconds)
    except FileNotFoundError as exc:
        fail(str(exc))
    raise typer.Exit(code)


def _become(program: str, args: list[str], env: dict[str, str]) -> NoReturn:
    """Replace this process with ``program`` of this environment (found beside the interpreter,
    whether or not ``.venv/bin`` is on PATH), with ``env`` added to the environment."""
    import os

    from devtools.stack import StackError
    from devtools.stack.tools import venv_program

    try:
        exe = venv_program(program)
    except StackError as exc:
        fail(str(exc))
    os.environ.update(env)
    os.execv(exe, [exe, *args])


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []})
def feast(ctx: typer.Context) -> None:
    """The 'feast' CLI on feature_repo/ with the endpoints of these settings (every argument passes through)."""
    _run_as("pipeline")
    settings = get_settings()
    args = list(ctx.args)
    if not {"-c", "--chdir", "-f", "--feature-store-yaml"} & {a.split("=", 1)[0] for a in args}:
        args = ["-c", str(settings.feast.repo_path), *args]
    _become("feast", args, settings.feast_env())


@app.command()
def validate(
    suite: str = typer.Argument(..., help="activity_events, items, users, user_features, item_features, training_dataset"),
    target: str = typer.Argument(..., help="postgres:TABLE, s3://bucket/prefix, or a local Parquet file/directory"),
    param: list[str] = typer.Option([], "--param", "-p", help="suite parameter KEY=VALUE (repeatable)"),
    docs: str | None = typer.Option(None, help="write Data Docs (static HTML) to this directory"),
    docs_s3: str | None = typer.Option(None, help="upload Data Docs under this key prefix of the bucket"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON on stdout"),
    engine: str | None = typer.Option(None, help="gx (GX on pandas/Postgres) or duckdb (training_dataset as SQL "
                                                 "over Parquet); default: FEED_PIPELINE_CHECKS_ENGINE for "
                                                 "training_dataset without --docs, else gx"),
) -> None:
    """Validate TARGET against a Great Expectations SUITE; exit 1 when it fails."""
    import json

    params: dict[str, str] = {}
    for item in param:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--param wants KEY=VALUE, got {item!r}")
        params[key.strip()] = value.strip()

    from expectations.runner import ValidationError
    from expectations.runner import validate as run

    _run_as("pipeline" if docs_s3 else "reader")  # uploading Data Docs is a write
    try:
        summary = run(suite, target, docs_dir=docs, docs_s3_prefix=docs_s3, engine=engine, **params)
    except ValidationError as exc:
        fail(str(exc))
    if as_json:
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        table = Table()
        for name in ("rule", "column", "unexpected", "examples"):
            table.add_column(name, overflow="fold")
        for f in summary.failures:
            count = f.unexpected_count if f.unexpected_count is not None else f.observed
            table.add_row(f.rule, f.column or "", str(count), str(f.examples or f.error or ""))
        if summary.failures:
            Console().print(table)
        state = "[green]passed[/]" if summary.success else "[red]FAILED[/]"
        console.print(f"{suite} on {summary.target}: {state} ({summary.row_count} rows, {summary.evaluated} "
                      f"expectations, {len(summary.failures)} failed, {summary.seconds:.1f}s)")
        if summary.docs:
            console.print(f"Data Docs: {summary.docs}")
    if not summary.success:
        raise typer.Exit(1)


class LogLevel(str, Enum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


LOG_LEVEL = typer.Option(LogLevel.INFO, "--log-level", case_sensitive=False,
                         help="Least severe log level written (JSON lines on stderr when not a terminal).")
class Source(str, Enum):
    activity = "activity"
    items = "items"
    users = "users"


@app.command()
def ingest(
    metrics_port: int = typer.Option(0, help="Serve Prometheus metrics on this port (0: off)."),
    until_idle: float = typer.Option(None, help="Exit once the topic has been drained for this many seconds."),
    replay: bool = typer.Option(False, "--replay", help="Backfill: lift the event-age bound."),
    instance_id: str = typer.Option(None, help="Static group membership id (fast restarts, no rebalance)."),
    feast_push: bool = typer.Option(None, "--feast-push/--no-feast-push", show_default=False,
                                    help="Push the realtime user features to Feast's online store with every batch "
                                    "(default: FEED_INGEST_FEAST_PUSH, off). Without it the 'ranking' service "
                                    "serves them as missing once their TTL passes."),
    log_level: LogLevel = LOG_LEVEL,
    source: list[Source] = typer.Option(
        None, "--source", help="Consume only these topics (repeat the option): activity (user-activity and its "
        "retry topic), items (item-catalog), users (user-profiles); default FEED_INGEST_SOURCES (all three), one "
        "consumer each in this process. Run one process per --source to give each its own."),
) -> None:
    """Consume user-activity, item-catalog and user-profiles; invalid messages go to the DLQ."""
    if metrics_port < 0 or metrics_port > 65535:
        fail(f"--metrics-port must be 0..65535, not {metrics_port}")
    if until_idle is not None and until_idle <= 0:
        fail(f"--until-idle must be positive, not {until_idle}")
    from feedstore.logs import configure_logging
    from ingestion.consumer import IngestConsumer, KafkaUnreachable, Options
    from ingestion.metrics import IngestMetrics
    from ingestion.sinks import PermanentSinkError

    configure_logging(log_level.value)
    _run_as("ingest")
    settings = get_settings()
    if feast_push is not None:
        settings = settings.replace(ingest={"feast_push": feast_push})
    metrics = IngestMetrics()
    if metrics_port:
        try:
            metrics.serve(metrics_port)
        except OSError as exc:
            fail(f"cannot serve metrics on port {metrics_port}: {exc.strerror}")
    options = Options(until_idle=until_idle, replay=replay, instance_id=instance_id)
    if source:
        sources = list(dict.fromkeys(source))
    else:
        try:
            sources = list(dict.fromkeys(Source(n.strip()) for n in settings.ingest.sources.split(",") if n.strip()))
        except ValueError:
            fail(f"FEED_INGEST_SOURCES={settings.ingest.sources!r}: use activity, items, users")
    if sources == [Source.activity] and settings.ingest.unknown_grace_seconds <= 0:
        try:
            IngestConsumer(settings, options, metrics).run()
        except (PermanentSinkError, KafkaUnreachable):
            raise typer.Exit(1) from None  # the consumer has logged why (ingest_failed, ingest_gave_up)
        return
    from ingestion.catalog_stream import run_together

    if not run_together(settings, [s.value for s in sources], options, metrics):
        raise typer.Exit(1)


class LoadKind(str, Enum):
    users = "users"
    items = "items"


@app.command()
def load(
    kind: LoadKind = typer.Argument(..., help="What the files hold: users or items (the seed's shapes)."),
    files: list[Path] = typer.Argument(..., help="JSON lines (.jsonl/.ndjson/.json), Parquet or CSV files."),
    rejects: Path = typer.Option(None, help="Where refused rows go, with reasons (default ./rejects-<kind>.jsonl)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
) -> None:
    """Bulk import users or items through the stream's validation and upsert (safe to run twice);
    exits 1 when any row was refused."""
    import json

    import psycopg

    from ingestion.load import LoadError
    from ingestion.load import load as run_load

    _run_as("ingest")
    rejects = rejects or Path(f"rejects-{kind.value}.jsonl")
    progress = _rich_progress()
    tasks: dict[str, int] = {}

    def advance(name: str, done: int, total: int) -> None:
        if name not in tasks:
            tasks[name] = progress.add_task(Path(name).name[:24], total=total)
        progress.update(tasks[name], completed=done)

    try:
        with progress:
            summary = run_load(kind.value, files, rejects, progress=advance)
    except LoadError as exc:
        fail(str(exc))
    except psycopg.OperationalError as exc:
        fail(f"postgres: {str(exc).strip().splitlines()[0]}")
    result = summary.as_dict()
    if as_json:
        print(json.dumps(result))
    else:
        table = Table("files", "rows", "inserted", "updated", "unchanged", "stale", "rejected")
        table.add_row(*(str(result[k]) for k in ("files", "rows", "inserted", "updated", "unchanged", "stale",
                                                 "rejected")))
        Console().print(table)
        if summary.rejected:
            reasons = ", ".join(f"{k} {v}" for k, v in result["reasons"].items())
            console.print(f"[yellow]{summary.rejected} rejected[/] ({reasons}): {rejects}")
    if summary.rejected:
        raise typer.Exit(1)


def _parse_since(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        since = datetime.fromisoformat(text)
    except ValueError:
        fail(f"--since {text!r} is not an ISO-8601 time (e.g. 2026-11-30T12:00:00Z)")
    return since if since.tzinfo else since.replace(tzinfo=timezone.utc)


@dlq_app.command("replay")
def dlq_replay(
    reason: str = typer.Option(None, help="Only letters with this reason (e.g. unknown_item, bad_vocabulary)."),
    since: str = typer.Option(None, help="Only letters dead-lettered at or after this time (ISO-8601)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
) -> None:
    """Send dead letters back to the topic they came from, each once (replayed letters are recorded in
    Postgres); the consumer validates them again."""
    import json

    import psycopg

    from feedstore.contract.rules import DLQ_REASONS
    from ingestion.replay import ReplayError, replay

    if reason is not None and reason not in {str(r) for r in DLQ_REASONS}:
        fail(f"--reason {reason!r} is not a DLQ reason ({', '.join(str(r) for r in DLQ_REASONS)})")
    _run_as("ingest")
    try:
        with console.status("replaying dead letters…"):
            summary = replay(get_settings(), reason=reason, since=_parse_since(since))
    except ReplayError as exc:
        fail(str(exc), code=1)
    except psycopg.OperationalError as exc:
        fail(f"postgres: {str(exc).strip().splitlines()[0]}")
    result = summary.as_dict()
    if as_json:
        print(json.dumps(result))
    else:
        console.print(f"replayed {summary.replayed} of {summary.scanned} dead letters "
                      f"(already replayed {summary.already}, other reasons {summary.other_reason}, "
                      f"truncated {summary.truncated}, unknown source {summary.unknown_source}) {summary.by_topic}")


class ScaleName(str, Enum):
    tiny = "tiny"
    small = "small"
    seed = "seed"


@app.command()
def demo(
    scale: ScaleName = typer.Option(ScaleName.small, help="Feed size: tiny (seconds), small (a minute or two)."),
    seed: int = typer.Option(0, min=0, help="Generator seed."),
    no_bad_events: bool = typer.Option(False, "--no-bad-events", help="Send only valid events (empty DLQ)."),
    allow_remote: bool = typer.Option(False, "--allow-remote", help="Run even when FEED_* point off this machine "
                                      "(the demo replaces the data of its namespace)."),
) -> None:
    """The main job end to end: stack, feed into Kafka, consumer, daily Dagster assets, then every tier read back."""
    from devtools.demo import DemoOptions, StepFailed, render, run
    from orchestration.instance import dagster_home

    options = DemoOptions(scale=scale.value, seed=seed, defects=not no_bad_events, allow_remote=allow_remote,
                          dagster_home=dagster_home())
    out = Console(width=None if sys.stdout.isatty() else 120)
    try:
        report = run(options, console=out)
    except StepFailed as exc:
        fail(str(exc), code=1)
    render(report, out)
    if not report.ok:
        raise typer.Exit(1)


class EventsTo(str, Enum):
    kafka = "kafka"
    file = "file"
    none = "none"


def _parse_end(text: str | None) -> datetime | None:
    """ISO-8601; a naive time is taken as UTC."""
    if text is None:
        return None
    try:
        end = datetime.fromisoformat(text)
    except ValueError:
        fail(f"--end {text!r} is not an ISO-8601 time (e.g. 2025-11-16T00:00:00Z)")
    return end if end.tzinfo else end.replace(tzinfo=timezone.utc)


def _rich_progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description:<8}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=False)


@app.command()
def generate(
    scale: ScaleName = typer.Option(ScaleName.small, help="tiny (tests), small (demo) or seed (100K users, 10M items)."),
    seed: int = typer.Option(0, min=0, help="Same seed, end and days: same data."),
    days: int | None = typer.Option(None, min=1, help="Days of events, ending at --end (default: the scale's)."),
    end: str | None = typer.Option(None, help="Exclusive end of the event window, ISO-8601 (default: this UTC hour)."),
    events_to: EventsTo = typer.Option(EventsTo.kafka, "--events-to", help="Send events to Kafka, a file, or nowhere."),
    file: Path | None = typer.Option(None, "--file", help="JSON-lines output for --events-to file."),
) -> None:
    """Load synthetic users and items into Postgres and S3 (replacing them), then emit events."""
    import psycopg

    from devtools.synthetic.generator import spec_for
    from devtools.synthetic.seeding import RichProgress, SeedingError
    from devtools.synthetic.seeding import generate as run
    from ingestion.producer import ProducerError

    if events_to is EventsTo.file and file is None:
        fail("--events-to file needs --file PATH")
    try:
        spec = spec_for(scale.value, seed=seed, end=_parse_end(end), days=days)
    except ValueError as exc:
        fail(str(exc))

    started = time.monotonic()
    try:
        with _rich_progress() as progress:
            report = run(spec, events_to=events_to.value, path=file, progress=RichProgress(progress))
    except (SeedingError, ProducerError, ValueError, OSError, psycopg.Error) as exc:
        fail(str(exc).strip().splitlines()[0])
    elapsed = time.monotonic() - started
    table = Table("table", "rows", title=f"generate {scale.value} seed={seed}")
    for name, rows in report.rows.items():
        table.add_row(name, f"{rows:,}")
    Console().print(table)
    console.print(f"[green]✓[/] {elapsed:.1f}s, events {spec.start:%Y-%m-%dT%H:%MZ} → {spec.end:%Y-%m-%dT%H:%MZ}: Postgres {report.postgres_bytes / 1e6:.1f} MB, "
                  f"S3 {report.s3_bytes / 1e6:.1f} MB in {len(report.s3_keys)} objects, "
                  f"events {report.event_bytes / 1e6:.1f} MB → {events_to.value}"
                  + (f" {file}" if events_to is EventsTo.file else ""))


@app.command()
def produce(
    file: Path = typer.Option(..., "--file", help="JSON-lines file; each line is sent unchanged."),
    topic: str | None = typer.Option(None, help="Topic (default: the activity topic)."),
) -> None:
    """Send each line of a file to Kafka as it is (malformed lines too), keyed by user_id when it has one."""
    from ingestion.producer import ProducerError, produce_file

    if not file.is_file():
        fail(f"{file}: no such file")
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeElapsedColumn

    try:
        with Progress("produce", BarColumn(), DownloadColumn(), TimeElapsedColumn(), console=console) as progress:
            task = progress.add_task("produce", total=file.stat().st_size)
            report = produce_file(file, topic, on_bytes=lambda n: progress.advance(task, n))
    except (ProducerError, OSError) as exc:
        fail(str(exc).strip().splitlines()[0])
    print(f"sent {report.sent} delivered {report.delivered} failed {report.failed} "
          f"(keyed {report.keyed}, unkeyed {report.sent - report.keyed}, {report.bytes} bytes)")
    if not report.ok:
        fail(f"{report.failed} messages not delivered: {dict(report.errors)}", code=1)


@app.command()
def freshness(
    metrics_port: int = typer.Option(0, help="Keep serving the figures as Prometheus metrics on this port (0: print once)."),
) -> None:
    """Per feature view: TTL, refresh, the oldest a served value may get, and the age of the newest online value."""
    import redis

    from feedstore.feast import freshness as fresh
    from feedstore.feast.store import store
    from feedstore.redis_client import connect

    if metrics_port < 0 or metrics_port > 65535:
        fail(f"--metrics-port must be 0..65535, not {metrics_port}")
    _run_as("reader")  # it only reads the online store and Feast's registry
    settings = get_settings()
    client = connect(settings, socket_timeout=5, socket_connect_timeout=3)
    project = store(settings).project
    try:
        rows = fresh.freshness(client, project)
    except redis.RedisError as exc:
        fail(f"cannot read the online store at {settings.redis.url}: {exc}")
    at = fresh.now()
    table = Table("view", "TTL", "refresh", "allowed age", "newest online value", "status")
    for f in rows:
        age = f.age(at)
        table.add_row(f.view, fresh.hours(f.ttl), f.refresh, fresh.hours(f.allowed),
                      "-" if age is None else f"{fresh.hours(age)} old", f.status(at))
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    if metrics_port:
        from prometheus_client import CollectorRegistry, start_http_server

        registry = CollectorRegistry()
        registry.register(fresh.FreshnessCollector(client, project))
        try:
            start_http_server(metrics_port, registry=registry)
        except OSError as exc:
            fail(f"cannot serve metrics on port {metrics_port}: {exc.strerror}")
        console.print(f"metrics on http://127.0.0.1:{metrics_port}/metrics")
        while True:
            time.sleep(3600)


def _serve_workers(option: int | None) -> int:
    """``--workers``, else ``FEED_SERVE_WORKERS``; below 1, from either, is a one-line error."""
    if option is not None:
        if option < 1:
            fail(f"--workers must be at least 1, got {option}")
        return option
    import pydantic

    from feedstore.settings import get_settings

    try:
        return get_settings().serve.workers
    except pydantic.ValidationError as exc:
        fail("invalid settings: " + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(6566, help="Port (feast serve's default); Prometheus metrics on GET /metrics."),
    workers: int | None = typer.Option(None, "--workers", help="Processes sharing the port, each warmed up and GC "
                                       "tuned, never recycled; /metrics sums them. Default FEED_SERVE_WORKERS (1)."),
    log_level: LogLevel = LOG_LEVEL,
) -> None:
    """Feast's HTTP feature server (same API as 'feast serve'), with Prometheus metrics."""
    if not 0 < port < 65536:
        fail(f"--port must be between 1 and 65535, got {port}")
    workers = _serve_workers(workers)
    from feedstore.feast.serving import run
    from feedstore.logs import configure_logging

    configure_logging(log_level.value)
    try:
        code = run(host, port, log_level=log_level.value, workers=workers)
    except OSError as exc:
        fail(f"cannot serve on {host}:{port}: {exc.strerror or exc}")
    if code:
        raise typer.Exit(code)


@app.command()
def exporter(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(9109, help="Port of GET /metrics."),
    log_level: LogLevel = LOG_LEVEL,
) -> None:
    """Serve the daily pipeline's Prometheus metrics (Dagster's runs and checks, online freshness per view)."""
    if not 0 < port < 65536:
        fail(f"--port must be between 1 and 65535, got {port}")
    import os
    import signal
    import threading

    from feedstore.logs import configure_logging
    from orchestration.instance import dagster_env, prepare_home
    from orchestration.metrics import serve as serve_metrics

    configure_logging(log_level.value)
    _run_as("reader")  # it only reads Dagster's instance, Feast's registry and the online store
    os.environ.update(dagster_env(prepare_home()))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve_metrics(port, host, stop.is_set)
    except OSError as exc:
        fail(f"cannot serve on {host}:{port}: {exc.strerror or exc}")


def _json_option(text: str | None, what: str) -> dict:
    """A JSON object given inline or as the path of a file holding one."""
    import json

    if not text:
        return {}
    try:
        value = json.loads(Path(text).read_text() if not text.lstrip().startswith("{") else text)
    except (OSError, ValueError) as exc:
        fail(f"{what} wants a JSON object or a file holding one: {exc}")
    if not isinstance(value, dict):
        fail(f"{what} wants a JSON object, got {type(value).__name__}")
    return value


def _print_models(records, as_json: bool) -> None:
    import json

    if as_json:
        print(json.dumps([r.to_dict() for r in records], indent=2))
        return
    table = Table("model", "version", "training set", "metrics", "files", "checkpoint", "registered")
    for r in records:
        table.add_row(r.model_name, r.version, r.training_dataset or "", json.dumps(r.metrics), str(len(r.files)),
                      r.checkpoint_uri, r.created_at or "")
    Console().print(table)


@models_app.command("register")
def models_register(
    name: str = typer.Option(..., help="Model name."),
    version: str = typer.Option(..., help="Version; an existing one is refused unless --overwrite."),
    checkpoint: Path = typer.Option(..., help="A checkpoint file or directory."),
    metrics: str | None = typer.Option(None, help="JSON object, or a file holding one."),
    params: str | None = typer.Option(None, help="JSON object, or a file holding one."),
    training_dataset: str | None = typer.Option(None, help="The training set it was trained on: NAME/YYYY-MM-DD."),
    experiment: str | None = typer.Option(None, help="Also log the metrics as a run of this experiment."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a version that is registered already."),
    as_json: bool = typer.Option(False, "--json", help="Print the record as JSON."),
) -> None:
    """Upload a checkpoint to s3://…/models/NAME/VERSION/ and record it in model_metadata."""
    _run_as("pipeline")
    from feedstore.models import ModelRegistryError, register_model

    try:
        record = register_model(name, version, checkpoint, metrics=_json_option(metrics, "--metrics"),
                                params=_json_option(params, "--params"), training_dataset=training_dataset,
                                experiment=experiment, overwrite=overwrite)
    except ModelRegistryError as exc:
        fail(str(exc))
    _print_models([record], as_json)


@models_app.command("list")
def models_list(
    name: str | None = typer.Option(None, help="Only this model."),
    training_dataset: str | None = typer.Option(None, help="Only models trained on NAME/YYYY-MM-DD."),
    as_json: bool = typer.Option(False, "--json", help="JSON instead of a table."),
) -> None:
    """Registered model versions, newest first."""
    _run_as("pipeline")
    from feedstore.models import list_models

    _print_models(list_models(name, training_dataset), as_json)


@models_app.command("show")
def models_show(name: str, version: str,
                as_json: bool = typer.Option(False, "--json", help="JSON instead of a table.")) -> None:
    """One version: metrics, parameters, training set, files with their SHA-256."""
    _run_as("pipeline")
    from feedstore.models import ModelRegistryError, get_model

    try:
        record = get_model(name, version)
    except ModelRegistryError as exc:
        fail(str(exc))
    _print_models([record], as_json)
    if not as_json:
        for file, digest in sorted(record.files.items()):
            print(f"{digest}  {file}")


@models_app.command("download")
def models_download(name: str, version: str, dest: Path) -> None:
    """Every file of the version into DEST, each checked against its registered SHA-256."""
    _run_as("pipeline")
    from feedstore.models import ChecksumMismatch, ModelRegistryError, download_checkpoint

    try:
        download_checkpoint(name, version, dest)
    except (ModelRegistryError, ChecksumMismatch) as exc:
        fail(str(exc), code=1 if isinstance(exc, ChecksumMismatch) else 2)
    console.print(f"[green]✓[/] {name} {version} in {dest}, checksums verified")


@experiments_app.command("log")
def experiments_log(
    experiment: str = typer.Argument(..., help="Experiment name."),
    run: str = typer.Argument(..., help="Run name, unique within the experiment."),
    metrics: str = typer.Option(..., help="JSON object, or a file holding one."),
    params: str | None = typer.Option(None, help="JSON object, or a file holding one."),
    artefact: list[Path] = typer.Option([], help="A file or directory stored beside the results (repeatable)."),
) -> None:
    """Write the run's results.json (and artefacts) under s3://…/experiments/EXPERIMENT/RUN/."""
    _run_as("pipeline")
    from feedstore.models import ModelRegistryError, log_experiment

    try:
        uri = log_experiment(experiment, run, _json_option(metrics, "--metrics"),
                             params=_json_option(params, "--params"), artefacts=list(artefact))
    except ModelRegistryError as exc:
        fail(str(exc))
    print(uri)


def main() -> None:
    app(prog_name="feedstore")


if __name__ == "__main__":
    sys.exit(main())
